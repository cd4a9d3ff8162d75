"""``vaelab train --holdout F --early-stop N --lr-drop M``: what the run says about them.

The work is done by early_stop.py; the flags and the holdout they imply come from `TrainConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
