"""The training engine: one optimisation step per batch, run as fast as the device allows.

Every mode runs the same step body (`step.train_step`: loss -> backward -> optimizer step -> epoch
sums); only how the loss and its gradients are computed, and how the body is launched, differ:

- ``eager``: plain PyTorch autograd. The fallback everywhere. On the CPU, with ``compile="auto"``, the
  plain MLP VAE trained on the ELBO computes its loss and gradients by hand instead (`fused_mlp.py`: the
  same loss and gradients without autograd's bookkeeping); ``compile="off"`` always runs autograd.
- ``cuda-graph``: the whole body (forward, backward and the Adam update) captured once per batch shape
  in a CUDA graph and replayed (see `cuda_graph.py`). The CUDA default.
- ``inductor``: ``torch.compile`` of the loss (forward and backward); opt-in, because compiling costs
  minutes on a small CPU.

The optimizer is `make_optimizer`'s Adam, stepped through ``opt.step()``: one fused kernel for all
parameters on CPU and CUDA.

Every mode gathers batches on the device from a device permutation, keeps every example each epoch (the
last batch is smaller when the split does not divide evenly), accumulates the epoch's sums on the device
and reads nothing back inside the epoch except the progress bar's loss, which is copied asynchronously.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vaelab.config import COMPILE_MODES, PRECISIONS, TrainConfig
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.objectives import ElboTerms, neg_elbo
from vaelab.models.vae import VAE
from vaelab.training.cuda_graph import GraphSteps, graph_key
from vaelab.training.fused_mlp import FusedMLPStep, elbo_weight, supported
from vaelab.training.step import LossFn, autograd_grads, train_step

MAX_AUTO_THREADS = 16  # a 784-400-20 MLP at batch 128 has too little work per matmul for more


@dataclass(frozen=True)
class EngineOptions:
    """How to run the step. ``precision``: fp32, or bf16 autocast of the matrix products (the densities
    stay fp32). ``compile``: auto (cuda-graph on CUDA, eager elsewhere), off, cuda-graph or inductor."""

    precision: str = "fp32"
    compile: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise VaelabError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.compile not in COMPILE_MODES:
            raise VaelabError(f"compile must be one of {', '.join(COMPILE_MODES)}; got {self.compile!r}")

    @classmethod
    def from_config(cls, config: TrainConfig) -> EngineOptions:
        return cls(precision=config.precision, compile=config.compile)


def resolve_mode(compile: str, device: torch.device) -> str:
    """The step mode for ``compile`` on ``device``: eager, cuda-graph or inductor."""
    if compile == "auto":
        # DDP all-reduces from autograd hooks: keep its runs eager rather than capture them.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return "cuda-graph" if device.type == "cuda" and not distributed else "eager"
    if compile == "off":
        return "eager"
    if compile == "cuda-graph" and device.type != "cuda":
        raise VaelabError(
            "{f.compile:='cuda-graph'} needs a CUDA device, but training runs on {d}",
            f=TrainConfig, d=device.type,
        )
    return compile


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fastest update the parameters' device has: one fused kernel on CPU and CUDA, its
    step counters kept on the GPU (capturable) so a CUDA graph can replay it. Same maths as plain Adam."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True, capturable=True)
    if device.type == "cpu":
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    return torch.optim.Adam(model.parameters(), lr=lr)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads -> the number in use. ``threads > 0`` is taken as given; 0 (auto)
    keeps OMP_NUM_THREADS/MKL_NUM_THREADS when set, else uses torch's default (physical cores) limited
    to the CPUs this process may use and to MAX_AUTO_THREADS: more threads than cores, or than the
    matmuls can feed, make every step wait on the slowest thread."""
    if threads > 0:
        torch.set_num_threads(threads)
    elif not (os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")):
        torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cpus(), MAX_AUTO_THREADS)))
    return torch.get_num_threads()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without, oneDNN emulates bf16
    and it runs several times slower than fp32 (measured on an AVX2-only AMD EPYC: docs/benchmarks)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    checks = [getattr(torch.cpu, name, None) for name in probes]
    if all(c is None for c in checks):
        return True  # an older or newer torch without these probes: assume the best, warn nothing
    return any(c() for c in checks if c is not None)


