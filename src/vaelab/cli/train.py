"""``vaelab train``: a new run into --out, or ``--resume RUN_DIR``; one process, or DDP under torchrun."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from vaelab.config import ARCHS, LIKELIHOODS, MIXTURE_COMPONENTS, OBJECTIVES, PRIORS
from vaelab.errors import VaelabError

from . import _holdout, _init_from, _resume
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
from ._resume import METRICS_FILE

VAMP_PSEUDO_INPUTS = 500  # the paper's K for MNIST


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE on SOURCE and write config.json, model.safetensors, metrics.jsonl,
    samples.png and reconstructions.png into RUN_DIR.

    A checkpoint is saved every --checkpoint-every epochs; Ctrl-C or SIGTERM stops at the end of
    the epoch with a checkpoint. --resume RUN_DIR continues a stopped or crashed run (bitwise
    identically on CPU), --epochs then being the new total. Under torchrun
    (torchrun --nproc_per_node N -m vaelab train ...) the processes train data-parallel."""
    from vaelab.device import resolve_device
    from vaelab.training import distributed
    from vaelab.training.checkpoint import RunLock

    ctx, device = distributed.setup(resolve_device(_resume.device_name(args)))
    together = False  # whether every rank got here through the same collectives
    try:
        with RunLock() as lock:
            code = _train(args, ctx, device, lock)
        together = code != 130  # Ctrl-C may have caught the ranks at different points
        return code
    finally:
        distributed.shutdown(synchronize=together)


