"""The training loop: Adam on the -ELBO, one `engine.run_epoch` and one test evaluation per epoch.

Around each epoch: checkpoints into RUN_DIR (`checkpoint`), a graceful stop on SIGINT/SIGTERM
(`signals`), a NaN/inf guard that rolls back to the last good state with a lower learning rate,
the best epoch on a holdout and early stopping (`early_stop`), and data parallelism when launched
by torchrun (`distributed`).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab.config import TrainConfig, to_dict
from vaelab.data.dataset import Dataset
from vaelab.errors import VaelabError
from vaelab.evaluation.elbo import collapse_diagnostics, evaluate_elbo
from vaelab.files import atomic_write_json
from vaelab.io import CONFIG_FILE, run_config, save_weights
from vaelab.models.objectives import make_objective, objective_metrics
from vaelab.models.vae import VAE
from vaelab.training import checkpoint, distributed
from vaelab.training.checkpoint import Checkpoint, TrainState
from vaelab.training.early_stop import BestEpoch, carve_holdout, holdout_metrics
from vaelab.training.engine import Engine, EngineOptions, configure_threads, make_optimizer
from vaelab.training.signals import GracefulStop

EVAL_SEED = 12345  # fixed eps for the per-epoch test -ELBO, so epochs compare like for like

EpochCallback = Callable[[dict[str, Any]], None]


COLLAPSE_PATIENCE = 5  # early epochs often look collapsed before units switch on: don't cry wolf


class PosteriorCollapseWarning(UserWarning):
    """Most latent units carry no information about x (Var_x(E_q[z_u]) <= 0.01)."""


class TrainingStopped(Exception):
    """A stop was requested (SIGINT/SIGTERM); the checkpoint of ``epoch`` is saved."""

    def __init__(self, epoch: int, signum: int | None, history: list[dict[str, Any]]) -> None:
        super().__init__(f"training stopped after epoch {epoch}")
        self.epoch, self.signum, self.history = epoch, signum, history


def train(
    model: VAE,
    data: Dataset,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    progress: bool | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: Checkpoint | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``; report ``data.test`` after each epoch.

    Returns the history: one dict per epoch with ``epoch``, ``lr``, ``train_neg_elbo``,
    ``train_recon``, ``train_kl``, ``test_neg_elbo``, ``recon``, ``kl`` (test split, nats per
    example) and ``seconds`` (the epoch's training wall time). ``progress=None`` shows a bar on a
    terminal.

    ``run_dir``: write a checkpoint there at the start, every ``config.checkpoint_every`` epochs and
    at the end (plus ``model.safetensors``, the last checkpointed weights); SIGINT/SIGTERM then stop
    at the end of the epoch with a checkpoint and raise `TrainingStopped`. ``resume``: continue from
    a `Checkpoint` (its history starts the returned one); on CPU the result is bitwise identical to
    an uninterrupted run. A non-finite loss or weight rolls the epoch back and retries it with the
    lr times ``config.nan_lr_factor``, at most ``config.nan_retries`` times, then raises
    `VaelabError` with the last good weights in ``model`` (and RUN_DIR).

    Under torchrun every rank calls this: each trains on its slice of every global batch of
    ``config.batch_size`` and DDP averages the gradients; only rank 0 writes files.

    Each record also has ``kl_per_dim`` and ``active_units`` (test split,
    `collapse_diagnostics`). Warns once with `PosteriorCollapseWarning` once most latent units have
    been inactive for ``COLLAPSE_PATIENCE`` epochs in a row, or at the last epoch.

    ``config.holdout`` > 0 trains on the rest of ``data.train`` and adds ``val_neg_elbo`` (plus
    ``val_neg_iwae`` for the iwae objective) and ``best_epoch`` to each record; ``config.lr_drop``
    epochs without a better holdout score lower the lr, ``config.early_stop`` epochs end training.
    Either way ``model`` ends with the best holdout epoch's weights (the checkpoints keep the last
    epoch's), as does RUN_DIR's ``model.safetensors`` at every checkpoint.
    """
    ctx = distributed.context()
    device = model.device
    data, holdout = carve_holdout(data, config.holdout)
    holdout = None if holdout is None else holdout.to(device)
    data = data.to(device)
    if device.type == "cpu":
        configure_threads(config.threads)
    local_batch = distributed.local_batch_size(config.batch_size, len(data.train), ctx)
    torch.manual_seed(config.seed + ctx.rank)  # rank 0 draws exactly what a single process draws
    opt = make_optimizer(model, config.lr)
    order = torch.Generator().manual_seed(config.seed)  # the data order: one stream, same on all ranks
    history: list[dict[str, Any]] = []
    start = 0
    best = None if holdout is None else BestEpoch(config)
    if resume is not None:
        resume.restore(model, opt, order, ctx, config.seed)
        history, start = list(resume.history), resume.epoch
        best = None if holdout is None else BestEpoch.resumed(config, history, resume.best)
    engine = Engine(model, opt, EngineOptions.from_config(config))
    parallel = distributed.data_parallel(model, ctx)
    good = TrainState.capture(model, opt, order)  # the NaN guard's rollback target
    collapse = _CollapseMonitor(config.epochs, warn=ctx.is_main)
    saver = _Saver(run_dir, model, config, ctx, saved=start if resume is not None else None, best=best)
    saver.save(start, good, history)  # epoch 0 of a new run; already on disk for a resumed one
    last = start if best is not None and best.should_stop(start) else config.epochs  # stopped before
    with GracefulStop(enabled=run_dir is not None, quiet=not ctx.is_main) as stop:
        for epoch in range(start + 1, last + 1):
            for attempt in range(config.nan_retries + 1):
                perm = torch.randperm(len(data.train), generator=order)
                perm = distributed.shard_order(perm, config.batch_size, ctx).to(device)
                t0 = time.perf_counter()
                sums = engine.run_epoch(
                    data.train,
                    local_batch,
                    loss_fn=parallel(make_objective(config, epoch)),
                    progress=progress if ctx.is_main else False,
                    desc=f"epoch {epoch}/{config.epochs}",
                    perm=perm,
                )
                sums, finite = _epoch_end(sums, model, ctx)
                seconds = time.perf_counter() - t0
                if finite:
                    break
                _roll_back(good, model, opt, order, config, epoch, attempt, ctx)
            else:
                _give_up(good, model, opt, order, config, epoch, history, saver)
            train_neg_elbo, train_recon, train_kl = (sums / (ctx.world_size * len(perm))).tolist()
            test = evaluate_elbo(model, data.test, seed=EVAL_SEED)
            record = {
                "epoch": epoch,
                "lr": opt.param_groups[0]["lr"],
                "train_neg_elbo": train_neg_elbo,
                "train_recon": train_recon,
                "train_kl": train_kl,
                "test_neg_elbo": test["neg_elbo"],
                "recon": test["recon"],
                "kl": test["kl"],
                "seconds": seconds,
            }
            record.update(objective_metrics(model, data.test, config, epoch, seed=EVAL_SEED))
            if best is not None:
                record.update(holdout_metrics(model, holdout, config, epoch, EVAL_SEED, ctx))
                best.update(epoch, record, model)
                if best.lr_drop_due(epoch):
                    _lower_lr(opt, config.lr_drop_factor, epoch, best, ctx)
            collapse.check(model, data, record)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            good = TrainState.capture(model, opt, order)
            stopping = distributed.any_rank(stop.requested, ctx)  # all ranks stop at the same epoch
            early = best is not None and best.should_stop(epoch)  # the same on all ranks
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs or stopping or early:
                saver.save(epoch, good, history)
            if stopping:
                raise TrainingStopped(epoch, stop.signum, history)
            if early:
                break
    if best is not None:
        best.restore(model)
    model.eval()
    return history


