"""The parts and their registries: a prior or a likelihood is one class and one registration, and
everything (training, free bits, IWAE, evaluation, saving and loading) works with it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from vaelab import (
    VAE,
    TrainConfig,
    VAEConfig,
    VaelabError,
    evaluate_nll,
    register_likelihood,
    register_prior,
    train,
)
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.objectives import check_compatible, iwae_terms, neg_elbo, per_dim_kl
from vaelab.models.parts import LIKELIHOODS, PRIORS, Likelihood, Prior
from vaelab.models.priors import MixturePrior, StandardNormal, VampPrior

pytestmark = pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")


@register_prior("learned_normal")
class LearnedGaussian(nn.Module):
    """p(z) = N(loc, diag(exp(logvar))), loc and logvar learned with the model: KL in closed form."""

    per_dim_kl = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.logvar = nn.Parameter(torch.zeros(latent_dim))

    @classmethod
    def from_config(cls, config: VAEConfig, latent_dim: int, encode) -> LearnedGaussian:
        return cls(latent_dim)

    def log_prob(self, z: Tensor) -> Tensor:
        return DiagonalGaussian(self.loc, self.logvar).log_prob(z)

    def sample(self, n, generator=None, temperature=1.0, device=None) -> Tensor:
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.loc.device)
        return self.loc + temperature * torch.exp(0.5 * self.logvar) * eps

    def kl_per_dim(self, q: DiagonalGaussian) -> Tensor:
        return DiagonalGaussian(q.mean[..., None], q.logvar[..., None]).kl_to(
            DiagonalGaussian(self.loc[:, None], self.logvar[:, None])
        )

    def kl(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        return self.kl_per_dim(q).sum(-1)


@register_likelihood("continuous_bernoulli")
class ContinuousBernoulli:
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a density on [0, 1] for grey pixels."""

    n_params = 1

    def __init__(self, logits: Tensor) -> None:
        self.dist = torch.distributions.ContinuousBernoulli(logits=logits)

    @classmethod
    def from_decoder(cls, params: Tensor, config: VAEConfig) -> ContinuousBernoulli:
        return cls(params.select(-4, 0))

    def log_prob(self, x: Tensor) -> Tensor:
        return self.dist.log_prob(x).sum((-3, -2, -1))

    @property
    def mean(self) -> Tensor:
        return self.dist.mean

    def sample(self, generator=None) -> Tensor:
        return self.dist.sample()


def cpu(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "threads": 1} | kw)


def test_the_built_in_parts_are_registered_and_honour_the_protocols():
    assert PRIORS.names()[:3] == ("normal", "vamp", "mixture")
    assert LIKELIHOODS.names()[:3] == ("bernoulli", "gaussian", "logistic")
    for name in ("bernoulli", "gaussian", "logistic"):
        cls = LIKELIHOODS.get(name)
        px = cls.from_decoder(torch.zeros(3, cls.n_params, 1, 8, 8), VAEConfig(likelihood=name))
        assert isinstance(px, Likelihood) and px.log_prob(torch.zeros(3, 1, 8, 8)).shape == (3,)
    torch.manual_seed(0)
    cases = [("normal", StandardNormal, True), ("vamp", VampPrior, False), ("mixture", MixturePrior, False)]
    for name, expected, closed in cases:
        model = VAE(VAEConfig(latent_dim=2, hidden=(8,), prior=name))
        assert type(model.prior) is expected and isinstance(model.prior, Prior)
        assert model.prior.per_dim_kl is closed and per_dim_kl(model.config) is closed
    assert not per_dim_kl(VAEConfig(latent_dim=3, hidden=(8,), top_latent_dim=1))  # a hierarchy's KL


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_prior("normal")(LearnedGaussian)
    assert register_prior("learned_normal")(LearnedGaussian) is LearnedGaussian  # same class: fine
    with pytest.raises(VaelabError, match=r"^VAEConfig\.likelihood: Tensor is not registered; decorate it"):
        VAE(nn.Linear(1, 4), nn.Linear(2, 64), likelihood=Tensor, input_shape=(1, 8, 8), latent_dim=2)


def test_a_user_prior_has_a_closed_form_kl_that_matches_monte_carlo():
    torch.manual_seed(0)
    prior = LearnedGaussian(3)
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([0.5, -1.0, 0.0]))
        prior.logvar.copy_(torch.tensor([0.2, -0.5, 1.0]))
    q = DiagonalGaussian(torch.randn(4, 3), 0.3 * torch.randn(4, 3))
    z = q.rsample(torch.randn(200_000, 4, 3, generator=torch.Generator().manual_seed(1)))
    mc = (q.log_prob(z) - prior.log_prob(z)).mean(0)
    torch.testing.assert_close(prior.kl(q, z[0]), mc, rtol=0, atol=0.02)
    ref = torch.distributions.Normal(prior.loc, torch.exp(0.5 * prior.logvar)).log_prob(z[0]).sum(-1)
    torch.testing.assert_close(prior.log_prob(z[0]), ref, rtol=1e-5, atol=1e-5)


def test_a_user_prior_trains_with_free_bits_and_round_trips_by_name(digits, tmp_path):
    config = VAEConfig(latent_dim=2, hidden=(16,), prior="learned_normal")
    check_compatible(config, cpu(free_bits=0.1))  # the prior says its KL splits over dims
    torch.manual_seed(0)
    model = VAE(config)
    history = train(model, digits, cpu(epochs=3, free_bits=0.1, lr=3e-3), progress=False)
    assert history[-1]["test_neg_elbo"] < history[0]["test_neg_elbo"]
    assert not torch.equal(model.prior.loc.detach(), torch.zeros(2))  # p(z) learned
    assert history[-1]["kl_per_dim"] is not None  # reported per dim, as for N(0, I)
    model.save_pretrained(tmp_path / "m")
    back = VAE.from_pretrained(tmp_path / "m")
    assert isinstance(back.prior, LearnedGaussian) and torch.equal(back.prior.loc, model.prior.loc)
    x = digits.test.batch(slice(0, 32))
    g = torch.Generator().manual_seed(0)
    elbo = -neg_elbo(back, x, generator=g).neg_elbo.mean()
    bound = -iwae_terms(back, x, generator=torch.Generator().manual_seed(0), k=50).neg_iwae.mean()
    assert bound >= elbo - 0.5


def test_the_free_bits_rule_lives_on_the_prior():
    for name in ("vamp", "mixture"):
        with pytest.raises(VaelabError, match="free_bits floors a per-dim KL"):
            check_compatible(VAEConfig(latent_dim=2, prior=name), cpu(free_bits=0.1))


def test_a_user_likelihood_matches_torch_distributions_and_trains(digits):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,), likelihood="continuous_bernoulli"))
    x = digits.test.batch(slice(0, 8), binarize=False)
    px = model.decode(torch.zeros(8, 2))
    assert isinstance(px, ContinuousBernoulli) and px.mean.shape == (8, 1, 8, 8)
    logits = model.decoder(torch.zeros(8, 2)).view(8, 1, 8, 8)
    ref = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(px.log_prob(x), ref)
    history = train(model, digits, cpu(epochs=2), progress=False)
    assert math.isfinite(history[-1]["test_neg_elbo"])
    result = evaluate_nll(model, digits.test.head(20), importance_samples=10, progress=False)
    assert math.isfinite(result["nll"])
