"""``vaelab train --resume RUN_DIR``: which flags may change, and what the command says about it.

The work is `vaelab.training.run.Run.resume`'s: it continues from RUN_DIR's newest good checkpoint;
metrics lines and checkpoints written after it are dropped, and config.json records the new settings
(the epochs, the world size).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

from . import _flags


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
    """One-line error for a flag given with --resume that the run fixes (its Flag's resume="fixed")."""
    for dest in _flags.fixed_on_resume(args):
        allowed = ", ".join(_flags.option(d) for d in _flags.allowed_on_resume() if d != "resume")
        raise VaelabError(
            f"{_flags.spelled(args, dest)} cannot be used with --resume: the run's config.json fixes it "
            f"(with --resume you may pass {allowed})"
        )


def changes(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` fields the flags given with --resume change (`Run.resume`'s ``changes``)."""
    return _flags.resume_changes(args)


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the flag of ``dest`` was typed (even with its default value)."""
    return dest in _flags.given(args)


def announce(run, ctx) -> None:
    """Rank 0: where the resumed run goes on from."""
    ckpt, tcfg = run.checkpoint, run.train_config
    if not ctx.is_main:
        return
    if ckpt is None:
        print(f"'{run.path}' stopped before its first checkpoint: starting it again from epoch 0")
        return
    print(f"resuming '{run.path}' from epoch {ckpt.epoch} of {tcfg.epochs}")
    if ckpt.world_size != ctx.world_size:
        print(
            f"the checkpoint was written by {ckpt.world_size} process(es), this run has "
            f"{ctx.world_size}: the data order continues exactly; the sampling noise is reseeded"
        )


def last_epoch(out: Path) -> str:
    from vaelab.training.checkpoint import list_checkpoints

    found = list_checkpoints(out)
    return found[0].name if found else "none yet"


def command(out: Path, ctx) -> str:
    run = shlex.quote(str(out))
    if ctx.distributed:
        return f"torchrun --nproc_per_node N -m vaelab train --resume {run}  (any N)"
    return f"vaelab train --resume {run}"
