"""Training objectives. The loss is a function of (model, x, y), never hidden in ``forward``.

`neg_elbo` and `iwae_terms` are the loss functions. `Elbo` and `Iwae` bind their hyperparameters
as small frozen dataclasses, callable like the functions and equal and hashable by value, so the
training engine can key a compiled or captured step by the objective itself.

Whatever the loss weights (beta, KL warm-up, free bits) or bounds (IWAE), the returned terms always
carry the true ELBO (``ElboTerms.neg_elbo = recon + kl``), so a weighted loss never passes for a
likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vaelab.config import TrainConfig, VAEConfig
from vaelab.data.dataset import Split
from vaelab.device import make_generator
from vaelab.errors import ConfigError, VaelabError
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.hierarchy import HierarchicalPosterior, HierarchicalPrior
from vaelab.models.parts import PRIORS
from vaelab.models.vae import VAE, eval_mode


class ElboTerms(NamedTuple):
    """Per-example terms in nats. ``loss`` is the scalar to minimise (a batch mean)."""

    loss: Tensor  # ()
    recon: Tensor  # (N,)  -E_q[log p(x|z)], Monte Carlo estimate
    kl: Tensor  # (N,)  KL(q(z|x) || p(z)): closed form for N(0, I), else a Monte Carlo estimate
    neg_iwae: Tensor | None = None  # (N,)  -IWAE bound, for the iwae objective

    @property
    def neg_elbo(self) -> Tensor:
        """(N,): the true -ELBO, whatever weights the loss used."""
        return self.recon + self.kl


def per_dim_kl(config: VAEConfig) -> bool:
    """Whether the KL of the model ``config`` describes is a closed-form sum over latent dims: its
    prior says so (`parts.Prior.per_dim_kl`); a hierarchy's KL is taken at a drawn z2, so never."""
    return not config.top_latent_dim and getattr(PRIORS.get(config.prior), "per_dim_kl", False) is True


def check_compatible(model: VAEConfig, train: TrainConfig) -> None:
    """Rules between a model and its training: free bits floor a per-dim KL, which a Monte-Carlo KL
    (a vamp or mixture prior, a hierarchical VAE) does not have."""
    if train.free_bits and not per_dim_kl(model):
        which = "{m.top_latent_dim}" if model.top_latent_dim else "{m.prior} " + model.prior
        raise ConfigError(
            TrainConfig, "{f.free_bits} floors a per-dim KL, which " + which + " does not have", m=VAEConfig
        )


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """sum_j max(free_bits, mean_n KL_nj): the KL term with a per-dim floor, a scalar.

    kl_per_dim: (N, K). As in Kingma et al. 2016 (IAF) the floor applies to each dim's batch mean, so a
    dim below it gets no KL gradient (it is "free") while the others are penalised as usual.
    """
    return kl_per_dim.mean(0).clamp(min=free_bits).sum()


def neg_elbo(
    model: VAE,
    x: Tensor,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    beta: float = 1.0,
    free_bits: float = 0.0,
) -> ElboTerms:
    """loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z)), summed over dims, mean over batch.

    x: (N, C, H, W) in the likelihood's domain; y: (N,) labels, used by conditional models only.
    ``beta=1, free_bits=0`` is the ELBO of the write-up; ``free_bits > 0`` floors the KL per latent
    dim (see `free_bits_kl`). The returned recon and kl are unweighted whatever the loss.
    The KL is in closed form for the normal prior; for the VampPrior it is log q(z|x) - log p(z) at
    the same z as the reconstruction term, so recon + kl is the single-sample -ELBO estimate.
    """
    out = model(x, y, generator)  # q(z|x), one reparameterized z (N, K), p(x|z): a VAEOutput
    q, z = out.posterior, out.z
    recon = -out.likelihood.log_prob(x)  # (N,)
    if not model.prior.per_dim_kl:  # a Monte Carlo KL: no per-dim KL to floor
        if free_bits > 0:
            raise VaelabError("free_bits floors a per-dim KL, which this model's prior does not have")
        kl = _prior_kl(model, q, z)  # (N,)
        return ElboTerms((recon + beta * kl).mean(), recon, kl)
    kl_dims = model.prior.kl_per_dim(q)  # (N, K)
    kl = kl_dims.sum(-1)  # (N,)
    if free_bits > 0:
        loss = recon.mean() + beta * free_bits_kl(kl_dims, free_bits)
    else:
        loss = (recon + beta * kl).mean()
    return ElboTerms(loss, recon, kl)


