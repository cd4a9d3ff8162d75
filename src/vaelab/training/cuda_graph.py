"""The whole training step in a CUDA graph: forward, backward and the Adam update captured once per batch
shape, then replayed with one launch per step and no host sync.

Capture needs a few warm-up steps first (lazy allocations, cuBLAS workspaces, Adam's state). Those steps
are undone: parameters, optimizer state and the RNG are restored in place, so the captured run learns
exactly what the eager step would have. The captured region is `step.train_step`, the body every engine
mode runs. The batch itself is gathered, converted (and binarized, if the split does that) outside the
graph, on the device, and copied into the graph's static input.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from vaelab.data.dataset import Split
from vaelab.models.vae import VAE
from vaelab.training.step import LossFn, autograd_grads, by_storage, train_step

WARMUP_STEPS = 3
RESETTABLE = (torch.optim.Adam, torch.optim.AdamW)  # fresh state == all-zero state, so warm-up can be undone


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The distinct batch sizes of an epoch over n examples: a full batch and the remainder, if any."""
    full = min(batch_size, n)
    rest = n % batch_size if n > batch_size else 0
    return [full] + ([rest] if rest else [])


def graph_key(
    model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn, split: Split, n: int, batch_size: int
) -> tuple:
    """Everything a captured step bakes in, for an epoch of n rows of ``split``: when this changes, the
    step must be captured again. The loss function counts by ``==`` (objectives by value)."""
    groups = tuple(
        tuple((k, by_storage(v)) for k, v in sorted(g.items()) if k != "params") for g in opt.param_groups
    )
    params = tuple(p.data_ptr() for p in model.parameters())
    state = tuple(t.data_ptr() for s in opt.state.values() for t in s.values() if isinstance(t, Tensor))
    data = (tuple(split.x.shape[1:]), split.x.dtype, split.y is not None)
    return (loss_fn, tuple(batch_sizes(n, batch_size)), data, groups, params, state, model.training)


class Snapshot:
    """Parameters, optimizer state and RNG states, saved so that warm-up steps can be undone in place
    (in place because captured kernels hold the tensors' addresses)."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        if type(opt) not in RESETTABLE:
            raise TypeError(f"can only undo warm-up steps of Adam or AdamW, not {type(opt).__name__}")
        self.model, self.opt = model, opt
        with torch.no_grad():
            self.params = [p.detach().clone() for p in model.parameters()]
            self.state = {
                p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in opt.state[p].items()}
                for p in model.parameters()
                if p in opt.state
            }
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @torch.no_grad()
    def restore(self) -> None:
        for p, saved_p in zip(self.model.parameters(), self.params, strict=True):
            p.copy_(saved_p)
        for p in self.model.parameters():
            state = self.opt.state.get(p, {})
            saved = self.state.get(p)
            for k, v in state.items():
                if not isinstance(v, Tensor):
                    state[k] = saved[k] if saved is not None else v
                elif saved is not None:
                    v.copy_(saved[k])
                else:
                    v.zero_()  # Adam's fresh state: step 0, zero moments
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


class GraphSteps:
    """Captured training steps for one (loss_fn, split shape, batch size, optimizer) key; call with a
    batch x (B, C, H, W) and labels (B,) or None to run one step -> the loss () (a static tensor).

    Each replay runs `train_step` of ``model`` and ``opt`` (built by `engine.make_optimizer`, so
    capturable) under ``precision`` and adds the batch's (neg_elbo, recon, kl) to ``sums`` (3,).
    """

    def __init__(
        self,
        model: VAE,
        opt: torch.optim.Optimizer,
        loss_fn: LossFn,
        split: Split,
        n: int,
        batch_size: int,
        precision: str,
        sums: Tensor,
    ) -> None:
        dev = model.device
        if not all(g.get("capturable", False) for g in opt.param_groups):
            raise TypeError("the optimizer is not capturable; build it with engine.make_optimizer")
        snapshot = Snapshot(model, opt)  # first: even the sample batch may draw random numbers
        grads = autograd_grads(model, loss_fn, precision)
        sizes = batch_sizes(n, batch_size)
        idx = torch.arange(sizes[0], device=dev)
        x0 = split.batch(idx)
        y0 = None if split.y is None else split.y[idx]
        self.static = {b: (x0[:b].clone(), None if y0 is None else y0[:b].clone()) for b in sizes}
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        with torch.cuda.device(dev):
            scratch = torch.zeros_like(sums)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            try:
                with torch.cuda.stream(side), warnings.catch_warnings():
                    # Adam warns when a capturable instance steps uncaptured: that is what warm-up is.
                    warnings.filterwarnings("ignore", message=".*capturable=True.*")
                    for b in sizes:
                        for _ in range(WARMUP_STEPS):
                            train_step(opt, grads, *self.static[b], scratch)
            finally:
                torch.cuda.current_stream().wait_stream(side)
                snapshot.restore()
            try:
                for b in sizes:
                    # No grads going in: they are born inside the graph's memory pool and every replay
                    # rewrites them (train_step's own zero_grad is then a no-op: no kernel captured).
                    opt.zero_grad(set_to_none=True)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        loss = train_step(opt, grads, *self.static[b], sums)
                    self.graphs[b] = (graph, loss)
            except Exception:
                self.graphs.clear()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                snapshot.restore()
                raise
        # The key after capture: Adam's state now exists and its storage is what the graphs hold.
        self.key = graph_key(model, opt, loss_fn, split, n, batch_size)

    def __call__(self, x: Tensor, y: Tensor | None) -> Tensor:
        sx, sy = self.static[x.shape[0]]
        sx.copy_(x)
        if sy is not None:
            assert y is not None  # the step was captured with labels
            sy.copy_(y)
        graph, loss = self.graphs[x.shape[0]]
        graph.replay()
        return loss
