"""``vaelab train``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import VaelabError
from ._common import (
    add_command,
    add_device_flag,
    int_list,
    nonneg_int,
    positive_float,
    positive_int,
)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE on SOURCE and write config.json, model.safetensors, metrics.jsonl,
    samples.png and reconstructions.png into RUN_DIR."""
    import torch

    from ..config import TrainConfig, VAEConfig, to_dict
    from ..data import check_likelihood_range, load_dataset
    from ..device import resolve_device
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
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    device = resolve_device(args.device)
    data = load_dataset(tcfg.data, **tcfg.data_options)
    check_likelihood_range(data, args.likelihood)
    mcfg = VAEConfig(
        input_shape=data.shape,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        likelihood=args.likelihood,
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
            f"{rec['kl']:.3f})  active units {rec['active_units']}/{args.latent_dim}  {rec['seconds']:.2f}s",
            flush=True,
        )

    with warnings.catch_warnings():  # a warning (e.g. posterior collapse) is one line, not a source dump
        warnings.showwarning = lambda msg, *_a, **_k: print(f"warning: {msg}", file=sys.stderr, flush=True)
        train(model, data, tcfg, on_epoch=on_epoch, progress=args.progress)
    model.save(out, {"train": to_dict(tcfg)})
    gen = torch.Generator(device=device).manual_seed(tcfg.seed)
    save_grid(model.sample(64, generator=gen), out / "samples.png", nrow=8)
    x = data.test.batch(slice(0, 32)).to(device)
    save_grid(recon_grid(x, model.reconstruct(x)), out / "reconstructions.png", nrow=8)
    print(f"done: model in {out}/, pictures {out}/samples.png and {out}/reconstructions.png")
    return 0


def register(sub) -> None:
    p = add_command(sub, "train", cmd_train)
    p.add_argument("--data", required=True, help="SOURCE: a dataset name such as digits")
    p.add_argument("--out", required=True, help="RUN_DIR to create")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--latent-dim", type=positive_int, default=20)
    p.add_argument("--hidden", type=int_list, default=(400,), help="widths, e.g. 400,400")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=nonneg_int, default=0)
    add_device_flag(p)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty RUN_DIR")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
