"""Data-parallel training under torchrun: one process per device, gradients all-reduced by DDP.

``torchrun --nproc_per_node N -m vaelab train ...`` sets RANK, LOCAL_RANK, WORLD_SIZE and the
rendezvous address; `setup` joins the process group (gloo on CPU, nccl on CUDA). The global batch
stays ``--batch-size`` whatever the world size: every optimizer step, rank r trains on its
1/N slice of the same global batch a single process would use, so hyperparameters carry over.

Rank 0 alone reads and writes the run directory. What other ranks need from disk reaches them by
broadcast (`on_main`), so a multi-node run needs no shared filesystem, and an error on rank 0
fails every rank with the same message instead of leaving them waiting in a collective.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from vaelab.models.vae import VAE
    from vaelab.training.step import LossFn


_owned = False  # whether `setup` initialised the process group (and `shutdown` may destroy it)


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` and the device collectives use."""

    rank: int = 0
    world_size: int = 1
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise VaelabError(f"environment variable {name}={raw!r} is not an integer") from None


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the torchrun process group if WORLD_SIZE > 1 -> (context, this rank's device).

    CUDA ranks use nccl and GPU ``LOCAL_RANK``; CPU ranks use gloo. A single process is a no-op.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context(), device
    local = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise VaelabError(
                f"LOCAL_RANK {local} needs GPU {local}, but only {torch.cuda.device_count()} "
                "are visible; use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise VaelabError(f"multi-process training runs on cpu or cuda, not {device.type}")
    global _owned
    if not dist.is_initialized():  # a launcher script may have joined the group already
        dist.init_process_group(backend=backend)
        _owned = True
    return context(), device


def context() -> Context:
    """The current process group as a `Context` (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    comm = torch.device("cpu")
    if dist.get_backend() == "nccl":
        comm = torch.device("cuda", torch.cuda.current_device())
    return Context(dist.get_rank(), dist.get_world_size(), comm)


def shutdown(synchronize: bool = False) -> None:
    """Leave the process group if `setup` joined it (one made by the caller is the caller's).

    ``synchronize``: every rank is known to be here (a normal end), so they first meet at a
    barrier and tear the group down together. Without it a rank that finished early could close
    its connections while a peer's transport was still busy, which gloo can answer with an abort
    at exit. After an error the barrier is skipped: the peers may never reach it.
    """
    global _owned
    if _owned and dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        gc.collect()  # drop DDP reducers and pending work that still hold the group
        dist.destroy_process_group()
    _owned = False


# ---- collectives -----------------------------------------------------------------------------


def all_reduce_sum(t: Tensor, ctx: Context) -> Tensor:
    """Sum ``t`` over ranks (a copy on ``t``'s device); identity for a single process."""
    if not ctx.distributed:
        return t
    buf = t.detach().to(ctx.comm_device, copy=True)
    dist.all_reduce(buf)
    return buf.to(t.device)


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    if not ctx.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=ctx.comm_device), ctx).item() > 0)


def _broadcast_blob(data: bytes | None, ctx: Context) -> bytes:
    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64, device=ctx.comm_device)
    dist.broadcast(size, 0)
    n = int(size.item())
    if ctx.is_main:
        buf = torch.frombuffer(bytearray(data or b"\0"), dtype=torch.uint8)[:n].to(ctx.comm_device)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=ctx.comm_device)
    if n:
        dist.broadcast(buf, 0)
    return bytes(buf.cpu().numpy().tobytes())


def on_main(fn: Callable[[], list[bytes] | None], ctx: Context) -> list[bytes]:
    """Run ``fn`` on rank 0 only and hand its blobs (None: none) to every rank.

    If ``fn`` raises, rank 0 re-raises and the other ranks raise `VaelabError` with its message,
    so all processes fail together rather than waiting forever in the next collective.
    """
    if not ctx.distributed:
        return fn() or []
    blobs: list[bytes] = []
    error: BaseException | None = None
    if ctx.is_main:
        try:
            blobs = fn() or []
        except Exception as e:  # forwarded to the other ranks, then re-raised below
            error = e
    status = b"" if error is None else (str(error) or type(error).__name__).encode()
    message = _broadcast_blob(status, ctx)
    if message:
        if error is not None:
            raise error
        raise VaelabError(message.decode(errors="replace"))
    count = int(_broadcast_blob(str(len(blobs)).encode(), ctx).decode())
    return [_broadcast_blob(blobs[i] if ctx.is_main else None, ctx) for i in range(count)]


