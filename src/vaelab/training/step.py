"""One optimisation step, the same in every engine mode: loss -> backward -> optimizer step -> epoch sums.

`train_step` is that body. The eager, inductor and CUDA-graph modes hand it `autograd_grads` (the loss
under `autocast`, then autograd's backward; inductor over a compiled loss, CUDA graphs capture the
whole body); the fused MLP step hands it its own hand-derived loss and gradients. The optimizer
update and the device-side sums are therefore written once.

A loss function is ``loss_fn(model, x, y) -> ElboTerms``. Compiled and captured steps are kept per
loss function, compared with ``==``: the objectives of `vaelab.models.objectives` (``Elbo``,
``Iwae``) are frozen dataclasses, equal by value, so a fresh ``Elbo(beta=1.0)`` every epoch reuses
the step compiled or captured for the last one, while another beta gets its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from vaelab.models.objectives import ElboTerms
from vaelab.models.vae import VAE

LossFn = Callable[[VAE, Tensor, "Tensor | None"], ElboTerms]  # (model, x, labels or None)
GradFn = Callable[[Tensor, "Tensor | None"], ElboTerms]  # (x, labels or None), sets every .grad


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision == "bf16"``, else nothing. The weight-cast cache is off: it is
    unsafe under CUDA graph capture and buys nothing when each weight is used once per step."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


def accumulate(sums: Tensor, terms: ElboTerms) -> None:
    """sums (3,) += (neg_elbo, recon, kl) summed over the batch, on the device."""
    with torch.no_grad():
        sums += torch.stack([terms.neg_elbo.sum(), terms.recon.sum(), terms.kl.sum()]).to(sums.dtype)


def by_storage(v: object) -> object:
    """A comparable stand-in for a hyperparameter in a step's key: tensors by storage (what a
    captured step reads), lists and tuples item by item, everything else by value."""
    if isinstance(v, Tensor):
        return ("tensor", v.data_ptr())
    if isinstance(v, list | tuple):
        return tuple(by_storage(u) for u in v)
    return v


def autograd_grads(model: VAE, loss_fn: LossFn, precision: str) -> GradFn:
    """The autograd way to a step's loss and gradients: ``grads(x, y)`` runs ``loss_fn(model, x, y)``
    under `autocast` and backpropagates its loss -> the terms. ``.grad`` accumulates, so
    `train_step` clears the gradients first."""

    def grads(x: Tensor, y: Tensor | None) -> ElboTerms:
        with autocast(model.device, precision):
            terms = loss_fn(model, x, y)
        terms.loss.backward()
        return terms

    return grads


def train_step(
    opt: torch.optim.Optimizer,
    grads: GradFn,
    x: Tensor,
    y: Tensor | None,
    sums: Tensor,
    zero_grad: bool = True,
) -> Tensor:
    """One optimisation step on batch x (B, C, H, W) with labels y (B,) or None -> the loss ().

    ``grads(x, y)`` computes the loss terms and every parameter's ``.grad``; the optimizer then steps
    and ``sums`` (3,) grows by the batch's summed (neg_elbo, recon, kl), on the device. Nothing is
    read back to the host, so the body can be captured in a CUDA graph as it is. ``zero_grad=False``
    for a ``grads`` that overwrites every ``.grad`` in place (the fused MLP step), which saves
    allocating fresh gradient tensors every step.
    """
    if zero_grad:
        opt.zero_grad(set_to_none=True)  # under capture: the grads are then born in the graph's pool
    terms = grads(x, y)
    opt.step()
    accumulate(sums, terms)
    return terms.loss.detach()
