"""Checks of a checkpoint against the model and optimizer it is about to be loaded into.

A checkpoint's checksums only prove that its files belong together, not that they are sane: an
``optimizer.pt`` that passes ``torch.load(weights_only=True)`` can still hold moments of the wrong
shape, which a fused optimizer step would write through. So before anything is restored, every
tensor is checked against the parameter it belongs to (shape, dtype, finite), every RNG state is
tried on a throwaway generator, and the epoch and history must describe the same run. Anything
wrong is one `CheckpointError` line that names the checkpoint.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab import io
from vaelab.errors import CheckpointError

_HYPER = {"lr": (0.0, False), "eps": (0.0, False), "weight_decay": (0.0, True)}  # name -> (low, inclusive)


def check_state(ckpt: Any, where: str) -> None:
    """What a checkpoint says on its own: epoch, world size, history and RNG states."""
    if not _is_int(ckpt.epoch) or ckpt.epoch < 0:
        raise CheckpointError(f"{where}: epoch {ckpt.epoch!r} is not a count of epochs")
    if not _is_int(ckpt.world_size) or not 1 <= ckpt.world_size <= 1 << 16:
        raise CheckpointError(f"{where}: world size {ckpt.world_size!r} is not a number of processes")
    check_history(ckpt.history, ckpt.epoch, where)
    if not isinstance(ckpt.rng, list) or len(ckpt.rng) != ckpt.world_size:
        raise CheckpointError(f"{where}: not one RNG state for each of its {ckpt.world_size} processes")
    for state in ckpt.rng:
        check_rng(state, where)
    _try(lambda: torch.Generator().set_state(ckpt.data_order), f"{where}: the data-order state")


def check_fit(ckpt: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, where: str) -> None:
    """A checkpoint against the model and optimizer it is about to be loaded into."""
    check_weights(ckpt.model, model, f"{where}: model.safetensors")
    if ckpt.best is not None:
        check_weights(ckpt.best, model, f"{where}: best.safetensors")
    check_optimizer(ckpt.optimizer, model, opt, f"{where}: optimizer.pt")


def check_history(history: Any, epoch: int, where: str) -> None:
    """One record per epoch, numbered 1..epoch, holding numbers (or lists of numbers) only; or none
    at all (a checkpoint written without its history)."""
    if not isinstance(history, list) or len(history) not in (0, epoch):
        raise CheckpointError(f"{where}: the history does not have one record for each of its {epoch} epochs")
    for i, record in enumerate(history, 1):
        if not isinstance(record, dict) or record.get("epoch") != i or isinstance(record.get("epoch"), bool):
            raise CheckpointError(f"{where}: history record {i} is not the record of epoch {i}")
        for key, value in record.items():
            if not (isinstance(key, str) and _is_value(value)):
                raise CheckpointError(f"{where}: history record {i} has a bad value for {key!r}")


def check_weights(state: dict[str, Tensor], model: torch.nn.Module, where: str) -> None:
    """The same names, shapes and dtypes as the model's state dict, and finite."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{where} is not a set of weights")
    io.check_weights(state, model.state_dict(), where, "the model", exact_dtype=True)


def check_optimizer(state: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, where: str) -> None:
    """An optimizer state_dict for ``opt``: its groups, hyperparameters, and per-parameter tensors
    shaped, typed and finite like the parameters they belong to."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise CheckpointError(f"{where} is not an optimizer state")
    groups = state.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(opt.param_groups):
        raise CheckpointError(f"{where}: its parameter groups do not match the optimizer's")
    params: dict[Any, Tensor] = {}
    for saved, group in zip(groups, opt.param_groups, strict=True):
        ids = saved.get("params") if isinstance(saved, dict) else None
        if not isinstance(ids, list) or len(ids) != len(group["params"]):
            raise CheckpointError(f"{where}: its parameter groups do not match the optimizer's")
        params.update(zip(ids, group["params"], strict=True))
        for name, (low, inclusive) in _HYPER.items():
            if name in saved and not _in_range(saved[name], low, inclusive):
                raise CheckpointError(f"{where}: {name} {saved[name]!r} is out of range")
        betas = saved.get("betas", (0.9, 0.999))
        if not (
            isinstance(betas, list | tuple)
            and len(betas) == 2
            and all(_in_range(b, 0.0, True, 1.0) for b in betas)
        ):
            raise CheckpointError(f"{where}: betas {betas!r} are out of range")
    for pid, per_param in state["state"].items():
        p = params.get(pid)
        if p is None or not isinstance(per_param, dict):
            raise CheckpointError(f"{where}: state for an unknown parameter {pid!r}")
        for key, value in per_param.items():
            what = f"{where}: {key} of parameter {pid}"
            if key == "step":
                step = value.item() if isinstance(value, Tensor) and value.numel() == 1 else value
                if not isinstance(step, int | float) or isinstance(step, bool) or not 0 <= step < 2**53:
                    raise CheckpointError(f"{what} is not a step count")
            elif isinstance(value, Tensor):
                _check_like(value, p, what)
                if key.endswith("exp_avg_sq") and bool((value < 0).any()):
                    raise CheckpointError(f"{what} has negative entries")
            else:
                raise CheckpointError(f"{what} is not a tensor")


def check_rng(state: Any, where: str) -> None:
    """Each saved RNG state loads into a throwaway generator of its kind."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: an RNG state is not an object")
    _try(lambda: torch.Generator().set_state(state["torch"]), f"{where}: the torch RNG state")
    if state.get("cuda") is not None and not (
        isinstance(state["cuda"], Tensor) and state["cuda"].dtype == torch.uint8
    ):
        raise CheckpointError(f"{where}: the CUDA RNG state is not a byte tensor")
    _try(lambda: np.random.RandomState().set_state(state["numpy"]), f"{where}: the numpy RNG state")
    _try(lambda: random.Random().setstate(state["python"]), f"{where}: the Python RNG state")


def _check_like(t: Any, ref: Tensor, what: str) -> None:
    if not isinstance(t, Tensor):
        raise CheckpointError(f"{what} is not a tensor")
    if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
        raise CheckpointError(
            f"{what} does not match the model: shape {tuple(t.shape)} and dtype {t.dtype}, where the "
            f"model needs {tuple(ref.shape)} and {ref.dtype}"
        )
    if t.is_floating_point() and not bool(t.isfinite().all()):
        raise CheckpointError(f"{what} holds NaN or inf")


def _try(fn: Any, what: str) -> None:
    try:
        fn()
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, IndexError) as e:
        raise CheckpointError(
            f"{what} is malformed ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
        ) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _in_range(v: Any, low: float, inclusive: bool, high: float = math.inf) -> bool:
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return False
    return (v >= low if inclusive else v > low) and v < high


def _is_value(v: Any, depth: int = 0) -> bool:
    """A metrics value: a finite number, None, a bool, a short string, or a list of them (2 levels)."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, int | float):
        return math.isfinite(v) and abs(v) < 1e300
    if isinstance(v, str):
        return len(v) <= 200
    if isinstance(v, list) and depth < 2:
        return len(v) <= 1 << 16 and all(_is_value(u, depth + 1) for u in v)
    return False