def all_gather_bytes(data: bytes, ctx: Context) -> list[bytes]:
    """Every rank's ``data``, in rank order (tensors only: no pickle, unlike all_gather_object)."""
    if not ctx.distributed:
        return [data]
    size = torch.tensor([len(data)], dtype=torch.int64, device=ctx.comm_device)
    sizes = [torch.empty_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    buf = torch.zeros(longest, dtype=torch.uint8, device=ctx.comm_device)
    buf[: len(data)] = torch.frombuffer(bytearray(data or b"\0"), dtype=torch.uint8)[: len(data)]
    parts = [torch.empty_like(buf) for _ in range(ctx.world_size)]
    dist.all_gather(parts, buf)
    return [bytes(p[:n].cpu().numpy().tobytes()) for p, n in zip(parts, lengths, strict=True)]


# ---- sharding and gradient averaging ---------------------------------------------------------


def local_batch_size(batch_size: int, n_train: int, ctx: Context) -> int:
    """This rank's share of the global batch; the split must be even so ranks weigh the same."""
    if batch_size % ctx.world_size:
        raise VaelabError(
            "{a.batch_size:={b}} (the global batch) must be divisible by the world size {w}, so every "
            "process trains on an equal slice of it",
            b=batch_size, w=ctx.world_size,
        )
    if n_train < ctx.world_size:
        raise VaelabError(f"{n_train} training examples cannot be split across {ctx.world_size} processes")
    return batch_size // ctx.world_size


def shard_order(perm: Tensor, batch_size: int, ctx: Context) -> Tensor:
    """The epoch's global order (n,) -> this rank's order: its slice of every global batch.

    Rank r's step i trains on slice r of global batch i, so together the ranks make the same
    optimizer steps as one process. A last batch whose size is not a multiple of the world size is
    padded with the epoch's first examples: every rank then takes the same number of equal steps
    (DDP needs that; equal sizes make the averaged gradient the global batch mean).
    """
    if not ctx.distributed:
        return perm
    world, b = ctx.world_size, batch_size // ctx.world_size
    full = perm.numel() // batch_size * batch_size
    head = perm[:full].view(-1, world, b)[:, ctx.rank].reshape(-1)
    tail = perm[full:]
    if tail.numel():
        padded = -(-tail.numel() // world) * world
        tail = torch.cat([tail, perm[: padded - tail.numel()]]).view(world, -1)[ctx.rank]
    return torch.cat([head, tail])


class _LossModule(nn.Module):
    """Runs a loss function inside DDP's forward, so backward all-reduces the gradients."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model
        self.loss_fn: Any = None

    def forward(self, x: Tensor, y: Tensor | None) -> Any:
        return self.loss_fn(self.model, x, y)


@dataclass(frozen=True)
class DataParallelLoss:
    """``loss_fn`` run through ``ddp`` (a DDP-wrapped `_LossModule`), so its backward averages the
    gradients over ranks. Equal by value: same DDP module and an equal loss function, so the engine
    reuses its compiled or captured step when every epoch wraps a fresh but equal objective."""

    ddp: nn.Module = field(repr=False)
    loss_fn: LossFn

    def __call__(self, model: VAE, x: Tensor, y: Tensor | None = None) -> Any:
        cast(_LossModule, self.ddp.module).loss_fn = self.loss_fn  # the model is the one DDP wraps
        return self.ddp(x, y)


def data_parallel(model: VAE, ctx: Context) -> Callable[[LossFn], LossFn]:
    """A wrapper for loss functions: under DDP, the wrapped loss (a `DataParallelLoss`) averages
    gradients over ranks in its backward (overlapped with the backward pass); for a single process
    it returns the loss as is. Building it broadcasts rank 0's weights, so every rank starts
    identical."""
    if not ctx.distributed:
        return lambda fn: fn
    from torch.nn.parallel import DistributedDataParallel

    device = model.device
    ddp = DistributedDataParallel(
        _LossModule(model), device_ids=[device.index] if device.type == "cuda" else None
    )
    return functools.partial(DataParallelLoss, ddp)