def _one_line_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _train(args: argparse.Namespace, ctx, device, lock) -> int:
    import torch

    from vaelab.config import TrainConfig, VAEConfig, to_dict
    from vaelab.data.dataset import check_likelihood_range
    from vaelab.data.sources import canonical_source, load_dataset
    from vaelab.io import save_model
    from vaelab.models.vae import VAE
    from vaelab.training.checkpoint import Checkpoint, read_latest
    from vaelab.training.distributed import on_main
    from vaelab.training.engine import resolve_mode
    from vaelab.training.loop import TrainingStopped, train
    from vaelab.training.signals import exit_code
    from vaelab.viz.figures import recon_grid, save_grid

    mcfg = source = None
    if args.resume is not None:
        out = Path(args.resume)
        _resume.check_flags(args)
        mcfg, tcfg = _resume.configs(out, args, ctx)
        on_main(lambda: lock.acquire(out), ctx)
        options = {**tcfg.data_options, **data_options(args)}  # e.g. --data-dir on another machine
    else:
        source, data_name = _init_from.load_source(args) if args.init_from else (None, args.data)
        if data_name is None or args.out is None:
            raise VaelabError("--data and --out are required (or --resume RUN_DIR to continue a run)")
        out = Path(args.out)
        on_main(lambda: _check_out(out, args.force), ctx)
        tcfg = TrainConfig(
            data=canonical_source(data_name),
            epochs=args.epochs if args.epochs is not None else TrainConfig.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            checkpoint_every=args.checkpoint_every,
            nan_retries=args.nan_retries,
            nan_lr_factor=args.nan_lr_factor,
            beta=args.beta,
            kl_warmup=args.kl_warmup,
            free_bits=args.free_bits,
            objective=args.objective,
            k=args.k,
            precision=args.precision,
            compile=args.compile,
            threads=args.threads,
            init_from=args.init_from or "",
            **_holdout.options(args),
        )
        options = data_options(args)
    resolve_mode(tcfg.compile, device)  # e.g. cuda-graph without CUDA: fail before writing anything
    if source is not None:
        mcfg = source.config
        data = _init_from.load_data(args, source, options)
    likelihood = args.likelihood if mcfg is None else mcfg.likelihood
    if source is None:
        data = load_dataset(tcfg.data, likelihood=likelihood, **options)
    if args.resume is None:
        tcfg.data_options = dict(data.meta.get("options", {}))  # as applied, so evaluate sees the same
    check_likelihood_range(data, likelihood)
    if mcfg is None:
        mcfg = VAEConfig(
            input_shape=data.shape,
            latent_dim=args.latent_dim,
            hidden=args.hidden,
            likelihood=args.likelihood,
            arch=args.arch,
            channels=args.channels,
            gated=args.gated,
            n_classes=_n_classes(data) if args.conditional else 0,
            top_latent_dim=args.top_latent_dim,
            **_prior_options(args),
        )
    if (mcfg.prior != "normal" or mcfg.top_latent_dim) and tcfg.free_bits:
        which = "--top-latent-dim" if mcfg.top_latent_dim else f"--prior {mcfg.prior}"
        raise VaelabError(f"--free-bits floors a per-dim KL, which {which} does not have")
    torch.manual_seed(tcfg.seed)
    model = VAE(mcfg).to(device)
    if source is not None:
        model.load_state_dict(source.state_dict())
    extra = {"train": to_dict(tcfg), "world_size": ctx.world_size}
    ckpt = None
    if args.resume is not None:
        blobs = on_main(lambda: read_latest(out), ctx)
        ckpt = Checkpoint.from_blobs(blobs, f"'{out}' checkpoint") if blobs else None
        on_main(lambda: _resume.prepare(out, model, ckpt, tcfg, extra, ctx), ctx)
    else:
        on_main(lambda: _init_run_dir(out, model, extra, args.force, lock), ctx)
    metrics_path = out / METRICS_FILE
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        where = f"{device} x {ctx.world_size} processes" if ctx.distributed else f"{device}"
        print(
            f"training on '{data.name}' ({len(data.train)} train / {len(data.test)} "
            f"{data.test_split}, shape {data.shape}) on {where}, {n_params:,} parameters"
        )
        if source is not None:
            print(f"starting from the weights of '{args.init_from}'")

    def on_epoch(rec: dict[str, Any]) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(
            f"epoch {rec['epoch']:>4}/{tcfg.epochs}  train -ELBO {rec['train_neg_elbo']:8.3f}  "
            f"test -ELBO {rec['test_neg_elbo']:8.3f} (recon {rec['recon']:.3f} + KL "
            f"{rec['kl']:.3f}){_objective_note(rec)}{_holdout.epoch_note(rec)}  active units "
            f"{rec['active_units']}/{mcfg.latent_dim}  {rec['seconds']:.2f}s",
            flush=True,
        )

    if ctx.is_main and tcfg.holdout:
        print(_holdout.plan(tcfg, len(data.train)))
    try:
        with warnings.catch_warnings():  # a warning (e.g. posterior collapse) is one line, not a source dump
            warnings.showwarning = _one_line_warning
            history = train(
                model,
                data,
                tcfg,
                on_epoch=on_epoch if ctx.is_main else None,
                progress=args.progress,
                run_dir=out,
                resume=ckpt,
            )
    except TrainingStopped as e:
        if ctx.is_main:
            print(
                f"stopped after epoch {e.epoch}/{tcfg.epochs}; checkpoint saved in {out}/checkpoints.\n"
                f"resume with: {_resume.command(out, ctx)}",
                file=sys.stderr,
            )
        return exit_code(e.signum)
    except KeyboardInterrupt:
        if ctx.is_main:
            print(
                f"vaelab train: interrupted; the last checkpoint ({_resume.last_epoch(out)}) is intact.\n"
                f"resume with: {_resume.command(out, ctx)}",
                file=sys.stderr,
            )
        return 130

    def finish() -> None:
        save_model(model, out, extra)
        gen = torch.Generator(device=device).manual_seed(tcfg.seed)
        # A CVAE's sample grid has one row per class.
        y = torch.arange(mcfg.n_classes, device=device).repeat_interleave(8) if mcfg.n_classes else None
        save_grid(model.sample(64 if y is None else len(y), generator=gen, y=y), out / "samples.png", nrow=8)
        x = data.test.batch(slice(0, 32)).to(device)
        y = None if data.test.y is None else data.test.y[:32].to(device)
        save_grid(recon_grid(x, model.reconstruct(x, y)), out / "reconstructions.png", nrow=8)
        if history and "best_epoch" in history[-1]:
            print(_holdout.best_note(history[-1], tcfg, out))
        print(f"done: model in {out}/, pictures {out}/samples.png and {out}/reconstructions.png")

    on_main(finish, ctx)  # the other ranks wait here, and fail with rank 0 if saving fails
    return 0


