"""Distributions in nats: the posterior q(z|x) and the decoder likelihoods p(x|z).

Every ``log_prob``/``kl`` sums over all non-batch dimensions and returns shape (N,).

The likelihoods are `parts.Likelihood` classes, registered under the names ``VAEConfig.likelihood``
uses: ``n_params`` decoder outputs per pixel, ``from_decoder`` builds one from them, and
``marginal_output`` gives the decoder bias that makes p(x|z) the data's marginal
(`VAE.init_decoder_at_marginal`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.device import bernoulli
from vaelab.models.parts import register_likelihood

if TYPE_CHECKING:
    from vaelab.config import VAEConfig

LOG_2PI = math.log(2.0 * math.pi)
LOGISTIC_MIN_SCALE = 1e-3  # a quarter of an 8-bit bin: a pixel's mass can approach 1 but stays finite


def soft_floor_log(raw: Tensor, minimum: float) -> Tensor:
    """A log-scale >= log(minimum), smooth so gradients never vanish: log(min) + softplus(raw - log(min))."""
    floor = math.log(minimum)
    return floor + F.softplus(raw - floor)


def inverse_soft_floor_log(log_scale: Tensor, minimum: float) -> Tensor:
    """The raw output that `soft_floor_log` maps to ``log_scale`` (clamped just above the floor)."""
    floor = math.log(minimum)
    return floor + torch.log(torch.expm1((log_scale - floor).clamp_min(1e-4)))  # softplus^-1


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
        return self.rsample(eps)

    def rsample(self, eps: Tensor) -> Tensor:
        """The reparameterized draw for standard normal noise eps (..., N, D) -> z (..., N, D)."""
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) in closed form, (N,)."""
        return _sum_event(self.kl_per_dim())

    def kl_per_dim(self) -> Tensor:
        """KL(q || N(0, I)) of each latent dimension, (N, D)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def kl_to(self, other: DiagonalGaussian) -> Tensor:
        """KL(self || other) in closed form for two diagonal Gaussians of one shape (..., D) -> (...,)."""
        ratio = torch.exp(self.logvar - other.logvar)  # var / var_other
        return 0.5 * (
            (self.mean - other.mean).pow(2) * torch.exp(-other.logvar) + ratio - 1.0 - torch.log(ratio)
        ).sum(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) for z of shape (N, D) or (K, N, D) -> (N,) or (K, N)."""
        return -0.5 * ((z - self.mean).pow(2) * torch.exp(-self.logvar) + self.logvar + LOG_2PI).sum(-1)


@register_likelihood("bernoulli")
class Bernoulli:
    """p(x|z) with independent Bernoulli pixels, parameterized by ``logits`` (N, C, H, W).

    Valid for x in [0, 1]: for grey pixels it is the usual cross-entropy, as in the write-up.
    """

    n_params: ClassVar[int] = 1
    support: ClassVar[str] = "unit"  # x in [0, 1]

    def __init__(self, logits: Tensor) -> None:
        self.logits = _full(logits)

    @classmethod
    def from_decoder(cls, params: Tensor, config: VAEConfig) -> Bernoulli:
        """Decoder outputs (..., 1, C, H, W) are the logits."""
        return cls(params.select(-4, 0))

    @staticmethod
    def marginal_output(mean: Tensor, std: Tensor, config: VAEConfig) -> Tensor:
        """The logits of the pixel means: (P * C,) or (P * D,) for means and stds (C,) or (D,)."""
        p = mean.clamp(1e-4, 1 - 1e-4)
        return torch.log(p) - torch.log1p(-p)

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: Tensor) -> Tensor:
        # BCE-with-logits is the stable form of x*log(p) + (1-x)*log(1-p); never log(sigmoid).
        return -_sum_event(F.binary_cross_entropy_with_logits(self.logits, x, reduction="none"))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return bernoulli(self.mean, generator)


