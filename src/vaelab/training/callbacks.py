"""What `train` calls around its epochs: the `Callback` hooks, and the posterior-collapse monitor.

A callback is any object with the methods of `Callback` (subclass it and override what you need;
``set_model`` may be left out). `train` calls them in order: its own first (the holdout's best epoch
and early stopping, then the collapse monitor, which add keys to each epoch's record), then the
caller's, then the one that appends the record to the run's metrics.jsonl, so a caller's callback may
add keys that get logged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from vaelab.config import TrainConfig
from vaelab.data.dataset import Split
from vaelab.evaluation.elbo import collapse_diagnostics
from vaelab.models.vae import VAE

COLLAPSE_PATIENCE = 5  # early epochs often look collapsed before units switch on: don't cry wolf

Record = dict[str, Any]


class Callback:
    """Hooks that `train` calls; each does nothing here.

    - ``set_model(model, config)``: first, with the `VAE` being trained and its `TrainConfig` (for a
      callback that looks at the model, such as one that logs samples).
    - ``on_train_start(history)``: before the first epoch; ``history`` holds a resumed run's records
      so far ([] for a new run).
    - ``on_epoch_end(record)``: after each epoch, with its record (one of the dicts `train` returns);
      a callback may add keys to it for the callbacks after it and for metrics.jsonl.
    - ``on_train_end(history)``: after the last epoch (not when training raises), with every record.
    - ``close()``: last, however training ended (also when it raised or was stopped): release what
      the callback holds, such as an open log file.

    Setting ``self.stop = True`` in ``on_epoch_end`` ends training after that epoch, with a checkpoint
    (as early stopping does). Under torchrun the hooks run on every rank, and a stop must be decided
    the same on all of them.
    """

    stop: bool = False

    def set_model(self, model: VAE, config: TrainConfig) -> None:
        pass

    def on_train_start(self, history: list[Record]) -> None:
        pass

    def on_epoch_end(self, record: Record) -> None:
        pass

    def on_train_end(self, history: list[Record]) -> None:
        pass

    def close(self) -> None:
        pass


def set_model(callbacks: list[Callback], model: VAE, config: TrainConfig) -> None:
    """Each callback's ``set_model``, where it has one (a duck-typed callback may not)."""
    for cb in callbacks:
        hook = getattr(cb, "set_model", None)
        if hook is not None:
            hook(model, config)


class EpochFunction(Callback):
    """A plain ``fn(record)`` (`train`'s ``on_epoch``) as a callback."""

    def __init__(self, fn: Callable[[Record], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, record: Record) -> None:
        self.fn(record)


class PosteriorCollapseWarning(UserWarning):
    """Most latent units carry no information about x (Var_x(E_q[z_u]) <= 0.01)."""


class CollapseMonitor(Callback):
    """Adds ``kl_per_dim``/``active_units`` (on ``test``, `collapse_diagnostics`) to each epoch's
    record; warns once with `PosteriorCollapseWarning` when most units have been inactive for
    ``COLLAPSE_PATIENCE`` epochs in a row, or at the last epoch (``epochs``)."""

    def __init__(self, model: VAE, test: Split, epochs: int, warn: bool = True) -> None:
        self.model, self.test, self.epochs = model, test, epochs
        self.streak, self.warned = 0, not warn  # under torchrun only rank 0 warns

    def on_epoch_end(self, record: Record) -> None:
        diag = collapse_diagnostics(self.model, self.test)
        record.update(kl_per_dim=diag["kl_per_dim"], active_units=diag["active_units"])
        d = self.model.config.latent_dim
        self.streak = self.streak + 1 if 2 * diag["active_units"] < d else 0
        if (
            self.warned
            or not self.streak
            or (self.streak < COLLAPSE_PATIENCE and record["epoch"] < self.epochs)
        ):
            return
        self.warned = True
        warnings.warn(
            f"posterior collapse: only {diag['active_units']} of {d} latent units are active at epoch "
            f"{record['epoch']} (KL {record['kl']:.3f} nats); consider KL warm-up, a weaker "
            "decoder or a smaller latent_dim",
            PosteriorCollapseWarning,
            stacklevel=3,  # the caller of `train`
        )
