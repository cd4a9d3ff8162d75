"""Training objectives. The loss is a function of (model, x), never hidden in ``forward``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .model import VAE


class ElboTerms(NamedTuple):
    """Per-example terms in nats. ``loss`` is the scalar to minimise (a batch mean)."""

    loss: Tensor  # ()
    recon: Tensor  # (N,)  -E_q[log p(x|z)], one-sample estimate
    kl: Tensor  # (N,)  KL(q(z|x) || N(0, I)), closed form

    @property
    def neg_elbo(self) -> Tensor:
        """(N,): the true -ELBO, whatever weights the loss used."""
        return self.recon + self.kl


def neg_elbo(
    model: VAE,
    x: Tensor,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    beta: float = 1.0,
) -> ElboTerms:
    """-ELBO = -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z)), summed over dims, mean over batch.

    x: (N, C, H, W) in the likelihood's domain; y: (N,) labels, unused by unconditional models.
    ``beta=1`` is the ELBO of the write-up.
    """
    q = model.encode(x)
    z = q.sample(generator)  # (N, K), reparameterized
    recon = -model.decode(z).log_prob(x)  # (N,)
    kl = q.kl()  # (N,)
    loss = (recon + beta * kl).mean()
    return ElboTerms(loss, recon, kl)
