"""``vaelab train``: a new run into --out, or ``--resume RUN_DIR``; one process, or DDP under torchrun."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
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

# Flags that may change when resuming; every other one is fixed by RUN_DIR/config.json.
RESUME_FLAGS = ("epochs", "checkpoint_every", "nan_retries", "nan_lr_factor", "device", "progress")
METRICS_FILE = "metrics.jsonl"


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE on SOURCE and write config.json, model.safetensors, metrics.jsonl,
    samples.png and reconstructions.png into RUN_DIR.

    A checkpoint is saved every --checkpoint-every epochs; Ctrl-C or SIGTERM stops at the end of
    the epoch with a checkpoint. --resume RUN_DIR continues a stopped or crashed run (bitwise
    identically on CPU), --epochs then being the new total. Under torchrun
    (torchrun --nproc_per_node N -m vaelab train ...) the processes train data-parallel."""
    from .. import distributed
    from ..checkpoint import RunLock
    from ..device import resolve_device

    ctx, device = distributed.setup(resolve_device(args.device))
    try:
        with RunLock() as lock:
            return _train(args, ctx, device, lock)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, ctx, device, lock) -> int:
    import torch

    from ..checkpoint import Checkpoint, read_latest
    from ..config import TrainConfig, VAEConfig, to_dict
    from ..data import check_likelihood_range, load_dataset
    from ..distributed import on_main
    from ..figures import recon_grid, save_grid
    from ..model import VAE
    from ..signals import exit_code
    from ..train import TrainingStopped, train

    if args.resume is not None:
        out = Path(args.resume)
        _check_resume_flags(args)
        mcfg, tcfg = _resume_configs(out, args, ctx)
        on_main(lambda: lock.acquire(out), ctx)
    else:
        if args.data is None or args.out is None:
            raise VaelabError("--data and --out are required (or --resume RUN_DIR to continue a run)")
        out = Path(args.out)
        on_main(lambda: _check_out(out, args.force), ctx)
        tcfg = TrainConfig(
            data=args.data,
            epochs=args.epochs if args.epochs is not None else TrainConfig.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            checkpoint_every=args.checkpoint_every,
            nan_retries=args.nan_retries,
            nan_lr_factor=args.nan_lr_factor,
        )
    data = load_dataset(tcfg.data, **tcfg.data_options)
    check_likelihood_range(data, args.likelihood if args.resume is None else mcfg.likelihood)
    if args.resume is None:
        mcfg = VAEConfig(
            input_shape=data.shape,
            latent_dim=args.latent_dim,
            hidden=args.hidden,
            likelihood=args.likelihood,
        )
    torch.manual_seed(tcfg.seed)
    model = VAE(mcfg).to(device)
    extra = {"train": to_dict(tcfg), "world_size": ctx.world_size}
    ckpt = None
    if args.resume is not None:
        blobs = on_main(lambda: read_latest(out), ctx)
        ckpt = Checkpoint.from_blobs(blobs, f"'{out}' checkpoint") if blobs else None
        on_main(lambda: _prepare_resume(out, model, ckpt, tcfg, extra, ctx), ctx)
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

    def on_epoch(rec: dict[str, Any]) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(
            f"epoch {rec['epoch']:>4}/{tcfg.epochs}  train -ELBO {rec['train_neg_elbo']:8.3f}  "
            f"test -ELBO {rec['test_neg_elbo']:8.3f} (recon {rec['recon']:.3f} + KL "
            f"{rec['kl']:.3f})  {rec['seconds']:.2f}s",
            flush=True,
        )

    try:
        train(
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
                f"resume with: {_resume_command(out, ctx)}",
                file=sys.stderr,
            )
        return exit_code(e.signum)
    except KeyboardInterrupt:
        if ctx.is_main:
            print(
                f"vaelab train: interrupted; the last checkpoint ({_last_epoch(out)}) is intact.\n"
                f"resume with: {_resume_command(out, ctx)}",
                file=sys.stderr,
            )
        return 130
    if ctx.is_main:
        model.save(out, extra)
        gen = torch.Generator(device=device).manual_seed(tcfg.seed)
        save_grid(model.sample(64, generator=gen), out / "samples.png", nrow=8)
        x = data.test.batch(slice(0, 32)).to(device)
        save_grid(recon_grid(x, model.reconstruct(x)), out / "reconstructions.png", nrow=8)
        print(f"done: model in {out}/, pictures {out}/samples.png and {out}/reconstructions.png")
    return 0


def _check_out(out: Path, force: bool) -> None:
    from ..checkpoint import LOCK_FILE

    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out '{out}' exists and is not a directory")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and not force:
        raise VaelabError(f"--out '{out}' is not empty; pass --force to overwrite the run in it")


