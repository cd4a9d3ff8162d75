"""The training loop: Adam on the -ELBO, one `engine.run_epoch` and one test evaluation per epoch.

`train` is a short loop over epochs; what happens around them is in small pieces:

- `Callback`s (`callbacks`) at the start, at the end of each epoch and at the end: the holdout's best
  epoch, lr drops and early stopping (`early_stop.EarlyStopping`), the posterior-collapse warning
  (`callbacks.CollapseMonitor`), the caller's own, and the run's metrics.jsonl (`run.Run`);
- `_Trainer.epoch`: one epoch and its record, with the NaN guard that rolls an epoch back and retries
  it with a lower lr;
- `_Checkpointer`: checkpoints into the run directory (`checkpoint`); a graceful stop on
  SIGINT/SIGTERM (`signals`); data parallelism when launched by torchrun (`distributed`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.data.dataset import Dataset
from vaelab.data.torch_data import ItemDataset, as_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation.elbo import evaluate_elbo
from vaelab.models.objectives import make_objective, objective_metrics
from vaelab.models.vae import VAE
from vaelab.training import distributed
from vaelab.training.callbacks import Callback, CollapseMonitor, EpochFunction, set_model
from vaelab.training.checkpoint import Checkpoint, TrainState
from vaelab.training.early_stop import EarlyStopping, carve_holdout
from vaelab.training.engine import Engine, EngineOptions, configure_threads, make_optimizer
from vaelab.training.run import Run
from vaelab.training.signals import GracefulStop

EVAL_SEED = 12345  # fixed eps for the per-epoch test -ELBO, so epochs compare like for like

EpochCallback = Callable[[dict[str, Any]], None]


class TrainingStopped(Exception):
    """A stop was requested (SIGINT/SIGTERM); the checkpoint of ``epoch`` is saved."""

    def __init__(self, epoch: int, signum: int | None, history: list[dict[str, Any]]) -> None:
        super().__init__(f"training stopped after epoch {epoch}")
        self.epoch, self.signum, self.history = epoch, signum, history


def train(
    model: VAE,
    data: Dataset | ItemDataset | tuple[ItemDataset, ItemDataset],
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    progress: bool | None = None,
    *,
    test: ItemDataset | None = None,
    run_dir: str | Path | Run | None = None,
    resume: Checkpoint | None = None,
    callbacks: Sequence[Callback] = (),
    set_threads: bool = True,
    seed_rng: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``; report ``data.test`` after each epoch.

    ``data``: a `Dataset` (`load_dataset`, `vaelab.data.from_torch`), or map-style torch Datasets
    whose items are ``x`` or ``(x, y)``: the training set with ``test=`` the test set, or a tuple
    (train, test). Those are converted with `vaelab.data.from_torch`'s defaults (gathered into
    memory when they fit, else streamed) and checked against ``model.config`` (input shape, the
    likelihood's value range, a CVAE's labels); call ``from_torch`` yourself for its options.

    Returns the history: one dict per epoch with ``epoch``, ``lr``, ``train_neg_elbo``,
    ``train_recon``, ``train_kl``, ``test_neg_elbo``, ``recon``, ``kl`` (test split, nats per
    example) and ``seconds`` (the epoch's training wall time). ``progress=None`` shows a bar on a
    terminal. ``on_epoch(record)`` and each of ``callbacks`` (`Callback`) are called after every
    epoch (a callback may add keys to the record, and may stop training).

    ``run_dir`` (a path, or a `Run` from `Run.create`/`Run.resume`): the run directory. ``train``
    writes config.json and the initial weights there, one line of ``metrics.jsonl`` per epoch, a
    checkpoint at the start, every ``config.checkpoint_every`` epochs and at the end, and
    ``model.safetensors`` (the last checkpointed weights); SIGINT/SIGTERM then stop at the end of the
    epoch with a checkpoint and raise `TrainingStopped`. A path is locked while training: a new run
    (no ``resume``) needs an empty folder (`Run.create`; pass ``Run.create(path, force=True)`` to
    overwrite one). ``resume``: continue from a `Checkpoint` (its history starts the returned one; a
    `Run.resume` run continues from its ``checkpoint`` by default); on CPU the result is bitwise
    identical to an uninterrupted run. A non-finite loss or weight rolls the epoch back and retries it
    with the lr times ``config.nan_lr_factor``, at most ``config.nan_retries`` times, then raises
    `VaelabError` with the last good weights in ``model`` (and RUN_DIR).

    Process-wide state: with ``set_threads`` (the default) on CPU, torch's intra-op thread count is
    set from ``config.threads`` (`engine.configure_threads`; 0 picks one for this machine) and stays
    so after ``train`` returns; False leaves it alone. With ``seed_rng`` (the default) torch's global
    RNG, which draws the training noise, is seeded with ``config.seed`` (plus the rank) so that a run
    depends on its config only; False keeps the caller's RNG state. A resumed run restores the RNG
    states of its checkpoint either way. The CLI uses both defaults.

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
    data = as_dataset(data, test, model.config)
    if data.meta.get("format") == "torch" and not config.data.startswith("torch:"):
        # config.json must not name a source (such as the default "digits") the run did not train on
        config = dataclasses.replace(config, data=f"torch:{data.name}")
    ctx = distributed.context()
    run, owned = _open_run(run_dir, resume, ctx)
    if resume is None and run is not None:
        resume = run.checkpoint
    cbs: list[Callback] = []
    try:
        if model.device.type == "cpu" and set_threads:
            configure_threads(config.threads)
        if seed_rng:
            torch.manual_seed(config.seed + ctx.rank)  # rank 0 draws exactly what a single process draws
        trainer = _Trainer(model, data, config, ctx, progress, resume)
        if run is not None:
            distributed.on_main(lambda: run.start(model, config, resume, ctx.world_size), ctx)
        cbs = _callbacks(trainer, on_epoch, callbacks, run)
        saver = _Checkpointer(run, model, ctx, trainer.early, saved=resume.epoch if resume else None)
        history = trainer.history
        saver.save(trainer.start, trainer.good, history)  # epoch 0 of a new run; on disk for a resumed one
        set_model(cbs, model, config)
        for cb in cbs:
            cb.on_train_start(list(history))
        with GracefulStop(enabled=run is not None, quiet=not ctx.is_main) as stop:
            epoch = trainer.start
            while epoch < config.epochs and not _stop_asked(cbs):
                epoch += 1
                record = trainer.epoch(epoch, saver)
                history.append(record)
                for cb in cbs:
                    cb.on_epoch_end(record)
                trainer.good = TrainState.capture(model, trainer.opt, trainer.order)
                stopping = distributed.any_rank(stop.requested, ctx)  # all ranks stop at the same epoch
                last = epoch == config.epochs or stopping or _stop_asked(cbs)
                if epoch % config.checkpoint_every == 0 or last:
                    saver.save(epoch, trainer.good, history)
                if stopping:
                    raise TrainingStopped(epoch, stop.signum, history)
        for cb in cbs:
            cb.on_train_end(history)
        model.eval()
        return history
    finally:
        for cb in cbs:  # however training ended
            getattr(cb, "close", lambda: None)()  # a duck-typed callback may have no close
        if owned and run is not None:  # owned: train opened the run, so it is there
            run.close()


def _stop_asked(cbs: list[Callback]) -> bool:
    return any(getattr(cb, "stop", False) for cb in cbs)


def _open_run(
    run_dir: str | Path | Run | None, resume: Checkpoint | None, ctx: distributed.Context
) -> tuple[Run | None, bool]:
    """-> (the run to write, whether ``train`` opened it and must close it)."""
    if run_dir is None:
        return None, False
    if isinstance(run_dir, Run):
        if not run_dir.writable:
            raise VaelabError(
                f"{run_dir!r} was opened to read; train into Run.create(...) or Run.resume(...)"
            )
        return run_dir, False
    if resume is None:
        return Run.create(run_dir, ctx=ctx), True
    return Run.attach(run_dir, ctx=ctx), True


def _callbacks(
    trainer: _Trainer, on_epoch: EpochCallback | None, callbacks: Sequence[Callback], run: Run | None
) -> list[Callback]:
    """In order: those that complete the record, the caller's, then the one that logs it."""
    cbs: list[Callback] = [] if trainer.early is None else [trainer.early]
    cbs.append(
        CollapseMonitor(trainer.model, trainer.data.test, trainer.config.epochs, warn=trainer.ctx.is_main)
    )
    cbs += list(callbacks)
    if on_epoch is not None:
        cbs.append(EpochFunction(on_epoch))
    if run is not None and run.main:
        cbs.append(_MetricsLog(run))
    return cbs


