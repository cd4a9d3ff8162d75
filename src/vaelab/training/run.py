"""A run directory as a library object: create, resume or open one; read and write its files.

RUN_DIR holds

- ``config.json``: the model's config, the training config (``train``) and the world size (`vaelab.io`);
- ``model.safetensors``: the weights: the last checkpoint's, or with a holdout the best epoch's;
- ``metrics.jsonl``: one JSON object per trained epoch, the records `train` returns;
- ``checkpoints/``: the newest checkpoints (`checkpoint`);
- ``.lock``: locked while a process trains the run (`lock`).

`Run.create` and `Run.resume` take the lock before they look at anything else, so two processes
never both train one folder; `Run.open` reads a run (finished or still training) without the lock.
``train(..., run_dir=...)`` writes its run through a `Run`, and so do the CLI commands.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaelab.config import RUN_TOML, TrainConfig, VAEConfig
from vaelab.data.dataset import Dataset, check_model_fit
from vaelab.data.sources import load_dataset, same_source
from vaelab.errors import CheckpointError, VaelabError
from vaelab.files import atomic_write_bytes, atomic_write_json
from vaelab.io import (
    CONFIG_FILE,
    EVALUATE_FILE,
    METRICS_FILE,
    read_config,
    read_metrics,
    run_config,
    save_model,
    save_weights,
)
from vaelab.models.vae import VAE, load
from vaelab.schema import from_dict, to_dict
from vaelab.training import checkpoint, distributed
from vaelab.training.checkpoint import Checkpoint, TrainState, checkpoint_dir, discard_after, read_latest
from vaelab.training.early_stop import carve_holdout
from vaelab.training.lock import LOCK_FILE, RunLock

SPLITS = ("test", "train", "holdout")


class Run:
    """One run directory. Get one with `create` (a new run), `resume` (train an existing run further)
    or `open` (read a run); the first two hold the run's lock until `close` (or the end of a
    ``with`` block).

    Under torchrun, `create` and `resume` do their file work on rank 0 and hand the result (or the
    error) to every rank; the writing methods do nothing on the other ranks.
    """

    def __init__(self, path: str | Path, *, writable: bool = False, main: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable  # made by create/resume: train may write it
        self.main = main  # False on the ranks other than 0 under torchrun
        self.checkpoint: Checkpoint | None = None  # `resume`: the checkpoint it continues from
        self._lock = RunLock()
        self._created = False  # the folder is ours: removed again at close if nothing was written
        self._model_config: VAEConfig | None = None
        self._train_config: TrainConfig | None = None

    def __repr__(self) -> str:
        return f"Run('{self.path}')"

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, force: bool = False, *, ctx: distributed.Context | None = None) -> Run:
        """Lock PATH (creating it) for a new run; `VaelabError` if another process trains it, or if
        it is not empty and ``force`` is False. With ``force`` the old run's config.json, metrics and
        checkpoints are removed when the new run writes its first files (`start`, `save_model`), so a
        command that fails before then (bad data, say) leaves the old run as it was."""
        run = cls(path, writable=True, main=(ctx or distributed.context()).is_main)

        def claim() -> None:
            run._created = not run.path.exists()
            run._lock.acquire(run.path)
            if any(p.name != LOCK_FILE for p in run.path.iterdir()) and not force:
                raise CheckpointError(
                    "'{p}' is not empty; pass {a.force:=True} to overwrite the run in it", p=run.path
                )

        run._on_main(claim, ctx)
        return run

    @classmethod
    def resume(
        cls,
        path: str | Path,
        changes: dict[str, Any] | None = None,
        *,
        ctx: distributed.Context | None = None,
    ) -> Run:
        """Lock the run in PATH to train it further from its newest good checkpoint (``run.checkpoint``;
        None when it stopped before its first one: it then starts again from epoch 0).

        ``changes``: `TrainConfig` fields to change, such as ``{"epochs": 20}`` (which ones make sense,
        those that say how long and where it trains rather than what an epoch computes, is the
        caller's choice; the CLI allows those its flags mark as such). ``run.model_config`` and
        ``run.train_config`` are the configs to train with. Nothing is written yet: `train` (through
        `start`) drops what was written after the checkpoint (later metrics lines, later or damaged
        checkpoints) and records the new settings in config.json, so a resume that fails before
        then (its data is not on this machine, say) leaves the run as it was.
        """
        ctx = ctx or distributed.context()
        run = cls(path, writable=True, main=ctx.is_main)

        def read() -> list[bytes]:
            run._lock_existing()
            return [json.dumps(read_config(run.path)).encode(), *read_latest(run.path)]

        blobs = run._on_main(read, ctx)
        try:
            doc = json.loads(blobs[0])
            run._model_config, run._train_config = _resumable(run.path, doc, changes or {})
            if len(blobs) > 1:
                run.checkpoint = Checkpoint.from_blobs(blobs[1:], f"'{run.path}' checkpoint")
        except BaseException:
            run.close()
            raise
        run._on_main(run._check_resume, ctx)
        return run

    @classmethod
    def attach(cls, path: str | Path, *, ctx: distributed.Context | None = None) -> Run:
        """Lock the existing run in PATH as it is (`train` with a ``resume`` checkpoint and a path)."""
        run = cls(path, writable=True, main=(ctx or distributed.context()).is_main)

        run._on_main(run._lock_existing, ctx)
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The run in PATH, to read (not locked); a one-line `VaelabError` unless its config.json reads."""
        run = cls(path)
        read_config(run.path)
        return run

    def close(self) -> None:
        """Release the lock; a folder `create` made and nothing was written into is removed again."""
        if self._lock.held and self._created:
            try:
                if not any(p.name != LOCK_FILE for p in self.path.iterdir()):
                    (self.path / LOCK_FILE).unlink()
                    self.path.rmdir()
            except OSError:
                pass  # something appeared in it: leave it
        self._lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock_existing(self) -> None:
        if not self.path.is_dir():
            raise CheckpointError(f"run directory '{self.path}' does not exist")
        self._lock.acquire(self.path)

    def _on_main(self, fn: Callable[[], Any], ctx: distributed.Context | None) -> list[bytes]:
        """``fn`` on rank 0 (its result or error for every rank); on an error the lock is released."""
        try:
            return distributed.on_main(fn, ctx or distributed.context())
        except BaseException:
            self.close()
            raise

    # ---- reading -------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """config.json, parsed and version-checked."""
        return read_config(self.path)

    @property
    def model_config(self) -> VAEConfig:
        if self._model_config is None:
            doc = self.config
            self._model_config = from_dict(VAEConfig, doc.get("model"), f"{self.path / CONFIG_FILE}: model")
        return self._model_config

    @property
    def train_config(self) -> TrainConfig | None:
        """How the run was trained (None for a run not made by `train`)."""
        if self._train_config is None:
            doc = self.config
            if "train" in doc:
                self._train_config = from_dict(TrainConfig, doc["train"], f"{self.path / CONFIG_FILE}: train")
        return self._train_config

    def load_model(
        self,
        device: str | torch.device = "cpu",
        *,
        encoder: torch.nn.Module | None = None,
        decoder: torch.nn.Module | None = None,
    ) -> VAE:
        """The model (config.json + model.safetensors), in eval mode on ``device``; a model with its
        own networks needs them passed in (see `VAE.from_pretrained`)."""
        return load(self.path, device=device, encoder=encoder, decoder=decoder)

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records ([] when it has none)."""
        return read_metrics(self.path)

    def data_source(self, source: str | None = None) -> str:
        """``source``, or the SOURCE the run was trained on."""
        if source:
            return source
        tcfg = self.train_config
        if tcfg is None:
            raise VaelabError(
                "'{p}' records no training data source; pass {a.source:=SOURCE}", p=self.path
            )
        if tcfg.data.startswith("torch:"):  # `vaelab.train` on a torch Dataset records no source
            raise VaelabError(
                "'{p}' was trained on a torch Dataset ({t}) from Python; pass {a.source:=SOURCE}, "
                "or evaluate it in Python",
                p=self.path, t=tcfg.data.removeprefix("torch:"),
            )  # fmt: skip
        return tcfg.data

    def load_data(
        self, source: str | None = None, options: dict[str, Any] | None = None, split: str = "test"
    ) -> Dataset:
        """SOURCE (default: the run's training source), loaded with the run's recorded data options
        when it is the run's training source, overridden by ``options``; checked against the model
        (input shape, likelihood range, a CVAE's labels).

        ``split`` "train" puts the training rows the run trained on (the rest after its holdout; their
        pixels drawn once, `Split.fixed_train`) in the dataset's ``test`` split, what evaluation reads;
        "holdout", the rows a run trained with a holdout set aside. ``test_split`` names it.
        """
        if split not in SPLITS:
            raise VaelabError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        source = self.data_source(source)
        mcfg, tcfg = self.model_config, self.train_config
        # The run's recorded config when SOURCE is its training source, else None.
        ours = tcfg if tcfg is not None and same_source(tcfg.data, source) else None
        recorded = ours.data_options if ours is not None else {}
        data = load_dataset(source, likelihood=mcfg.likelihood, **{**recorded, **(options or {})})
        check_model_fit(data, mcfg)
        if split == "test":
            return data
        fraction = ours.holdout if ours is not None else 0.0
        if split == "holdout" and not fraction:
            if tcfg is None or not tcfg.holdout:
                raise VaelabError(
                    "{a.split:='holdout'}: '{p}' was trained without {f.holdout}", f=TrainConfig, p=self.path
                )
            raise VaelabError(
                "{a.split:='holdout'}: '{p}' held out rows of '{d}', not of '{s}'",
                p=self.path, d=tcfg.data, s=source,
            )
        rest, holdout = carve_holdout(data, fraction)
        rows = holdout if split == "holdout" else rest.fixed_train()
        assert rows is not None  # the holdout is there: fraction > 0
        return dataclasses.replace(data, test=rows, test_split=split)

    # ---- writing (rank 0) ----------------------------------------------------------------

    def start(
        self, model: VAE, config: TrainConfig, resume: Checkpoint | None = None, world_size: int = 1
    ) -> None:
        """Make the folder describe the run `train` is about to train: a new run clears what an old
        one left (config.json first: a half-cleared folder is no longer a run), then writes an empty
        metrics.jsonl, the initial weights and config.json, in that order (once config.json exists
        the folder loads and resumes); a resumed one is cut back to ``resume`` (`rewind`)."""
        if not self.main:
            return
        self._check_writable()
        if resume is None:
            self.clear()
            atomic_write_bytes(self.path / METRICS_FILE, b"")
            self.save_model(model, train_extra(config, world_size))
        else:
            self.rewind(resume.epoch, resume.history, model.config, config, world_size)

    def clear(self) -> None:
        """Remove the run files of what was in the folder: config.json first, metrics, the stored
        evaluation and run configuration, checkpoints (a README.md is the model card's to handle)."""
        if not self.main:
            return
        self._check_writable()
        for name in (CONFIG_FILE, METRICS_FILE, EVALUATE_FILE, RUN_TOML):
            (self.path / name).unlink(missing_ok=True)
        if checkpoint_dir(self.path).is_dir():
            shutil.rmtree(checkpoint_dir(self.path))

    def rewind(
        self,
        epoch: int,
        history: list[dict[str, Any]],
        model_config: VAEConfig,
        config: TrainConfig,
        world_size: int = 1,
    ) -> None:
        """Drop checkpoints after ``epoch``, make metrics.jsonl ``history`` and record ``config``."""
        if not self.main:
            return
        self._check_writable()
        discard_after(self.path, epoch)
        atomic_write_bytes(self.path / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history).encode())
        atomic_write_json(self.path / CONFIG_FILE, run_config(model_config, train_extra(config, world_size)))

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One more line of metrics.jsonl, on disk (fsync) before this returns."""
        if not self.main:
            return
        with (self.path / METRICS_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_model(self, model: VAE, extra: dict[str, Any] | None = None) -> None:
        """Write model.safetensors and config.json (with ``extra`` sections, e.g. `train_extra`)."""
        if self.main:
            self._check_writable()
            save_model(model, self.path, extra)

    def save_checkpoint(
        self,
        epoch: int,
        state: TrainState,
        history: list[dict[str, Any]],
        model: VAE,
        best: dict[str, torch.Tensor] | None = None,
        ctx: distributed.Context | None = None,
    ) -> None:
        """Checkpoint ``epoch`` (`checkpoint.save`: a collective under torchrun, every rank calls it),
        then model.safetensors: ``model``'s weights (which must be ``state``'s), or the best holdout
        epoch's ``best``, so the folder always loads."""
        checkpoint.save(self.path, epoch, state, list(history), ctx or distributed.context(), best=best)
        self.save_weights(model, best)

    def save_weights(self, model: VAE, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write model.safetensors only: ``model``'s weights, or other ``weights`` of it."""
        if self.main:
            save_weights(model, self.path, weights)

    def _check_writable(self) -> None:
        if not self.writable:
            raise VaelabError(f"{self!r} was opened to read; use Run.create or Run.resume to write it")

    def _check_resume(self) -> None:
        """Whether the run can go on from ``self.checkpoint`` with ``self.train_config`` (rank 0)."""
        ckpt, tcfg = self.checkpoint, self._train_config
        assert tcfg is not None
        if ckpt is None:
            if read_metrics(self.path):
                raise CheckpointError(
                    f"'{self.path}' has metrics but no checkpoint to resume from (trained without them?)"
                )
        elif tcfg.epochs < ckpt.epoch:
            raise VaelabError(
                "epochs {v} ({f.epochs}) is below the {done} epochs '{p}' already trained",
                f=TrainConfig, v=tcfg.epochs, done=ckpt.epoch, p=self.path,
            )


def train_extra(config: TrainConfig, world_size: int = 1) -> dict[str, Any]:
    """The config.json sections a trained run adds to the model's: ``train`` and ``world_size``."""
    return {"train": to_dict(config), "world_size": world_size}


def _resumable(path: Path, doc: dict[str, Any], changes: dict[str, Any]) -> tuple[VAEConfig, TrainConfig]:
    """A run's configs to resume it, ``changes`` applied to the training one."""
    where = f"{path / CONFIG_FILE}"
    if "train" not in doc:
        raise CheckpointError(f"'{where}' has no training section: '{path}' was not made by vaelab train")
    if "prior_fit" in doc:  # its weights exist nowhere else: starting it again would lose them
        raise CheckpointError(
            "'{p}' was written by vaelab fit-prior and has nothing to resume; to train it further, "
            "start a new run from it ({f.init_from:={s!r}})",
            f=TrainConfig, p=path, s=str(path),
        )
    mcfg = from_dict(VAEConfig, doc.get("model"), f"{where}: model")
    tcfg = from_dict(TrainConfig, doc["train"], f"{where}: train")
    if changes.get("early_stop") and not tcfg.holdout:
        raise VaelabError(
            "early stopping ({f.early_stop}) needs a holdout, and '{p}' was trained without one "
            "({f.holdout}; its training data cannot change on a resume)",
            f=TrainConfig, p=path,
        )
    return mcfg, dataclasses.replace(tcfg, **changes)