def epoch_batches(perm: Tensor, batch_size: int) -> Iterator[Tensor]:
    """The row order ``perm`` (M,) cut into batches of ``batch_size`` -> index tensors (B,); the last
    batch is smaller when M is not a multiple, so no example is dropped."""
    return (perm[i : i + batch_size] for i in range(0, len(perm), batch_size))


class LossDisplay:
    """The progress bar's running loss without stalling the device: on CUDA the loss is copied to
    pinned memory asynchronously and shown once the copy has landed (one refresh later)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.value: float | None = None
        self.pending = False

    def push(self, loss: Tensor) -> None:
        if self.event is None:  # not CUDA
            self.value = float(loss.detach())
            return
        if self.pending and self.event.query():
            self.value, self.pending = float(self.host), False
        if not self.pending:
            self.host.copy_(loss.detach(), non_blocking=True)
            self.event.record()
            self.pending = True


class Engine:
    """Runs training epochs of ``model`` with ``opt``; keeps compiled or captured steps across epochs.

    A captured step is rebuilt when the loss function, the batch shapes, the optimizer's
    hyperparameters (e.g. a changed lr) or any parameter or optimizer-state storage change; a compiled
    loss, when the loss function changes. Loss functions compare with ``==``: pass the objectives of
    `vaelab.models.objectives` (equal by value), so that a fresh but equal one each epoch reuses the step.
    """

    def __init__(self, model: VAE, opt: torch.optim.Optimizer, options: EngineOptions | None = None) -> None:
        self.model = model
        self.opt = opt
        self.options = options or EngineOptions()
        self.device = model.device
        self.mode = resolve_mode(self.options.compile, self.device)
        if self.options.precision == "bf16" and self.device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn(
                "bf16 on this CPU (no AVX512-BF16 or AMX) is emulated and slower than fp32", stacklevel=2
            )
        self.sums = torch.zeros(3, device=self.device)
        self.fused = None  # fused_mlp.FusedMLPStep when it covers this model
        auto_fp32 = self.options.compile == "auto" and self.options.precision == "fp32"
        if self.mode == "eager" and auto_fp32 and supported(model):
            self.fused = FusedMLPStep(model)
        self._graphs: GraphSteps | None = None  # the captured steps for the current key
        self._compiled: dict[object, Callable] = {}  # inductor: compiled loss per loss function

    # -- the ways to run one step: all of them `train_step`, with other loss and gradients ------
    def eager_step(self, loss_fn: LossFn, x: Tensor, y: Tensor | None) -> Tensor:
        """One autograd step on batch x (B, C, H, W); adds to ``self.sums`` -> the loss ()."""
        grads = autograd_grads(self.model, loss_fn, self.options.precision)
        return train_step(self.opt, grads, x, y, self.sums)

    def step(self, loss_fn: LossFn, x: Tensor, y: Tensor | None) -> Tensor:
        """One step in the current mode (eager, with the fused MLP step where it applies, or
        inductor) -> the loss ()."""
        if self.mode == "inductor":
            return self._inductor_step(loss_fn, x, y)
        if self.fused is not None and torch.is_grad_enabled() and self.model.training:
            beta = elbo_weight(loss_fn)
            if beta is not None:
                fused = self.fused

                def grads(x: Tensor, _y: Tensor | None) -> ElboTerms:
                    return fused.step(x, beta)  # the loss and every .grad, as autograd would give

                # The fused step writes every .grad in place: no zeroing, no fresh gradient tensors.
                return train_step(self.opt, grads, x, y, self.sums, zero_grad=False)
        return self.eager_step(loss_fn, x, y)

    def _inductor_step(self, loss_fn: LossFn, x: Tensor, y: Tensor | None) -> Tensor:
        compiled = self._compiled.get(loss_fn)
        first = compiled is None
        if compiled is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            model = self.model
            compiled = self._compiled[loss_fn] = torch.compile(
                lambda x, y: loss_fn(model, x, y), mode=mode, dynamic=False
            )
        grads = autograd_grads(self.model, lambda _model, x, y: compiled(x, y), self.options.precision)
        try:
            return train_step(self.opt, grads, x, y, self.sums)
        except Exception as e:  # no compiler, an unsupported op...: the eager step is the same maths
            # Compiling happens in the loss's forward and backward, before the update and the sums.
            if not first:
                raise
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); training eagerly", stacklevel=3)
            self.mode = "eager"
            self._compiled.clear()
            return self.eager_step(loss_fn, x, y)

    def _graph_steps(self, loss_fn: LossFn, split: Split, n: int, batch_size: int) -> GraphSteps | None:
        """The captured steps for this epoch's key (captured now if the key changed), or None after a
        failed capture, which switches the engine to eager for good."""
        key = graph_key(self.model, self.opt, loss_fn, split, n, batch_size)
        if self._graphs is None or self._graphs.key != key:
            self._graphs = None  # free the old graphs' memory before capturing new ones
            try:
                self._graphs = GraphSteps(
                    self.model, self.opt, loss_fn, split, n, batch_size, self.options.precision, self.sums
                )
            except Exception as e:  # e.g. a loss that syncs with the host: the eager step is the same maths
                warnings.warn(
                    f"CUDA graph capture failed ({type(e).__name__}: {e}); training eagerly", stacklevel=3
                )
                self.mode = "eager"
        return self._graphs

    # -- one epoch ------------------------------------------------------------------------------
    def run_epoch(
        self,
        split: Split,
        batch_size: int,
        loss_fn: LossFn = neg_elbo,
        progress: bool | None = None,
        desc: str = "",
        perm: Tensor | None = None,
    ) -> Tensor:
        """One pass over ``split`` -> summed (neg_elbo, recon, kl) over the examples visited, a (3,)
        device tensor. ``perm`` (M,): the rows to visit, in order (e.g. one data-parallel rank's
        shard); by default a fresh random permutation of all rows, drawn on the device.
        ``loss_fn(model, x, y)`` gives the terms; its ``loss`` is what the optimizer minimises.
        ``progress=None`` shows a bar only on a terminal."""
        self.model.train()
        if perm is None:
            perm = torch.randperm(len(split), device=self.device)
        n = len(perm)
        if n == 0:
            raise VaelabError("cannot train on an empty split")
        steps = math.ceil(n / batch_size)
        graphs = self._graph_steps(loss_fn, split, n, batch_size) if self.mode == "cuda-graph" else None
        self.sums.zero_()
        bar = tqdm(
            total=steps, desc=desc, leave=False, disable=(not progress) if progress is not None else None
        )
        display = LossDisplay(self.device) if not bar.disable else None
        refresh = max(1, steps // 20)
        for i, idx in enumerate(epoch_batches(perm, batch_size)):
            x = split.batch(idx)
            y = None if split.y is None else split.y[idx]
            loss = graphs(x, y) if graphs is not None else self.step(loss_fn, x, y)
            if display is not None:
                bar.update(1)
                if i % refresh == 0:
                    display.push(loss)
                    if display.value is not None:
                        bar.set_postfix(loss=f"{display.value:.2f}")
        bar.close()
        return self.sums.clone()


def run_epoch(
    model: VAE,
    opt: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    loss_fn: LossFn = neg_elbo,
    progress: bool | None = None,
    desc: str = "",
    perm: Tensor | None = None,
) -> Tensor:
    """One eager epoch without keeping an `Engine` (nothing to capture or compile) -> summed
    (neg_elbo, recon, kl), a (3,) device tensor; see `Engine.run_epoch`. Training loops should hold
    an `Engine` instead, so that captured or compiled steps live across epochs."""
    return Engine(model, opt, EngineOptions(compile="off")).run_epoch(
        split, batch_size, loss_fn, progress, desc, perm
    )