def _epoch_end(sums: Tensor, model: VAE, ctx: distributed.Context) -> tuple[Tensor, bool]:
    """Sum the epoch's (3,) sums and a count of non-finite weights over ranks in one collective
    (one host sync) -> (global sums (3,), all finite?). A non-finite gradient shows up as
    non-finite weights after the optimizer step."""
    bad = torch.stack([(~p.detach().isfinite()).sum() for p in model.parameters()]).sum()
    packet = distributed.all_reduce_sum(torch.cat([sums.detach().float(), bad.float().view(1)]), ctx)
    *totals, n_bad = packet.tolist()
    return packet[:3], all(math.isfinite(v) for v in totals) and n_bad == 0


def _lower_lr(
    opt: torch.optim.Optimizer, factor: float, epoch: int, best: BestEpoch, ctx: distributed.Context
) -> None:
    """--lr-drop: multiply the lr by ``factor`` from the next epoch on."""
    before = opt.param_groups[0]["lr"]
    for group in opt.param_groups:
        group["lr"] *= factor
    if ctx.is_main:
        print(
            f"vaelab: no better holdout score since epoch {best.epoch}: lr {before:.3g} -> "
            f"{opt.param_groups[0]['lr']:.3g} from epoch {epoch + 1}",
            file=sys.stderr,
            flush=True,
        )


