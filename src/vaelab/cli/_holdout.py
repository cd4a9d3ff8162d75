"""``vaelab train --holdout F --early-stop N --lr-drop M``: the flags, and what the run says about them.

The work is done by early_stop.py; this is the command line's side of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import fraction, nonneg_int

EARLY_STOP_HOLDOUT = 0.1  # the fraction --early-stop or --lr-drop hold out when --holdout is not given


def add_flags(p: argparse.ArgumentParser) -> None:
    """--holdout, --early-stop, --lr-drop and --lr-drop-factor."""
    p.add_argument(
        "--holdout",
        type=fraction,
        default=None,
        metavar="F",
        help="hold out F of the training split, never trained on, and keep the epoch that scores best "
        f"on it (default: none; {EARLY_STOP_HOLDOUT:g} with --early-stop or --lr-drop)",
    )
    p.add_argument(
        "--early-stop",
        type=nonneg_int,
        default=None,  # None: not given, so that --resume RUN --early-stop 0 can turn it off
        metavar="N",
        help="stop after N epochs without a better holdout score (after any KL warm-up); 0 = never",
    )
    p.add_argument(
        "--lr-drop",
        type=nonneg_int,
        default=0,
        metavar="N",
        help="multiply the lr by --lr-drop-factor after N epochs without a better holdout score "
        "(counted again from each drop); 0 = never",
    )
    p.add_argument(
        "--lr-drop-factor",
        type=fraction,
        default=0.3,
        metavar="F",
        help="the lr multiplier of --lr-drop (default 0.3)",
    )


def options(args: argparse.Namespace) -> dict[str, Any]:
    """--holdout/--early-stop/--lr-drop(-factor) -> TrainConfig's fields of the same names."""
    holdout = args.holdout
    if holdout is None:
        holdout = EARLY_STOP_HOLDOUT if args.early_stop or args.lr_drop else 0.0
    return {
        "holdout": holdout,
        "early_stop": args.early_stop or 0,
        "lr_drop": args.lr_drop,
        "lr_drop_factor": args.lr_drop_factor,
    }


def plan(tcfg, n: int) -> str:
    """What the run does with its holdout, in one line."""
    parts = [f"holding out {round(n * tcfg.holdout)} of {n} training examples"]
    if tcfg.lr_drop:
        parts.append(
            f"lowering the lr x{tcfg.lr_drop_factor:g} after {tcfg.lr_drop} epochs without a better score"
        )
    if tcfg.early_stop:
        parts.append(f"stopping after {tcfg.early_stop} epochs without a better score")
    return "; ".join([*parts, "keeping the best epoch"])


def best_note(last: dict[str, Any], tcfg, out: Path) -> str:
    """What the saved model is, for a run with a holdout."""
    why = f"stopped early at epoch {last['epoch']}: " if last["epoch"] < tcfg.epochs else ""
    if last["best_epoch"] == last["epoch"]:
        return f"{why}the model is the last epoch's, also the best on the holdout"
    return (
        f"{why}the model is epoch {last['best_epoch']}'s, the best on the holdout "
        f"(the last epoch's weights are in {out}/checkpoints)"
    )


def epoch_note(rec: dict[str, Any]) -> str:
    """The per-epoch line's holdout score, starred when it is the best so far."""
    if "best_epoch" not in rec:
        return ""
    key = "val_neg_iwae" if "val_neg_iwae" in rec else "val_neg_elbo"
    star = " *" if rec["best_epoch"] == rec["epoch"] else ""
    return f"  holdout {'-IWAE' if key == 'val_neg_iwae' else '-ELBO'} {rec[key]:.3f}{star}"
