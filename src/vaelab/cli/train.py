"""``vaelab train``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ..config import ARCHS, LIKELIHOODS, OBJECTIVES
from ..errors import VaelabError
from ._common import (
    SOURCE_HELP,
    add_command,
    add_data_flags,
    add_device_flag,
    data_options,
    int_list,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE on SOURCE and write config.json, model.safetensors, metrics.jsonl,
    samples.png and reconstructions.png into RUN_DIR."""
    import torch

    from ..config import TrainConfig, VAEConfig, to_dict
    from ..data import canonical_source, check_likelihood_range, load_dataset
    from ..device import resolve_device
    from ..engine import resolve_mode
    from ..figures import recon_grid, save_grid
    from ..io import CONFIG_FILE, atomic_write_json, run_config
    from ..model import VAE
    from ..train import train

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise VaelabError(f"--out '{out}' is not empty; pass --force to overwrite the run in it")
    tcfg = TrainConfig(
        data=canonical_source(args.data),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        beta=args.beta,
        kl_warmup=args.kl_warmup,
        free_bits=args.free_bits,
        objective=args.objective,
        k=args.k,
        precision=args.precision,
        compile=args.compile,
        threads=args.threads,
    )
    device = resolve_device(args.device)
    resolve_mode(tcfg.compile, device)  # e.g. cuda-graph without CUDA: fail before writing anything
    data = load_dataset(tcfg.data, likelihood=args.likelihood, **data_options(args))
    tcfg.data_options = dict(data.meta.get("options", {}))  # as applied, so evaluate sees the same data
    check_likelihood_range(data, args.likelihood)
    mcfg = VAEConfig(
        input_shape=data.shape,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        likelihood=args.likelihood,
        arch=args.arch,
        channels=args.channels,
        gated=args.gated,
        n_classes=_n_classes(data) if args.conditional else 0,
    )
    torch.manual_seed(tcfg.seed)
    model = VAE(mcfg).to(device)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, run_config(mcfg, {"train": to_dict(tcfg)}))
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training on '{data.name}' ({len(data.train)} train / {len(data.test)} "
        f"{data.test_split}, shape {data.shape}) on {device}, {n_params:,} parameters"
    )

    def on_epoch(rec: dict[str, Any]) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(
            f"epoch {rec['epoch']:>4}/{tcfg.epochs}  train -ELBO {rec['train_neg_elbo']:8.3f}  "
            f"test -ELBO {rec['test_neg_elbo']:8.3f} (recon {rec['recon']:.3f} + KL "
            f"{rec['kl']:.3f}){_objective_note(rec)}  active units {rec['active_units']}/{mcfg.latent_dim}  "
            f"{rec['seconds']:.2f}s",
            flush=True,
        )

    with warnings.catch_warnings():  # a warning (e.g. posterior collapse) is one line, not a source dump
        warnings.showwarning = lambda msg, *_a, **_k: print(f"warning: {msg}", file=sys.stderr, flush=True)
        train(model, data, tcfg, on_epoch=on_epoch, progress=args.progress)
    model.save(out, {"train": to_dict(tcfg)})
    gen = torch.Generator(device=device).manual_seed(tcfg.seed)
    # A CVAE's sample grid has one row per class.
    y = torch.arange(mcfg.n_classes, device=device).repeat_interleave(8) if mcfg.n_classes else None
    save_grid(model.sample(64 if y is None else len(y), generator=gen, y=y), out / "samples.png", nrow=8)
    x = data.test.batch(slice(0, 32)).to(device)
    y = None if data.test.y is None else data.test.y[:32].to(device)
    save_grid(recon_grid(x, model.reconstruct(x, y)), out / "reconstructions.png", nrow=8)
    print(f"done: model in {out}/, pictures {out}/samples.png and {out}/reconstructions.png")
    return 0


def register(sub) -> None:
    p = add_command(sub, "train", cmd_train)
    p.add_argument("--data", required=True, help=SOURCE_HELP)
    p.add_argument("--out", required=True, help="RUN_DIR to create")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--latent-dim", type=positive_int, default=20)
    p.add_argument("--hidden", type=int_list, default=(400,), help="widths, e.g. 400,400")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    _register_family_flags(p)
    p.add_argument("--seed", type=nonneg_int, default=0)
    add_device_flag(p)
    add_data_flags(p)
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: autocast the matrix products (the loss stays fp32); fastest on CPUs with AMX and on GPUs",
    )
    p.add_argument(
        "--compile",
        choices=["auto", "off", "cuda-graph", "inductor"],
        default="auto",
        help="how the step runs: auto = a CUDA graph on CUDA, eager elsewhere; inductor = torch.compile",
    )
    p.add_argument("--threads", type=nonneg_int, default=0, help="CPU threads (default 0: auto)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty RUN_DIR")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )


def _register_family_flags(p: argparse.ArgumentParser) -> None:
    """Architecture and objective flags (see README, "Model family")."""
    p.add_argument("--arch", choices=ARCHS, default="mlp", help="conv: H, W divisible by 2^stages (4)")
    p.add_argument("--channels", type=int_list, default=(32, 64), help="conv: stride-2 stage widths")
    p.add_argument("--gated", action="store_true", help="gated hidden layers, h = a * sigmoid(g)")
    p.add_argument("--conditional", action="store_true", help="a CVAE on the data's labels")
    p.add_argument("--beta", type=positive_float, default=1.0, help="KL weight in the loss (beta-VAE)")
    p.add_argument("--kl-warmup", type=nonneg_int, default=0, metavar="EPOCHS", help="linear KL warm-up")
    p.add_argument("--free-bits", type=nonneg_float, default=0.0, metavar="F", help="per-dim KL floor, nats")
    p.add_argument("--objective", choices=OBJECTIVES, default="elbo")
    p.add_argument("--k", type=positive_int, default=1, help="importance samples for --objective iwae")


def _n_classes(data) -> int:
    """--conditional: the number of classes in the data (its class names, or the largest label + 1)."""
    if not data.has_labels:
        raise VaelabError(f"--conditional needs labelled data; '{data.name}' has no labels")
    labels = [s.y for s in (data.train, data.test) if s.y is not None and len(s.y)]
    if min(int(y.min()) for y in labels) < 0:
        raise VaelabError(f"--conditional needs labels 0..C-1; '{data.name}' has negative labels")
    return max(len(data.classes or ()), *(int(y.max()) + 1 for y in labels))


def _objective_note(rec: dict[str, Any]) -> str:
    """The per-epoch line's note when the loss is not the plain ELBO."""
    if "test_neg_iwae" in rec:
        return f"  test -IWAE(k={rec['iwae_k']}) {rec['test_neg_iwae']:.3f}"
    if "kl_weight" in rec:
        fb = f", free bits {rec['free_bits']:g}" if rec["free_bits"] else ""
        return f"  [loss KL weight {rec['kl_weight']:.3g}{fb}]"
    return ""
