"""``vaelab train --resume RUN_DIR``: which flags may change, reading the run back, and tidying it.

A resume continues from RUN_DIR's newest good checkpoint: metrics lines and checkpoints written after
it are dropped, and config.json records the new settings (the epochs, the world size).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

RESUME_FLAGS = (
    "epochs",
    "checkpoint_every",
    "nan_retries",
    "nan_lr_factor",
    "device",
    "progress",
    "compile",  # how the step runs, not what it computes
    "threads",
    "data_dir",  # where this machine keeps the data
    "early_stop",  # when to stop, not what an epoch computes
)
METRICS_FILE = "metrics.jsonl"


def device_name(args: argparse.Namespace) -> str:
    """--device, or when resuming without it the device the run was started with (read locally:
    the process group, whose backend depends on the device, does not exist yet)."""
    from vaelab.io import read_config

    if args.resume is not None and not given(args, "device"):
        try:
            return str(read_config(args.resume)["train"]["device"])
        except (VaelabError, KeyError, TypeError):
            pass  # the resume itself reports what is wrong with the run dir
    return args.device


def check_flags(args: argparse.Namespace) -> None:
    parser = args.train_parser
    for dest, value in vars(args).items():
        if dest in (*RESUME_FLAGS, "resume", "func", "command", "train_parser"):
            continue
        if value != parser.get_default(dest):
            raise VaelabError(
                f"--{dest.replace('_', '-')} cannot be used with --resume: the run's config.json fixes it "
                f"(with --resume you may pass {', '.join('--' + f.replace('_', '-') for f in RESUME_FLAGS)})"
            )


def configs(out: Path, args: argparse.Namespace, ctx):
    """RUN_DIR's model and train configs (read on rank 0), with the flags --resume may change."""
    import dataclasses

    from vaelab.config import TrainConfig, VAEConfig, from_dict
    from vaelab.io import CONFIG_FILE, read_config
    from vaelab.training.distributed import on_main

    doc = json.loads(on_main(lambda: [json.dumps(read_config(out)).encode()], ctx)[0])
    where = f"{out / CONFIG_FILE}"
    if "train" not in doc:
        raise VaelabError(f"'{where}' has no training section: '{out}' was not made by vaelab train")
    if "prior_fit" in doc:  # its weights exist nowhere else: starting it again would lose them
        raise VaelabError(
            f"'{out}' was written by vaelab fit-prior and has nothing to resume; to train it further, "
            f"start a new run from it: vaelab train --init-from {out} --out NEW_DIR"
        )
    mcfg = from_dict(VAEConfig, doc.get("model"), f"{where}: model")
    tcfg = from_dict(TrainConfig, doc["train"], f"{where}: train")
    changes = {f: getattr(args, f) for f in RESUME_FLAGS if f in vars(TrainConfig()) and given(args, f)}
    if changes.get("early_stop") and not tcfg.holdout:
        raise VaelabError(
            f"--early-stop needs a holdout, and '{out}' was trained without --holdout (its training "
            "data cannot change on --resume)"
        )
    return mcfg, dataclasses.replace(tcfg, **changes)


def given(args: argparse.Namespace, dest: str) -> bool:
    return getattr(args, dest) != args.train_parser.get_default(dest)


def prepare(out: Path, model, ckpt, tcfg, extra: dict[str, Any], ctx) -> None:
    """Rank 0: check the resume makes sense, drop metrics lines and checkpoints after the checkpoint
    it resumes from, and record the new settings (epochs, world size) in config.json."""
    from vaelab.files import atomic_write_bytes, atomic_write_json
    from vaelab.io import CONFIG_FILE, run_config
    from vaelab.training.checkpoint import discard_after

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


def last_epoch(out: Path) -> str:
    from vaelab.training.checkpoint import list_checkpoints

    found = list_checkpoints(out)
    return found[0].name if found else "none yet"


def command(out: Path, ctx) -> str:
    run = shlex.quote(str(out))
    if ctx.distributed:
        return f"torchrun --nproc_per_node N -m vaelab train --resume {run}  (any N)"
    return f"vaelab train --resume {run}"
