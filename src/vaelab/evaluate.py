"""Evaluation on a split, in nats per example."""

from __future__ import annotations

import torch

from .data import Split
from .device import make_generator
from .model import VAE
from .objectives import neg_elbo


@torch.no_grad()
def evaluate_elbo(model: VAE, split: Split, batch_size: int = 1000, seed: int = 0) -> dict:
    """The one-sample -ELBO on ``split`` with a seeded generator -> per-example means in nats.

    Returns ``{"neg_elbo", "recon", "kl", "n"}``; ``neg_elbo == recon + kl``.
    """
    was_training = model.training
    model.eval()
    device = model.device
    gen = make_generator(device, seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # recon, kl
    n = len(split)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        y = None if split.y is None else split.y[sl].to(device)  # a conditional model needs them
        terms = neg_elbo(model, split.batch(sl).to(device), y, generator=gen)
        sums += torch.stack([terms.recon.sum(), terms.kl.sum()]).double()
    model.train(was_training)
    recon, kl = (sums / max(n, 1)).tolist()
    return {"neg_elbo": recon + kl, "recon": recon, "kl": kl, "n": n}
