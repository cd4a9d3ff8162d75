"""One training epoch, the hot path: batches indexed on the device, no host sync inside."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import Split
from .model import VAE
from .objectives import ElboTerms, neg_elbo

LossFn = Callable[[VAE, Tensor, "Tensor | None"], ElboTerms]  # (model, x, labels or None)


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
    """One pass over ``split`` in a random order -> summed (neg_elbo, recon, kl), a (3,) device tensor.

    ``loss_fn(model, x, y)`` gives the terms; its ``loss`` is what the optimizer minimises.
    ``perm`` (M,) on the device: the row order to visit (a data-parallel rank's shard of the epoch);
    by default a fresh random permutation of all rows.
    """
    device = model.device
    model.train()
    if perm is None:
        perm = torch.randperm(len(split), device=device)
    steps = math.ceil(len(perm) / batch_size)
    sums = torch.zeros(3, device=device)
    bar = tqdm(range(steps), desc=desc, leave=False, disable=(not progress) if progress is not None else None)
    refresh = max(1, steps // 20)  # reading the loss syncs the device: do it rarely
    for i in bar:
        idx = perm[i * batch_size : (i + 1) * batch_size]
        x = split.batch(idx)
        y = None if split.y is None else split.y[idx]
        terms = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        opt.step()
        with torch.no_grad():
            sums += torch.stack([terms.neg_elbo.sum(), terms.recon.sum(), terms.kl.sum()])
        if i % refresh == 0 and not bar.disable:
            bar.set_postfix(loss=f"{terms.loss.item():.2f}")
    bar.close()
    return sums