def _init_run_dir(out: Path, model, extra: dict[str, Any], force: bool, lock) -> None:
    """Lock RUN_DIR, clear a --force'd old run, then write metrics.jsonl, the initial weights and
    config.json, in that order: once config.json exists the run dir loads and resumes."""
    from ..checkpoint import checkpoint_dir
    from ..io import CONFIG_FILE, atomic_write_bytes

    lock.acquire(out)  # creates RUN_DIR
    if force:
        (out / CONFIG_FILE).unlink(missing_ok=True)  # first: a half-cleared dir is no longer a run
        if checkpoint_dir(out).is_dir():
            shutil.rmtree(checkpoint_dir(out))
    atomic_write_bytes(out / METRICS_FILE, b"")
    model.save(out, extra)


def _check_resume_flags(args: argparse.Namespace) -> None:
    parser = args.train_parser
    for dest, value in vars(args).items():
        if dest in (*RESUME_FLAGS, "resume", "func", "command", "train_parser"):
            continue
        if value != parser.get_default(dest):
            raise VaelabError(
                f"--{dest.replace('_', '-')} cannot be used with --resume: the run's config.json fixes it "
                f"(with --resume you may pass {', '.join('--' + f.replace('_', '-') for f in RESUME_FLAGS)})"
            )


def _resume_configs(out: Path, args: argparse.Namespace, ctx):
    """RUN_DIR's model and train configs (read on rank 0), with the flags --resume may change."""
    import dataclasses

    from ..config import TrainConfig, VAEConfig, from_dict
    from ..distributed import on_main
    from ..io import CONFIG_FILE, read_config

    doc = json.loads(on_main(lambda: [json.dumps(read_config(out)).encode()], ctx)[0])
    where = f"{out / CONFIG_FILE}"
    if "train" not in doc:
        raise VaelabError(f"'{where}' has no training section: '{out}' was not made by vaelab train")
    mcfg = from_dict(VAEConfig, doc.get("model"), f"{where}: model")
    tcfg = from_dict(TrainConfig, doc["train"], f"{where}: train")
    changes = {f: getattr(args, f) for f in RESUME_FLAGS if f in vars(TrainConfig()) and _given(args, f)}
    return mcfg, dataclasses.replace(tcfg, **changes)


def _given(args: argparse.Namespace, dest: str) -> bool:
    return getattr(args, dest) != args.train_parser.get_default(dest)


def _prepare_resume(out: Path, model, ckpt, tcfg, extra: dict[str, Any], ctx) -> None:
    """Rank 0: check the resume makes sense, drop metrics lines and checkpoints after the checkpoint
    it resumes from, and record the new settings (epochs, world size) in config.json."""
    from ..checkpoint import discard_after
    from ..io import CONFIG_FILE, atomic_write_bytes, atomic_write_json, run_config

    metrics = out / METRICS_FILE
    if ckpt is None:
        if metrics.is_file() and metrics.read_text().strip():
            raise VaelabError(f"'{out}' has metrics but no checkpoint to resume from (trained without them?)")
        print(f"'{out}' stopped before its first checkpoint: starting it again from epoch 0")
        history: list[dict[str, Any]] = []
        epoch = 0
    else:
        history, epoch = ckpt.history, ckpt.epoch
        if tcfg.epochs < epoch:
            raise VaelabError(f"--epochs {tcfg.epochs} is below the {epoch} epochs '{out}' already trained")
        print(f"resuming '{out}' from epoch {epoch} of {tcfg.epochs}")
        if ckpt.world_size != ctx.world_size:
            print(
                f"the checkpoint was written by {ckpt.world_size} process(es), this run has "
                f"{ctx.world_size}: the data order continues exactly; the sampling noise is reseeded"
            )
    discard_after(out, epoch)
    atomic_write_bytes(metrics, "".join(json.dumps(r) + "\n" for r in history).encode())
    atomic_write_json(out / CONFIG_FILE, run_config(model.config, extra))


def _last_epoch(out: Path) -> str:
    from ..checkpoint import list_checkpoints

    found = list_checkpoints(out)
    return found[0].name if found else "none yet"


def _resume_command(out: Path, ctx) -> str:
    run = shlex.quote(str(out))
    if ctx.distributed:
        return f"torchrun --nproc_per_node N -m vaelab train --resume {run}  (any N)"
    return f"vaelab train --resume {run}"


def register(sub) -> None:
    p = add_command(sub, "train", cmd_train)
    p.add_argument("--data", help="SOURCE: a dataset name such as digits")
    p.add_argument("--out", help="RUN_DIR to create")
    p.add_argument("--epochs", type=positive_int, default=None, help="total epochs (default 10)")
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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
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