def _check_out(out: Path, force: bool) -> None:
    from vaelab.training.checkpoint import LOCK_FILE

    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out '{out}' exists and is not a directory")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and not force:
        raise VaelabError(f"--out '{out}' is not empty; pass --force to overwrite the run in it")


def _init_run_dir(out: Path, model, extra: dict[str, Any], force: bool, lock) -> None:
    """Lock RUN_DIR, clear a --force'd old run, then write metrics.jsonl, the initial weights and
    config.json, in that order: once config.json exists the run dir loads and resumes."""
    from vaelab.files import atomic_write_bytes
    from vaelab.io import CONFIG_FILE, save_model
    from vaelab.training.checkpoint import checkpoint_dir

    lock.acquire(out)  # creates RUN_DIR
    if force:
        (out / CONFIG_FILE).unlink(missing_ok=True)  # first: a half-cleared dir is no longer a run
        if checkpoint_dir(out).is_dir():
            shutil.rmtree(checkpoint_dir(out))
    atomic_write_bytes(out / METRICS_FILE, b"")
    save_model(model, out, extra)


def register(sub) -> None:
    p = add_command(sub, "train", cmd_train)
    p.add_argument("--data", help=SOURCE_HELP + " (required unless --resume)")
    p.add_argument("--out", help="RUN_DIR to create (required unless --resume)")
    p.add_argument("--epochs", type=positive_int, default=None, help="total epochs (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--latent-dim", type=positive_int, default=20)
    p.add_argument("--hidden", type=int_list, default=(400,), help="widths, e.g. 400,400")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    _register_family_flags(p)
    p.add_argument("--seed", type=nonneg_int, default=0)
    _holdout.add_flags(p)
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
        help="how the step runs: auto = a CUDA graph on CUDA, the hand-derived MLP step on CPU where it "
        "applies (else autograd); off = autograd; inductor = torch.compile",
    )
    p.add_argument("--threads", type=nonneg_int, default=0, help="CPU threads (default 0: auto)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty RUN_DIR")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="a new run starting from RUN_DIR's model and weights (its data by default), trained with "
        "this command's flags: e.g. fine-tune an ELBO run with --objective iwae",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=1,
        metavar="N",
        help="epochs between checkpoints (default 1)",
    )
    p.add_argument(
        "--nan-retries",
        type=nonneg_int,
        default=3,
        metavar="K",
        help="retries of an epoch that went NaN/inf (default 3)",
    )
    p.add_argument(
        "--nan-lr-factor",
        type=positive_float,
        default=0.5,
        metavar="F",
        help="lr multiplier at each NaN/inf retry (default 0.5)",
    )
    p.set_defaults(train_parser=p)  # --resume compares flags with their defaults


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
    p.add_argument(
        "--prior",
        choices=PRIORS,
        default="normal",
        help="p(z): N(0, I), the VampPrior, or a Gaussian mixture learned with the model",
    )
    p.add_argument(
        "--pseudo-inputs",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"--prior vamp: learned pseudo-inputs (default {VAMP_PSEUDO_INPUTS})",
    )
    p.add_argument(
        "--mixture-components",
        type=positive_int,
        default=None,
        metavar="M",
        help=f"--prior mixture: Gaussian components (default {MIXTURE_COMPONENTS})",
    )
    p.add_argument(
        "--top-latent-dim",
        type=nonneg_int,
        default=0,
        metavar="K2",
        help="a two-level hierarchical VAE: z = [z1, z2], z2 the last K2 of --latent-dim (0: one level)",
    )


def _prior_options(args: argparse.Namespace) -> dict[str, Any]:
    """--prior, --pseudo-inputs, --mixture-components -> VAEConfig's prior fields (defaults: K=500
    pseudo-inputs for vamp, M=100 components for mixture)."""
    if args.pseudo_inputs is not None and args.prior != "vamp":
        raise VaelabError("--pseudo-inputs needs --prior vamp")
    if args.mixture_components is not None and args.prior != "mixture":
        raise VaelabError("--mixture-components needs --prior mixture")
    if args.prior == "vamp":
        return {"prior": "vamp", "pseudo_inputs": args.pseudo_inputs or VAMP_PSEUDO_INPUTS}
    if args.prior == "mixture":
        return {"prior": "mixture", "mixture_components": args.mixture_components or MIXTURE_COMPONENTS}
    return {}


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
