"""The training loop: Adam on the -ELBO, one `engine.run_epoch` and one test evaluation per epoch."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .config import TrainConfig
from .data import Dataset
from .engine import Engine, EngineOptions, configure_threads, make_optimizer
from .errors import VaelabError
from .evaluate import collapse_diagnostics, evaluate_elbo
from .model import VAE
from .objectives import make_objective, objective_metrics

EVAL_SEED = 12345  # fixed eps for the per-epoch test -ELBO, so epochs compare like for like

EpochCallback = Callable[[dict[str, Any]], None]


COLLAPSE_PATIENCE = 5  # early epochs often look collapsed before units switch on: don't cry wolf


class PosteriorCollapseWarning(UserWarning):
    """Most latent units carry no information about x (Var_x(E_q[z_u]) <= 0.01)."""


def train(
    model: VAE,
    data: Dataset,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``; report ``data.test`` after each epoch.

    Returns the history: one dict per epoch with ``epoch``, ``train_neg_elbo``, ``train_recon``,
    ``train_kl``, ``test_neg_elbo``, ``recon``, ``kl`` (test split, nats per example) and
    ``seconds`` (the epoch's training wall time), plus ``kl_per_dim`` and ``active_units`` (test split,
    `collapse_diagnostics`). ``progress=None`` shows a bar on a terminal. Warns once with
    `PosteriorCollapseWarning` once most latent units have been inactive for ``COLLAPSE_PATIENCE``
    epochs in a row, or at the last epoch.
    """
    device = model.device
    data = data.to(device)
    if device.type == "cpu":
        configure_threads(config.threads)
    torch.manual_seed(config.seed)
    opt = make_optimizer(model, config.lr)
    engine = Engine(model, opt, EngineOptions.from_config(config))
    history: list[dict[str, Any]] = []
    collapse = _CollapseMonitor(config.epochs)
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        sums = engine.run_epoch(
            data.train,
            config.batch_size,
            loss_fn=make_objective(config, epoch),
            progress=progress,
            desc=f"epoch {epoch}/{config.epochs}",
        )
        train_neg_elbo, train_recon, train_kl = (sums / len(data.train)).tolist()
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_neg_elbo):
            raise VaelabError(f"training diverged at epoch {epoch} (non-finite loss); try a smaller --lr")
        test = evaluate_elbo(model, data.test, seed=EVAL_SEED)
        record = {
            "epoch": epoch,
            "train_neg_elbo": train_neg_elbo,
            "train_recon": train_recon,
            "train_kl": train_kl,
            "test_neg_elbo": test["neg_elbo"],
            "recon": test["recon"],
            "kl": test["kl"],
            "seconds": seconds,
        }
        record.update(objective_metrics(model, data.test, config, epoch, seed=EVAL_SEED))
        collapse.check(model, data, record)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    return history


class _CollapseMonitor:
    """Adds ``kl_per_dim``/``active_units`` to each epoch's record; warns once about a collapse."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.streak, self.warned = epochs, 0, False

    def check(self, model: VAE, data: Dataset, record: dict[str, Any]) -> None:
        diag = collapse_diagnostics(model, data.test)
        record.update(kl_per_dim=diag["kl_per_dim"], active_units=diag["active_units"])
        d = len(diag["kl_per_dim"])
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
            f"{record['epoch']} (KL {sum(diag['kl_per_dim']):.3f} nats); consider KL warm-up, a weaker "
            "decoder or a smaller latent_dim",
            PosteriorCollapseWarning,
            stacklevel=3,
        )
