"""The two-level hierarchical VAE (the HVAE of Tomczak & Welling 2018; Burda et al. 2016's two
stochastic layers):

    q(z1, z2 | x) = q(z2 | x) q(z1 | x, z2)        p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1, z2)

The latent is one vector z = [z1, z2] of ``latent_dim = K1 + K2`` dims (bottom level first), so
the decoder, sampling, encoding, interpolation and the evaluation code see an ordinary latent;
only the posterior and the prior know the split. p(z2) is the model's top prior: N(0, I) or a
VampPrior over z2 (the paper's best non-autoregressive model). Every density is a diagonal Gaussian.

The ELBO's KL term, log q(z|x) - log p(z) in expectation, is taken as

    KL(q(z2|x) || p(z2)) + KL(q(z1|x, z2) || p(z1|z2)) at the drawn z2

with both KLs in closed form where they have one (the first is a Monte Carlo term for the VampPrior):
an unbiased estimate with less variance than log q - log p at one draw.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.networks import mlp
from vaelab.models.parts import MonteCarloKL, Prior


class HierarchicalPosterior:
    """q(z|x) over z = [z1, z2] for a batch of N inputs.

    ``top`` is q(z2|x) (N, K2); ``features`` (N, H) is x's embedding for the bottom level and
    ``head([features, z2])`` -> (mean, logvar) of q(z1|x, z2), (..., 2 * K1).
    """

    def __init__(
        self, top: DiagonalGaussian, features: Tensor, head: Callable[[Tensor], Tensor], k1: int
    ) -> None:
        self.top = top
        self.features = features
        self.head = head
        self.k1 = k1

    def bottom(self, z2: Tensor) -> DiagonalGaussian:
        """q(z1 | x, z2) for z2 (..., N, K2) -> a Gaussian with mean and logvar (..., N, K1)."""
        h = self.features.expand(*z2.shape[:-1], self.features.shape[-1])  # (..., N, H)
        mean, logvar = self.head(torch.cat([h, z2], dim=-1)).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (..., K1 + K2) -> (z1 (..., K1), z2 (..., K2))."""
        return z[..., : self.k1], z[..., self.k1 :]

    @functools.cached_property
    def _bottom_at_mean(self) -> DiagonalGaussian:
        return self.bottom(self.top.mean)

    @property
    def mean(self) -> Tensor:
        """[E q(z1|x, mean of z2), mean of z2] (N, K): the features `vaelab encode` writes."""
        return torch.cat([self._bottom_at_mean.mean, self.top.mean], dim=-1)

    @property
    def logvar(self) -> Tensor:
        """The log-variances that go with `mean`: q(z1|x, z2) at z2's mean, and q(z2|x) (N, K)."""
        return torch.cat([self._bottom_at_mean.logvar, self.top.logvar], dim=-1)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def kl_per_dim(self) -> Tensor:
        """Each dim's KL to N(0, I) at `mean` and `logvar`, (N, K): a diagnostic only (the model's
        prior is not N(0, I) for z1), which `evaluate` does not report for this model."""
        return DiagonalGaussian(self.mean, self.logvar).kl_per_dim()

    def rsample(self, eps: Tensor) -> Tensor:
        """The reparameterized draw for standard normal noise eps (..., N, K) -> z (..., N, K):
        z2 = mean2 + std2 * eps2, then z1 = mean1(z2) + std1(z2) * eps1."""
        e1, e2 = self.split(eps)
        z2 = self.top.mean + self.top.std * e2
        q1 = self.bottom(z2)
        return torch.cat([q1.mean + q1.std * e1, z2], dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One reparameterized draw per input -> (N, K)."""
        n, k2 = self.top.mean.shape
        mean = self.top.mean
        eps = torch.randn((n, self.k1 + k2), generator=generator, device=mean.device, dtype=mean.dtype)
        return self.rsample(eps)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z1, z2 | x) for z (N, K) or (S, N, K) -> (N,) or (S, N)."""
        z1, z2 = self.split(z)
        return self.top.log_prob(z2) + self.bottom(z2).log_prob(z1)


class HierarchicalPrior(MonteCarloKL, nn.Module):
    """p(z) = p(z2) p(z1 | z2) over z = [z1, z2]; ``top`` is p(z2) (a `priors` prior on K2 dims) and
    p(z1|z2) is a diagonal Gaussian whose mean and logvar an MLP computes from z2."""

    def __init__(self, top: Prior, k1: int, k2: int, hidden: tuple[int, ...], gated: bool) -> None:
        super().__init__()
        self.top = top
        self.k1, self.k2 = k1, k2
        self.net = mlp(k2, hidden, 2 * k1, gated)  # z2 -> (mean, logvar) of p(z1|z2)

    @property
    def latent_dim(self) -> int:
        return self.k1 + self.k2

    def conditional(self, z2: Tensor) -> DiagonalGaussian:
        """p(z1 | z2) for z2 (..., K2) -> mean and logvar (..., K1)."""
        lead = z2.shape[:-1]
        mean, logvar = self.net(z2.reshape(-1, self.k2)).view(*lead, 2 * self.k1).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        """z (..., K) -> log p(z2) + log p(z1 | z2) (...,)."""
        z1, z2 = z[..., : self.k1], z[..., self.k1 :]
        return self.top.log_prob(z2) + self.conditional(z2).log_prob(z1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ) -> Tensor:
        """n draws z2 ~ p(z2), z1 ~ p(z1 | z2) -> (n, K). ``temperature`` scales the noise of both
        levels (see the top prior's ``sample``); 0 gives p(z1|z2)'s mean at the top's mode."""
        device = next(self.net.parameters()).device
        z2 = self.top.sample(n, generator, temperature, device=device)  # (n, K2)
        p1 = self.conditional(z2)
        eps = torch.randn(n, self.k1, generator=generator, device=device, dtype=p1.mean.dtype)
        return torch.cat([p1.mean + temperature * p1.std * eps, z2], dim=-1)

    def kl(self, q: HierarchicalPosterior, z: Tensor) -> Tensor:
        """The ELBO's KL term from the draws z (N, K) or (S, N, K) of q (see the module docstring)
        -> (N,), averaged over the S draws."""
        _, z2 = q.split(z)
        kl1 = q.bottom(z2).kl_to(self.conditional(z2))  # (N,) or (S, N)
        if z.dim() == 3:
            kl1 = kl1.mean(0)
        return kl1 + self.top.kl(q.top, z2)
