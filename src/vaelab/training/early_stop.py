"""Choosing the epoch on data the model never trains on: a holdout carved from the training split.

With ``TrainConfig.holdout`` = F > 0, a fixed F of the training rows is set aside. After each epoch
the loop scores the model on it (the true -ELBO, or the -IWAE(k) bound when that is the objective),
keeps the best epoch's weights, with ``lr_drop`` = Q lowers the lr once Q epochs in a row have not
beaten the best, and with ``early_stop`` = P stops once P epochs in a row have not. The run's model
is then the best epoch's. The test split plays no part in the choice, so its numbers stay honest.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import torch
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.data.dataset import Dataset, Split, seeded_split
from vaelab.errors import VaelabError
from vaelab.evaluation.elbo import evaluate_elbo
from vaelab.models.objectives import objective_metrics
from vaelab.models.vae import VAE
from vaelab.training import distributed
from vaelab.training.callbacks import Callback

HOLDOUT_SEED = 20240611  # fixed, so runs with the same fraction (any --seed) hold out the same rows


def carve_holdout(data: Dataset, fraction: float | None) -> tuple[Dataset, Split | None]:
    """``data`` with ``round(fraction * N)`` training rows moved into a holdout split -> (data, holdout).

    The rows are a seeded random choice (`HOLDOUT_SEED`), the same on every rank and every run. The
    holdout keeps its rows' static pixels, and dynamic binarization is drawn once for it (as for
    evaluation), so its scores compare from epoch to epoch. ``fraction`` 0 or None -> (data, None).
    """
    if not fraction:
        return data, None
    n = len(data.train)
    n_hold = round(n * fraction)
    if n_hold < 1 or n_hold >= n:
        raise VaelabError(
            "{f.holdout:={v:g}} of '{name}''s {n} training examples leaves {hold} to hold out and "
            "{rest} to train on; both need at least one",
            f=TrainConfig, v=fraction, name=data.name, n=n, hold=n_hold, rest=n - n_hold,
        )
    keep, hold = seeded_split(n, n - n_hold, HOLDOUT_SEED)
    holdout = data.train.take(hold)
    if holdout.binarize == "dynamic":
        holdout = dataclasses.replace(holdout, binarize="static")
    return dataclasses.replace(data, train=data.train.take(keep)), holdout


def criterion(config: TrainConfig) -> str:
    """The metrics key the epoch is chosen on: the training objective's bound on the holdout."""
    return "val_neg_iwae" if config.objective == "iwae" else "val_neg_elbo"


def holdout_metrics(
    model: VAE, holdout: Split, config: TrainConfig, epoch: int, seed: int, ctx: distributed.Context
) -> dict[str, float]:
    """``val_neg_elbo`` (and ``val_neg_iwae`` for the iwae objective) on the holdout, nats per example.

    Every rank scores the whole holdout; the result is averaged over ranks, so that all of them see
    the same number and make the same stop decision even where GPU sums are not bitwise repeatable.
    """
    values = {"val_neg_elbo": evaluate_elbo(model, holdout, seed=seed)["neg_elbo"]}
    if config.objective == "iwae":
        values["val_neg_iwae"] = objective_metrics(model, holdout, config, epoch, seed=seed)["test_neg_iwae"]
    packet = torch.tensor(list(values.values()), dtype=torch.float64)
    if ctx.distributed:
        packet = distributed.all_reduce_sum(packet.to(model.device), ctx).cpu() / ctx.world_size
    return dict(zip(values, packet.tolist(), strict=True))