@register_likelihood("gaussian")
class Gaussian:
    """p(x|z) = N(mean, diag(exp(log_sigma))^2), both (N, C, H, W): a true density in nats.

    Built from a decoder, sigma is floored softly at ``config.min_sigma`` so log p(x|z) stays bounded."""

    n_params: ClassVar[int] = 2
    support: ClassVar[str] = "real"

    def __init__(self, mean: Tensor, log_sigma: Tensor) -> None:
        self.mean = _full(mean)
        self.log_sigma = _full(log_sigma)

    @classmethod
    def from_decoder(cls, params: Tensor, config: VAEConfig) -> Gaussian:
        """Decoder outputs (..., 2, C, H, W): the mean, and sigma's raw log before the floor."""
        loc, raw = params.unbind(-4)
        return cls(loc, soft_floor_log(raw, config.min_sigma))

    @staticmethod
    def marginal_output(mean: Tensor, std: Tensor, config: VAEConfig) -> Tensor:
        """[mean, raw log std]: (2 * C,) or (2 * D,)."""
        return torch.cat([mean, inverse_soft_floor_log(torch.log(std), config.min_sigma)])

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.mean) * torch.exp(-self.log_sigma)
        return -_sum_event(0.5 * z.pow(2) + self.log_sigma + 0.5 * LOG_2PI)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(self.log_sigma) * eps


@register_likelihood("logistic")
class DiscretizedLogistic:
    """p(x|z) for 8-bit pixels x in {0, 1/255, ..., 1}: each pixel's mass is that of a logistic
    (``loc``, ``exp(log_scale)``) on its bin of width 1/255, the end bins stretched to -inf and +inf
    (as in PixelCNN++). A probability mass, so -log p(x) in nats converts directly to bits/dim.

    ``loc`` and ``log_scale`` are (N, C, H, W). Inputs are snapped to the 8-bit grid first.
    """

    LEVELS = 256
    n_params: ClassVar[int] = 2
    support: ClassVar[str] = "unit"  # 8-bit pixels as k / 255

    def __init__(self, loc: Tensor, log_scale: Tensor) -> None:
        self.loc = loc
        self.log_scale = log_scale

    @classmethod
    def from_decoder(cls, params: Tensor, config: VAEConfig) -> DiscretizedLogistic:
        """Decoder outputs (..., 2, C, H, W): the location, and the raw log-scale before its floor."""
        loc, raw = params.unbind(-4)
        return cls(loc, soft_floor_log(raw, LOGISTIC_MIN_SCALE))

    @staticmethod
    def marginal_output(mean: Tensor, std: Tensor, config: VAEConfig) -> Tensor:
        """[mean, raw log-scale] of the logistic with the data's std s (scale s * sqrt(3) / pi)."""
        log_s = torch.log(std * math.sqrt(3.0) / math.pi)
        return torch.cat([mean, inverse_soft_floor_log(log_s, LOGISTIC_MIN_SCALE)])

    def log_prob(self, x: Tensor) -> Tensor:
        top = self.LEVELS - 1
        loc, log_scale = self.loc.float(), self.log_scale.float()  # bins of 1/255 need fp32, not bf16
        k = torch.round(x.float() * top).clamp(0, top)  # the pixel's level, 0..255
        inv_s = torch.exp(-log_scale)
        upper = ((k + 0.5) / top - loc) * inv_s  # standardised bin edges
        lower = ((k - 0.5) / top - loc) * inv_s
        # sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(l - u)): stable on both tails
        mid = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
        logp = torch.where(k == 0, F.logsigmoid(upper), torch.where(k == top, F.logsigmoid(-lower), mid))
        return _sum_event(logp)

    @property
    def mean(self) -> Tensor:
        """E[x] = sum_{k=1}^{255} P(level >= k) / 255, exactly, (N, C, H, W)."""
        top = self.LEVELS - 1
        edges = (torch.arange(1, self.LEVELS, device=self.loc.device, dtype=self.loc.dtype) - 0.5) / top
        inv_s = torch.exp(-self.log_scale)
        total = torch.zeros_like(self.loc)
        for chunk in edges.split(32):  # bounded memory: 32 edges at a time
            total += torch.sigmoid((self.loc.unsqueeze(-1) - chunk) * inv_s.unsqueeze(-1)).sum(-1)
        return total / top

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        u = u.clamp(1e-6, 1 - 1e-6)
        x = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))  # logistic draw
        top = self.LEVELS - 1
        return torch.round(x * top).clamp(0, top) / top

