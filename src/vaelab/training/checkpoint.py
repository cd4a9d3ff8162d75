"""Checkpoints: everything needed to continue a run exactly where it stopped. No pickle.

``RUN_DIR/checkpoints/epoch-000012/`` holds

- ``model.safetensors``: the weights;
- ``optimizer.pt``: the optimizer's state_dict (torch.save; read back with ``weights_only=True``);
- ``best.safetensors``: with a holdout (early_stop.py), the weights of the best epoch so far;
- ``state.json``: the epoch, the history (metrics.jsonl lines), the data order (the state of the
  generator that shuffles every epoch), each rank's RNG states (torch CPU and CUDA, numpy, python)
  and the sha256 of the two other files.

A checkpoint is assembled in a hidden temp folder, fsynced and renamed into place in one step, so a
folder named ``epoch-*`` is always complete; the previous one is kept until a newer one is in place,
and loading falls back to it if the newest fails its checksums. The RNG states and their JSON form
are in rng.py, the lock that keeps a second process out of a run directory in lock.py.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError  # what torch.load(weights_only=True) raises on anything else
from typing import Any

import torch
from torch import Tensor

from vaelab.errors import CheckpointError
from vaelab.files import _umask, fsync_dir
from vaelab.training.distributed import Context, all_gather_bytes
from vaelab.training.rng import (
    b64,
    derived_seed,
    rng_from_json,
    rng_state,
    rng_to_json,
    seed_rngs,
    set_rng_state,
    unb64,
)
from vaelab.training.validate import check_fit, check_state
from vaelab.version import __version__

FORMAT_NAME = "vaelab-checkpoint"
FORMAT_VERSION = 1
DIR_NAME = "checkpoints"
KEEP = 2  # the newest checkpoint and the one before it
MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.safetensors", "optimizer.pt", "state.json"
BEST_FILE = "best.safetensors"
_NAME = re.compile(r"^epoch-(\d{6,})$")
_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")  # optimizer options that are not maths


# ---- in-memory state: the NaN guard's rollback target and what a checkpoint saves ----------


@dataclass
class TrainState:
    """Weights, optimizer state, this rank's RNG states and the data-order generator's state."""

    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    data_order: Tensor

    @classmethod
    def capture(
        cls, model: torch.nn.Module, opt: torch.optim.Optimizer, order: torch.Generator
    ) -> TrainState:
        """A detached copy of the current state (clones, so training on does not change it)."""
        device = next(model.parameters()).device
        return cls(
            model={k: v.detach().clone() for k, v in model.state_dict().items()},
            optimizer=copy.deepcopy(opt.state_dict()),
            rng=rng_state(device),
            data_order=order.get_state(),
        )

    def restore(self, model: torch.nn.Module, opt: torch.optim.Optimizer, order: torch.Generator) -> None:
        device = next(model.parameters()).device
        # How the update runs (fused, capturable, ...) suits this device, whatever the saved run used.
        impl = [{k: g[k] for k in _IMPLEMENTATION if k in g} for g in opt.param_groups]
        try:
            model.load_state_dict(self.model)
            opt.load_state_dict(copy.deepcopy(self.optimizer))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint does not match the model: {str(e).splitlines()[0]}") from None
        for group, kept in zip(opt.param_groups, impl, strict=True):
            group.update(kept)
            on_device = group.get("capturable") or group.get("fused")
            for p in group["params"]:
                state = opt.state.get(p, {})
                if isinstance(state.get("step"), Tensor):  # Adam keeps it on the host unless fused/capturable
                    where = p.device if on_device else torch.device("cpu")
                    state["step"] = state["step"].to(device=where, dtype=torch.float32)
        set_rng_state(self.rng, device)
        order.set_state(self.data_order)


# ---- on disk ---------------------------------------------------------------------------------


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / DIR_NAME


def _epoch_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders, newest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(e, p) for p in root.iterdir() if p.is_dir() and (e := _epoch_of(p)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def save(
    run_dir: str | Path,
    epoch: int,
    state: TrainState,
    history: list[dict],
    ctx: Context,
    best: dict[str, Tensor] | None = None,
) -> None:
    """Write checkpoint ``epoch`` (collective: every rank calls it; rank 0 writes).

    Each rank contributes its RNG states; rank 0 writes the folder atomically and prunes old ones.
    ``best``: the best holdout epoch's weights, kept beside the current ones.
    """
    states = all_gather_bytes(json.dumps(rng_to_json(state.rng)).encode(), ctx)
    if not ctx.is_main:
        return
    buf = io.BytesIO()
    torch.save(_to_cpu(state.optimizer), buf)
    files = {MODEL_FILE: _safetensors(state.model), OPTIM_FILE: buf.getvalue()}
    if best is not None:
        files[BEST_FILE] = _safetensors(best)
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vaelab_version": __version__,
        "epoch": epoch,
        "world_size": ctx.world_size,
        "data_order": {"generator": "cpu, one randperm per epoch", "state": b64(state.data_order)},
        "rng": [json.loads(s) for s in states],
        "history": history,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    files[STATE_FILE] = (json.dumps(doc) + "\n").encode()
    _write_folder(checkpoint_dir(run_dir), f"epoch-{epoch:06d}", files)


def _safetensors(weights: dict[str, Tensor]) -> bytes:
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    return st_save(tensors, metadata={"format": FORMAT_NAME})


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _write_folder(root: Path, name: str, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
        for fname, data in files.items():
            with open(tmp / fname, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        final = root / name
        if final.exists():  # only after falling back past a bad newest checkpoint: replace it
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    _prune(root)


def _prune(root: Path) -> None:
    """Keep the newest KEEP checkpoints; drop older ones and temp folders left by a crash."""
    for p in list_checkpoints(root.parent)[KEEP:]:
        _remove(p)
    for p in root.glob(".epoch-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: first renamed out of the ``epoch-*`` namespace in one step, so
    an interrupted deletion never leaves a half-deleted folder that looks like a checkpoint."""
    doomed = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.replace(path, doomed / path.name)
    shutil.rmtree(doomed, ignore_errors=True)