class _MetricsLog(Callback):
    """Appends each epoch's record to the run's metrics.jsonl."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.run.append_metrics(record)


class _Trainer:
    """The model, optimizer, data order and engine of one `train` call, and one epoch of it."""

    def __init__(
        self,
        model: VAE,
        data: Dataset,
        config: TrainConfig,
        ctx: distributed.Context,
        progress: bool | None,
        resume: Checkpoint | None,
    ) -> None:
        device = model.device
        data, holdout = carve_holdout(data, config.holdout)
        self.model, self.data, self.config, self.ctx, self.progress = (
            model,
            data.to(device),
            config,
            ctx,
            progress,
        )
        self.local_batch = distributed.local_batch_size(config.batch_size, len(data.train), ctx)
        self.opt = make_optimizer(model, config.lr)
        self.order = torch.Generator().manual_seed(
            config.seed
        )  # the data order: one stream, same on all ranks
        self.history: list[dict[str, Any]] = []
        self.start = 0
        if resume is not None:
            resume.restore(model, self.opt, self.order, ctx, config.seed)
            self.history, self.start = list(resume.history), resume.epoch
        self.early = None
        if holdout is not None:
            self.early = EarlyStopping(
                model,
                holdout.to(device),
                config,
                self.opt,
                ctx,
                EVAL_SEED,
                history=None if resume is None else self.history,
                best_weights=None if resume is None else resume.best,
            )
        self.engine = Engine(model, self.opt, EngineOptions.from_config(config))
        self.parallel = distributed.data_parallel(model, ctx)
        self.good = TrainState.capture(model, self.opt, self.order)  # the NaN guard's rollback target

    def epoch(self, epoch: int, saver: _Checkpointer) -> dict[str, Any]:
        """Train epoch ``epoch`` (retried after a non-finite loss or weight) -> its record."""
        model, config, ctx, opt = self.model, self.config, self.ctx, self.opt
        for attempt in range(config.nan_retries + 1):
            perm = torch.randperm(len(self.data.train), generator=self.order)
            perm = distributed.shard_order(perm, config.batch_size, ctx).to(model.device)
            self.data.train.prefetch(perm, self.local_batch)  # streamed torch Datasets read ahead
            t0 = time.perf_counter()
            sums = self.engine.run_epoch(
                self.data.train,
                self.local_batch,
                loss_fn=self.parallel(make_objective(config, epoch)),
                progress=self.progress if ctx.is_main else False,
                desc=f"epoch {epoch}/{config.epochs}",
                perm=perm,
            )
            sums, finite = _epoch_end(sums, model, ctx)
            seconds = time.perf_counter() - t0
            if finite:
                break
            self._roll_back(epoch, attempt)
        else:
            self._give_up(epoch, saver)
        train_neg_elbo, train_recon, train_kl = (sums / (ctx.world_size * len(perm))).tolist()
        test = evaluate_elbo(model, self.data.test, seed=EVAL_SEED)
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
        record.update(objective_metrics(model, self.data.test, config, epoch, seed=EVAL_SEED))
        return record

    def _roll_back(self, epoch: int, attempt: int) -> None:
        """The NaN guard: restore the state before this epoch (weights, optimizer, RNGs), lower the lr."""
        self.good.restore(self.model, self.opt, self.order)
        for group in self.opt.param_groups:
            group["lr"] *= self.config.nan_lr_factor ** (attempt + 1)
        if self.ctx.is_main and attempt < self.config.nan_retries:
            print(
                f"vaelab: non-finite loss or gradient in epoch {epoch}; rolled back to the end of epoch "
                f"{epoch - 1}, retrying with lr {self.opt.param_groups[0]['lr']:.3g} "
                f"(retry {attempt + 1}/{self.config.nan_retries})",
                file=sys.stderr,
                flush=True,
            )

    def _give_up(self, epoch: int, saver: _Checkpointer) -> None:
        """Restore the last good state, make sure it is checkpointed, and stop with a clear message."""
        config = self.config
        self.good.restore(self.model, self.opt, self.order)
        saver.save(epoch - 1, self.good, self.history)
        lowest = self.opt.param_groups[0]["lr"] * config.nan_lr_factor**config.nan_retries
        where = f" (saved in {saver.run.path})" if saver.run is not None else ""
        raise VaelabError(
            f"training diverged: epoch {epoch} gave a non-finite loss or gradient in all "
            f"{config.nan_retries + 1} tries (the last with lr {lowest:.3g}); kept the last good "
            f"weights, from epoch {epoch - 1}{where}"
        )


def _epoch_end(sums: Tensor, model: VAE, ctx: distributed.Context) -> tuple[Tensor, bool]:
    """Sum the epoch's (3,) sums and a count of non-finite weights over ranks in one collective
    (one host sync) -> (global sums (3,), all finite?). A non-finite gradient shows up as
    non-finite weights after the optimizer step."""
    bad = torch.stack([(~p.detach().isfinite()).sum() for p in model.parameters()]).sum()
    packet = distributed.all_reduce_sum(torch.cat([sums.detach().float(), bad.float().view(1)]), ctx)
    *totals, n_bad = packet.tolist()
    return packet[:3], all(math.isfinite(v) for v in totals) and n_bad == 0


class _Checkpointer:
    """Writes checkpoints (and the run's ``model.safetensors``) into the run, if there is one."""

    def __init__(
        self,
        run: Run | None,
        model: VAE,
        ctx: distributed.Context,
        early: EarlyStopping | None,
        saved: int | None,
    ) -> None:
        self.run, self.model, self.ctx, self.early, self.saved = run, model, ctx, early, saved

    def save(self, epoch: int, state: TrainState, history: list[dict[str, Any]]) -> None:
        """Checkpoint ``epoch`` (a collective under torchrun) unless it is already on disk.
        ``self.model`` must hold ``state``'s weights."""
        if self.run is None or epoch == self.saved:
            return
        best = None if self.early is None else self.early.weights
        self.run.save_checkpoint(epoch, state, history, self.model, best, self.ctx)
        self.saved = epoch