class BestEpoch:
    """The best holdout score so far, its epoch and its weights; decides when to lower the lr and when
    to stop.

    ``early_stop`` 0 only keeps the best. ``lr_drop`` P > 0 multiplies the lr by ``lr_drop_factor``
    after P epochs without a better score (counted again from each drop). Epochs of a KL warm-up do
    not count towards either: their ELBO is still catching up with a loss that differs from it.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.key = criterion(config)
        self.patience, self.warmup = config.early_stop, config.kl_warmup
        self.drop_patience, self.drop_factor = config.lr_drop, config.lr_drop_factor
        self.epoch, self.value = 0, math.inf
        self.dropped = 0  # the last epoch after which the lr was lowered
        self.weights: dict[str, Tensor] | None = None

    @classmethod
    def resumed(cls, config: TrainConfig, history: list[dict[str, Any]], weights: dict | None) -> BestEpoch:
        """A resumed run's tracker: its history replayed (best epoch, score, lr drops), the best
        weights from its checkpoint."""
        best = cls(config)
        for rec in history:
            value = rec.get(best.key)
            best._note(int(rec["epoch"]), float(value) if isinstance(value, int | float) else math.nan)
            best.lr_drop_due(int(rec["epoch"]))
        if best.epoch and weights is None:
            raise VaelabError(
                "the checkpoint has no weights for the best holdout epoch ({e}); it was written "
                "without {f.holdout}",
                f=TrainConfig, e=best.epoch,
            )
        best.weights = weights
        return best

    def _note(self, epoch: int, value: float) -> bool:
        if math.isfinite(value) and value < self.value:
            self.epoch, self.value = epoch, value
            return True
        return False

    def update(self, epoch: int, record: dict[str, Any], model: VAE) -> None:
        """Note epoch ``epoch``'s holdout score (in ``record``); adds ``best_epoch`` to the record."""
        if self._note(epoch, record[self.key]):
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record["best_epoch"] = self.epoch

    def lr_drop_due(self, epoch: int) -> bool:
        """Whether to lower the lr after epoch ``epoch`` (then noted as done)."""
        if not self.drop_patience or not self.epoch:
            return False
        if epoch - max(self.epoch, self.warmup, self.dropped) < self.drop_patience:
            return False
        self.dropped = epoch
        return True

    def should_stop(self, epoch: int) -> bool:
        """Whether ``early_stop`` epochs after the warm-up have gone by since the best one."""
        if not self.patience or not self.epoch:
            return False
        return epoch - max(self.epoch, self.warmup) >= self.patience

    def restore(self, model: VAE) -> None:
        """Load the best epoch's weights into ``model`` (nothing to do before the first epoch)."""
        if self.weights is not None:
            model.load_state_dict(self.weights)


class EarlyStopping(Callback):
    """The holdout's part in `train`: after each epoch, score the model on ``holdout`` (adds
    `holdout_metrics` and ``best_epoch`` to the record), keep the best epoch's weights, lower the lr
    of ``opt`` (``config.lr_drop``) and ask to stop (``config.early_stop``); at the end, load the best
    epoch's weights into the model.

    ``history``/``best_weights``: a resumed run's records and its checkpoint's best weights, replayed
    so that it chooses exactly as an uninterrupted run would.
    """

    def __init__(
        self,
        model: VAE,
        holdout: Split,
        config: TrainConfig,
        opt: torch.optim.Optimizer,
        ctx: distributed.Context,
        seed: int,
        history: list[dict[str, Any]] | None = None,
        best_weights: dict[str, Tensor] | None = None,
    ) -> None:
        self.model, self.holdout, self.config, self.opt, self.ctx, self.seed = (
            model,
            holdout,
            config,
            opt,
            ctx,
            seed,
        )
        self.best = BestEpoch(config) if history is None else BestEpoch.resumed(config, history, best_weights)
        self.stop = False

    @property
    def weights(self) -> dict[str, Tensor] | None:
        """The best epoch's weights so far (None before the first epoch)."""
        return self.best.weights

    def on_train_start(self, history: list[dict[str, Any]]) -> None:
        # A resumed run that had already stopped early trains no further.
        self.stop = bool(history) and self.best.should_stop(int(history[-1]["epoch"]))

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        record.update(holdout_metrics(self.model, self.holdout, self.config, epoch, self.seed, self.ctx))
        self.best.update(epoch, record, self.model)
        if self.best.lr_drop_due(epoch):
            self._lower_lr(epoch)
        self.stop = self.best.should_stop(epoch)  # the same on all ranks: the scores are averaged

    def on_train_end(self, history: list[dict[str, Any]]) -> None:
        self.best.restore(self.model)

    def _lower_lr(self, epoch: int) -> None:
        """--lr-drop: multiply the lr by ``lr_drop_factor`` from the next epoch on."""
        before = self.opt.param_groups[0]["lr"]
        for group in self.opt.param_groups:
            group["lr"] *= self.config.lr_drop_factor
        if self.ctx.is_main:
            print(
                f"vaelab: no better holdout score since epoch {self.best.epoch}: lr {before:.3g} -> "
                f"{self.opt.param_groups[0]['lr']:.3g} from epoch {epoch + 1}",
                file=sys.stderr,
                flush=True,
            )