def _roll_back(
    good: TrainState,
    model: VAE,
    opt: torch.optim.Optimizer,
    order: torch.Generator,
    config: TrainConfig,
    epoch: int,
    attempt: int,
    ctx: distributed.Context,
) -> None:
    """Restore the state before this epoch (weights, optimizer, RNGs) and lower the lr."""
    good.restore(model, opt, order)
    for group in opt.param_groups:
        group["lr"] *= config.nan_lr_factor ** (attempt + 1)
    if ctx.is_main and attempt < config.nan_retries:
        print(
            f"vaelab: non-finite loss or gradient in epoch {epoch}; rolled back to the end of epoch "
            f"{epoch - 1}, retrying with lr {opt.param_groups[0]['lr']:.3g} "
            f"(retry {attempt + 1}/{config.nan_retries})",
            file=sys.stderr,
            flush=True,
        )


def _give_up(
    good: TrainState,
    model: VAE,
    opt: torch.optim.Optimizer,
    order: torch.Generator,
    config: TrainConfig,
    epoch: int,
    history: list[dict[str, Any]],
    saver: _Saver,
) -> None:
    """Restore the last good state, make sure it is checkpointed, and stop with a clear message."""
    good.restore(model, opt, order)
    saver.save(epoch - 1, good, history)
    lowest = opt.param_groups[0]["lr"] * config.nan_lr_factor**config.nan_retries
    where = f" (saved in {saver.run_dir})" if saver.run_dir is not None else ""
    raise VaelabError(
        f"training diverged: epoch {epoch} gave a non-finite loss or gradient in all "
        f"{config.nan_retries + 1} tries (the last with lr {lowest:.3g}); kept the last good "
        f"weights, from epoch {epoch - 1}{where}"
    )


class _Saver:
    """Writes checkpoints (and the run's ``model.safetensors``) into ``run_dir``, if there is one."""

    def __init__(
        self,
        run_dir: str | Path | None,
        model: VAE,
        config: TrainConfig,
        ctx: distributed.Context,
        saved: int | None,
        best: BestEpoch | None = None,
    ) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.model, self.config, self.ctx, self.saved, self.best = model, config, ctx, saved, best

    def save(self, epoch: int, state: TrainState, history: list[dict[str, Any]]) -> None:
        """Checkpoint ``epoch`` (a collective under torchrun) unless it is already on disk.
        ``self.model`` must hold ``state``'s weights."""
        if self.run_dir is None or epoch == self.saved:
            return
        best = None if self.best is None else self.best.weights
        checkpoint.save(self.run_dir, epoch, state, list(history), self.ctx, best=best)
        if self.ctx.is_main:
            # The run dir always loads: the last checkpointed weights, or the best on the holdout.
            save_weights(self.model, self.run_dir, best)
            if not (self.run_dir / CONFIG_FILE).exists():
                extra = {"train": to_dict(self.config), "world_size": self.ctx.world_size}
                atomic_write_json(self.run_dir / CONFIG_FILE, run_config(self.model.config, extra))
        self.saved = epoch


class _CollapseMonitor:
    """Adds ``kl_per_dim``/``active_units`` to each epoch's record; warns once about a collapse."""

    def __init__(self, epochs: int, warn: bool = True) -> None:
        self.epochs, self.streak, self.warned = epochs, 0, not warn  # only rank 0 warns

    def check(self, model: VAE, data: Dataset, record: dict[str, Any]) -> None:
        diag = collapse_diagnostics(model, data.test)
        record.update(kl_per_dim=diag["kl_per_dim"], active_units=diag["active_units"])
        d = model.config.latent_dim
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
            stacklevel=3,
        )
