"""Priors p(z): the standard normal, the VampPrior (Tomczak & Welling 2018) and a Gaussian mixture.

Each is a `parts.Prior`: ``log_prob(z)`` (z (..., D) -> (...,)), ``sample(n, generator, temperature)``
-> (n, D), ``kl(q, z)``, the KL term of the ELBO for a posterior q (N, D) and its reparameterized draws
z, and ``per_dim_kl``, whether that KL is a closed-form sum over dims (then ``kl_per_dim(q)`` (N, D)).
Each is registered under its ``VAEConfig.prior`` name and built by ``from_config``.

The VampPrior is the mixture of the model's own posteriors at K learned pseudo-inputs u_k,

    p(z) = (1/K) sum_k q(z | u_k),

so it needs the model's encoder: the prior holds the pseudo-inputs and is handed ``encode`` when
the model builds it (a plain callable, not a submodule, so the encoder's weights are stored once).
Its KL has no closed form; `kl` returns the single-sample estimate log q(z|x) - log p(z).

The mixture prior p(z) = sum_m pi_m N(z; mu_m, diag(sigma_m^2)) has free weights, means and variances.
`prior_fit` fits one to a trained model's aggregate posterior q(z) (the best prior for a fixed encoder
and decoder); ``--prior mixture`` learns it with the model. Its KL is a Monte Carlo term too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.models.distributions import LOG_2PI, DiagonalGaussian, standard_normal_log_prob
from vaelab.models.parts import LIKELIHOODS, Encode, MonteCarloKL, Prior, register_prior

if TYPE_CHECKING:
    from vaelab.config import VAEConfig

PAIR_FLOATS = 1 << 22  # (z, component) pairs x latent dims held at once in `VampPrior.log_prob`: 16 MiB
PSEUDO_INIT_MEAN, PSEUDO_INIT_STD = 0.05, 0.01  # the paper's initialisation for [0, 1] data
MIXTURE_INIT_SPREAD = 0.5  # a new mixture's means ~ N(0, 0.5^2 I), unit variances: close to N(0, I)


@register_prior("normal")
class StandardNormal(nn.Module):
    """p(z) = N(0, I) on ``latent_dim`` dims; no parameters, KL in closed form."""

    per_dim_kl: ClassVar[bool] = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @classmethod
    def from_config(cls, config: VAEConfig, latent_dim: int, encode: Encode) -> StandardNormal:
        return cls(latent_dim)

    def log_prob(self, z: Tensor) -> Tensor:
        """z (..., D) -> log N(z; 0, I) (...,)."""
        return standard_normal_log_prob(z.reshape(-1, z.shape[-1])).view(z.shape[:-1])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ) -> Tensor:
        """n draws of N(0, temperature^2 I) -> (n, D) on ``device``."""
        return temperature * torch.randn(n, self.latent_dim, generator=generator, device=device)

    def kl(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        """KL(q || N(0, I)) in closed form, (N,); the draws z are not needed."""
        return q.kl()

    def kl_per_dim(self, q: DiagonalGaussian) -> Tensor:
        """KL(q || N(0, I)) of each latent dim, (N, D)."""
        return q.kl_per_dim()


@register_prior("vamp")
class VampPrior(MonteCarloKL, nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k) with K learned pseudo-inputs u_k of the data's shape (C, H, W).

    The pseudo-inputs are stored unconstrained (``raw``, (K, C, H, W)) and mapped into the data's
    domain by ``domain``: "unit" clamps them into [0, 1] with hardtanh, as in the paper (data for the
    Bernoulli and discretized logistic likelihoods); "real" leaves them as they are (Gaussian data).
    """

    def __init__(
        self,
        encode: Callable[[Tensor], DiagonalGaussian],
        n_pseudo: int,
        input_shape: tuple[int, int, int],
        domain: str = "unit",
        latent_dim: int = 0,
    ) -> None:
        super().__init__()
        self.encode = encode  # the model's encoder, x (K, C, H, W) -> q (K, D)
        self.latent_dim = latent_dim  # D, as the encoder gives it (0: not stated)
        self.domain = domain
        mean, std = (PSEUDO_INIT_MEAN, PSEUDO_INIT_STD) if domain == "unit" else (0.0, 0.1)
        self.raw = nn.Parameter(mean + std * torch.randn(n_pseudo, *input_shape))

    @classmethod
    def from_config(cls, config: VAEConfig, latent_dim: int, encode: Encode) -> VampPrior:
        """``config.pseudo_inputs`` pseudo-inputs in the data's domain, the likelihood's ``support``."""
        domain = getattr(LIKELIHOODS.get(config.likelihood), "support", "unit")
        assert config.pseudo_inputs is not None  # VAEConfig resolves the default
        return cls(encode, config.pseudo_inputs, config.input_shape, domain, latent_dim)

    @property
    def pseudo_inputs(self) -> Tensor:
        """The pseudo-inputs in the data's domain, (K, C, H, W)."""
        return F.hardtanh(self.raw, 0.0, 1.0) if self.domain == "unit" else self.raw

    def components(self) -> DiagonalGaussian:
        """The mixture's components q(z | u_k): mean and logvar (K, D)."""
        return self.encode(self.pseudo_inputs)

    def log_prob(self, z: Tensor) -> Tensor:
        """z (..., D) -> log (1/K) sum_k N(z; mu_k, diag(var_k)) (...,), by logsumexp over k."""
        comp = self.components()
        k, d = comp.mean.shape
        flat = z.reshape(-1, d)  # (M, D)
        rows = max(1, PAIR_FLOATS // (k * d))  # bounded memory for the (rows, K, D) differences
        out = [_log_mixture(part, comp.mean, comp.logvar) for part in flat.split(rows)]
        return torch.cat(out).view(z.shape[:-1])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ) -> Tensor:
        """n draws: k ~ uniform{1..K}, then z ~ N(mu_k, (temperature * std_k)^2) -> (n, D), on the
        pseudo-inputs' device (``device`` is ignored).

        ``temperature`` scales each component's std, not the spread of the component means: 0 gives
        the K component means themselves, 1 is the prior."""
        comp = self.components()
        device = comp.mean.device
        k = torch.randint(comp.mean.shape[0], (n,), generator=generator, device=device)  # (n,)
        eps = torch.randn(n, comp.mean.shape[1], generator=generator, device=device, dtype=comp.mean.dtype)
        return comp.mean[k] + temperature * comp.std[k] * eps

    def kl(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        """Monte Carlo KL(q || p) from reparameterized draws z (N, D) or (S, N, D) -> (N,)."""
        return monte_carlo_kl(self, q, z)


@register_prior("mixture")
class MixturePrior(MonteCarloKL, nn.Module):
    """p(z) = sum_m softmax(logits)_m N(z; mean_m, diag(exp(logvar_m))) with M components on D dims.

    ``logits`` (M,), ``mean`` and ``logvar`` (M, D) are parameters: learned with the model
    (``--prior mixture``) or fitted afterwards to its aggregate posterior (`prior_fit`)."""

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.logits = nn.Parameter(torch.zeros(components))
        self.mean = nn.Parameter(MIXTURE_INIT_SPREAD * torch.randn(components, latent_dim))
        self.logvar = nn.Parameter(torch.zeros(components, latent_dim))

    @classmethod
    def from_config(cls, config: VAEConfig, latent_dim: int, encode: Encode) -> MixturePrior:
        assert config.mixture_components is not None  # VAEConfig resolves the default
        return cls(latent_dim, config.mixture_components)

    def log_prob(self, z: Tensor) -> Tensor:
        """z (..., D) -> log sum_m pi_m N(z; mean_m, var_m) (...,), by logsumexp over m.

        The squared distances are expanded into matrix products (z^2 / var - 2 z mean / var + mean^2 /
        var), which is many times faster than (N, M, D) differences and, in float64, exact to far
        below a nat's millionth even for small variances (float32 where the device has no float64)."""
        m, d = self.mean.shape
        dtype = torch.float32 if z.device.type == "mps" else torch.float64
        prec = torch.exp(-self.logvar.to(dtype))  # (M, D)
        mean = self.mean.to(dtype)
        const = (mean.pow(2) * prec + self.logvar.to(dtype)).sum(-1) + d * LOG_2PI  # (M,)
        log_w = torch.log_softmax(self.logits.to(dtype), dim=0)  # (M,)
        flat = z.reshape(-1, d).to(dtype)  # (N, D)
        rows = max(1, PAIR_FLOATS // m)  # bounded memory for the (rows, M) products
        out = []
        for part in flat.split(rows):
            sq = part.pow(2) @ prec.T - 2 * part @ (mean * prec).T + const  # (rows, M)
            out.append(torch.logsumexp(log_w - 0.5 * sq, dim=-1))
        return torch.cat(out).to(z.dtype).view(z.shape[:-1])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ) -> Tensor:
        """n draws: m ~ Categorical(pi), then z ~ N(mean_m, (temperature * std_m)^2) -> (n, D), on the
        parameters' device (``device`` is ignored). ``temperature`` 0 gives component means."""
        weights = torch.softmax(self.logits.detach(), dim=0)
        m = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=weights.device, dtype=weights.dtype)
        return self.mean[m] + temperature * torch.exp(0.5 * self.logvar[m]) * eps

    def kl(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        """Monte Carlo KL(q || p) from reparameterized draws z (N, D) or (S, N, D) -> (N,)."""
        return monte_carlo_kl(self, q, z)


def monte_carlo_kl(prior: Prior, q: DiagonalGaussian, z: Tensor) -> Tensor:
    """KL(q || p) for a prior without a closed form: the mean over draws z (N, D) or (S, N, D) of
    log q(z|x) - log p(z), (N,). Unbiased; one draw when z is (N, D)."""
    est = q.log_prob(z) - prior.log_prob(z)  # (N,) or (S, N)
    return est if z.dim() == 2 else est.mean(0)


def _log_mixture(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """z (M, D); component means and logvars (K, D) -> log (1/K) sum_k N(z; mean_k, exp(logvar_k)) (M,)."""
    diff = z.unsqueeze(1) - mean  # (M, K, D): direct differences, no cancellation for small variances
    log_n = -0.5 * (diff.pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)  # (M, K)
    return torch.logsumexp(log_n, dim=-1) - math.log(mean.shape[0])

