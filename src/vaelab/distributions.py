"""Distributions in nats: the posterior q(z|x) and the decoder likelihoods p(x|z).

Every ``log_prob``/``kl`` sums over all non-batch dimensions and returns shape (N,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(t: Tensor) -> Tensor:
    """(N, ...) -> (N,): sum over the event dimensions."""
    return t.flatten(1).sum(1)


def _full(t: Tensor) -> Tensor:
    """Network outputs from bf16/fp16 autocast -> float32: densities and KLs are always computed in
    float32 or better, only the matrix products run in low precision. A no-op otherwise."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) for z of shape (N, D) -> (N,)."""
    return -0.5 * _sum_event(z.pow(2) + LOG_2PI)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))). ``mean`` and ``logvar`` have shape (N, D)."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = _full(mean)
        self.logvar = _full(logvar)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterized draw z = mean + std * eps, eps ~ N(0, I): gradients reach the encoder."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) in closed form, (N,)."""
        return _sum_event(self.kl_per_dim())

    def kl_per_dim(self) -> Tensor:
        """KL(q || N(0, I)) of each latent dimension, (N, D)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) for z of shape (N, D) or (K, N, D) -> (N,) or (K, N)."""
        return -0.5 * ((z - self.mean).pow(2) * torch.exp(-self.logvar) + self.logvar + LOG_2PI).sum(-1)


class Bernoulli:
    """p(x|z) with independent Bernoulli pixels, parameterized by ``logits`` (N, C, H, W).

    Valid for x in [0, 1]: for grey pixels it is the usual cross-entropy, as in the write-up.
    """

    def __init__(self, logits: Tensor) -> None:
        self.logits = _full(logits)

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: Tensor) -> Tensor:
        # BCE-with-logits is the stable form of x*log(p) + (1-x)*log(1-p); never log(sigmoid).
        return -_sum_event(F.binary_cross_entropy_with_logits(self.logits, x, reduction="none"))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean, generator=generator)


class Gaussian:
    """p(x|z) = N(mean, diag(exp(log_sigma))^2), both (N, C, H, W): a true density in nats."""

    def __init__(self, mean: Tensor, log_sigma: Tensor) -> None:
        self.mean = _full(mean)
        self.log_sigma = _full(log_sigma)

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.mean) * torch.exp(-self.log_sigma)
        return -_sum_event(0.5 * z.pow(2) + self.log_sigma + 0.5 * LOG_2PI)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(self.log_sigma) * eps


Likelihood = Bernoulli | Gaussian