def read_latest(run_dir: str | Path) -> list[bytes]:
    """The newest checkpoint that passes its checksums as [model, optimizer, state] bytes, plus the
    best holdout weights when it has them, or []."""
    for path in list_checkpoints(run_dir):
        try:
            blobs = [(path / f).read_bytes() for f in (MODEL_FILE, OPTIM_FILE, STATE_FILE)]
            doc = json.loads(blobs[2])
            names = [MODEL_FILE, OPTIM_FILE] + ([BEST_FILE] if BEST_FILE in doc["files"] else [])
            if len(names) == 3:
                blobs.append((path / BEST_FILE).read_bytes())
            for name, data in zip(names, blobs[:2] + blobs[3:], strict=True):
                if hashlib.sha256(data).hexdigest() != doc["files"][name]:
                    raise ValueError(f"{name} fails its checksum")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            print(f"vaelab: skipping damaged checkpoint {path} ({str(e)[:200]})", file=sys.stderr)
            continue
        return blobs
    return []


def discard_after(run_dir: str | Path, epoch: int) -> None:
    """Remove checkpoints newer than ``epoch`` (damaged ones skipped when resuming)."""
    for p in list_checkpoints(run_dir):
        e = _epoch_of(p)
        if e is not None and e > epoch:
            _remove(p)


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``rng`` has one entry per rank of the run that wrote it."""

    epoch: int
    world_size: int
    history: list[dict[str, Any]]
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: list[dict[str, Any]]
    data_order: Tensor
    best: dict[str, Tensor] | None = None  # the best holdout epoch's weights (early_stop.py)
    where: str = "checkpoint"  # how messages name it

    @classmethod
    def from_blobs(cls, blobs: list[bytes], where: str = "checkpoint") -> Checkpoint:
        """Parse [model.safetensors, optimizer.pt, state.json(, best.safetensors)] bytes (see
        `read_latest`)."""
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        _UNREADABLE = (  # what torch.load, safetensors and the JSON fields raise on a damaged file
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
            UnpicklingError,
            OverflowError,
            AttributeError,
            IndexError,
            EOFError,
            RecursionError,
            SafetensorError,
        )

        model_b, optim_b, state_b, *best_b = blobs
        try:
            doc = json.loads(state_b)
        except (ValueError, RecursionError) as e:  # also too deep, or integers past the digit limit
            raise CheckpointError(f"{where}: state.json is not valid JSON: {str(e)[:200]}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{where}: state.json is not a vaelab checkpoint")
        if doc.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: checkpoint version {doc.get('version')!r}; "
                f"this vaelab reads version {FORMAT_VERSION}"
            )
        try:
            optimizer = torch.load(io.BytesIO(optim_b), weights_only=True, map_location="cpu")
            ckpt = cls(
                epoch=doc["epoch"],  # checked below, by `validate.check_state`
                world_size=doc["world_size"],
                history=doc["history"],
                model=st_load(model_b),
                optimizer=optimizer,
                rng=[rng_from_json(r) for r in doc["rng"]],
                data_order=unb64(doc["data_order"]["state"]),
                best=st_load(best_b[0]) if best_b else None,
                where=where,
            )
        except _UNREADABLE as e:
            raise CheckpointError(
                f"{where} is unreadable: {(str(e).splitlines() or [type(e).__name__])[0]}"
            ) from None
        check_state(ckpt, where)
        return ckpt

    def restore(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        order: torch.Generator,
        ctx: Context,
        seed: int,
    ) -> None:
        """Load this checkpoint into ``model``, ``opt``, the global RNGs and ``order``.

        With the world size it was written with, each rank gets its own RNG states back. With
        another one they cannot map: they are reseeded from (seed, epoch, rank), while weights,
        optimizer and the data order still continue exactly. Everything is checked against ``model``
        and ``opt`` first (`validate.check_fit`): a bad checkpoint changes nothing."""
        check_fit(self, model, opt, self.where)
        device = next(model.parameters()).device
        if self.world_size == ctx.world_size:
            rng = self.rng[ctx.rank]
        else:
            seed_rngs(derived_seed(seed, self.epoch, ctx.rank), device)
            rng = rng_state(device)
        TrainState(self.model, self.optimizer, rng, self.data_order).restore(model, opt, order)