def iwae_terms(
    model: VAE,
    x: Tensor,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    k: int = 1,
) -> ElboTerms:
    """The IWAE bound (Burda et al. 2016): log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x).

    Returns loss = -mean bound, ``neg_iwae`` (N,), and the true ELBO terms from the same k draws
    (recon averaged over them; the KL in closed form for the normal prior, else averaged over the k
    draws). k=1 draws the same z as `neg_elbo` with the same
    generator, and the bound is then the ELBO with the KL estimated from that z.
    """
    q = model.encode(x, y)  # mean, logvar (N, D)
    n = x.shape[0]
    eps = torch.randn((k, *q.mean.shape), generator=generator, device=q.mean.device, dtype=q.mean.dtype)
    z = q.rsample(eps)  # (k, N, D)
    flat_z = z.flatten(0, 1)  # (k * N, D), sample-major: row i * N + j is draw i of example j
    flat_x = x.expand(k, *x.shape).flatten(0, 1)  # (k * N, C, H, W)
    flat_y = None if y is None else y.repeat(k)
    log_px = model.decode(flat_z, flat_y).log_prob(flat_x).view(k, n)  # (k, N)
    log_pz = model.prior.log_prob(flat_z).view(k, n)
    log_w = log_px + log_pz - q.log_prob(z)  # (k, N) log importance weights
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (N,)
    return ElboTerms(-bound.mean(), -log_px.mean(0), _prior_kl(model, q, z), -bound)


def _prior_kl(model: VAE, q: DiagonalGaussian | HierarchicalPosterior, z: Tensor) -> Tensor:
    """``model.prior.kl(q, z)`` -> (N,): a hierarchical prior comes with a hierarchical posterior."""
    if isinstance(model.prior, HierarchicalPrior):
        assert isinstance(q, HierarchicalPosterior)
        return model.prior.kl(q, z)
    assert isinstance(q, DiagonalGaussian)
    return model.prior.kl(q, z)


def kl_weight(config: TrainConfig, epoch: int) -> float:
    """The KL weight in epoch ``epoch`` (counted from 1): beta * min(1, epoch / kl_warmup)."""
    if config.kl_warmup <= 0:
        return config.beta
    return config.beta * min(1.0, epoch / config.kl_warmup)


@dataclass(frozen=True)
class Elbo:
    """`neg_elbo` with KL weight ``beta`` and per-dim KL floor ``free_bits`` (nats); the defaults
    are the plain ELBO. Call as ``(model, x, y=None, generator=None) -> ElboTerms``."""

    beta: float = 1.0
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        if not (self.beta >= 0 and self.free_bits >= 0):
            raise VaelabError(f"Elbo needs beta >= 0 and free_bits >= 0, got {self.beta}, {self.free_bits}")

    def __call__(
        self, model: VAE, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ElboTerms:
        return neg_elbo(model, x, y, generator, beta=self.beta, free_bits=self.free_bits)


@dataclass(frozen=True)
class Iwae:
    """`iwae_terms` with ``k`` importance samples per example. Call as
    ``(model, x, y=None, generator=None) -> ElboTerms``."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise VaelabError(f"Iwae needs an integer k >= 1 importance samples, got {self.k!r}")

    def __call__(
        self, model: VAE, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ElboTerms:
        return iwae_terms(model, x, y, generator, k=self.k)


Objective = Elbo | Iwae


def make_objective(config: TrainConfig, epoch: int) -> Objective:
    """The objective for ``epoch`` (counted from 1): ``Iwae(k)``, or ``Elbo`` with this epoch's KL
    weight (`kl_weight`) and the configured free bits."""
    if config.objective == "iwae":
        return Iwae(config.k)
    return Elbo(beta=kl_weight(config, epoch), free_bits=config.free_bits)


@torch.no_grad()
def objective_metrics(
    model: VAE, test: Split, config: TrainConfig, epoch: int, seed: int = 0, batch_size: int = 500
) -> dict[str, float]:
    """What the loss was, beside the true ELBO the training loop reports: the KL weight when it is not 1
    or free bits are on, and for the iwae objective the test -IWAE bound (nats per example, seeded)."""
    if config.objective == "iwae":
        gen = make_generator(model.device, seed)
        total = torch.zeros((), dtype=torch.float64, device=model.device)
        with eval_mode(model):
            for start in range(0, len(test), batch_size):
                sl = slice(start, start + batch_size)
                y = None if test.y is None else test.y[sl].to(model.device)
                terms = iwae_terms(model, test.batch(sl).to(model.device), y, gen, config.k)
                assert terms.neg_iwae is not None  # iwae_terms always sets it
                total += terms.neg_iwae.double().sum()
        return {"iwae_k": config.k, "test_neg_iwae": total.item() / max(len(test), 1)}
    if config.beta == 1 and not config.kl_warmup and not config.free_bits:
        return {}
    return {"kl_weight": kl_weight(config, epoch), "free_bits": config.free_bits}
