"""beta, KL warm-up, free bits and IWAE: each reduces to the plain ELBO where it should, and the
IWAE bound is checked against an exact marginal likelihood (a linear-Gaussian model)."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.config import TrainConfig, VAEConfig
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.objectives import (
    Elbo,
    Iwae,
    free_bits_kl,
    iwae_terms,
    kl_weight,
    make_objective,
    neg_elbo,
    objective_metrics,
)
from vaelab.models.vae import VAE


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model_and_batch(make_vae):
    model = make_vae(latent_dim=3, hidden=(16,))
    return model, torch.rand(10, 1, 8, 8)


def test_beta_one_is_the_plain_elbo_exactly(model_and_batch):
    model, x = model_and_batch
    plain = neg_elbo(model, x, generator=gen())
    terms = make_objective(TrainConfig(beta=1.0), epoch=1)(model, x, None, generator=gen())
    assert torch.equal(terms.loss, plain.loss)
    assert torch.equal(terms.loss, plain.neg_elbo.mean())


def test_beta_weights_the_loss_but_not_the_reported_elbo(model_and_batch):
    model, x = model_and_batch
    plain = neg_elbo(model, x, generator=gen())
    terms = make_objective(TrainConfig(beta=4.0), epoch=1)(model, x, None, generator=gen())
    assert torch.equal(terms.neg_elbo, plain.neg_elbo)  # the true -ELBO, unweighted
    assert torch.allclose(terms.loss, terms.recon.mean() + 4.0 * terms.kl.mean())
    assert terms.loss > plain.loss


def test_warmup_schedule():
    cfg = TrainConfig(kl_warmup=4, beta=2.0)
    assert [kl_weight(cfg, e) for e in range(1, 7)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert kl_weight(TrainConfig(), 1) == 1.0


def test_finished_warmup_is_the_plain_elbo_exactly(model_and_batch):
    model, x = model_and_batch
    plain = neg_elbo(model, x, generator=gen())
    for epoch in (5, 6, 100):
        loss = make_objective(TrainConfig(kl_warmup=5), epoch)(model, x, None, generator=gen()).loss
        assert torch.equal(loss, plain.loss)
    mid = make_objective(TrainConfig(kl_warmup=5), 2)(model, x, None, generator=gen())
    assert torch.allclose(mid.loss, mid.recon.mean() + 0.4 * mid.kl.mean())
    assert torch.equal(mid.neg_elbo, plain.neg_elbo)


def test_free_bits_floor_per_dim():
    mean = torch.tensor([[2.0, 0.05, 1.0], [2.0, -0.05, 1.0]], requires_grad=True)
    q = DiagonalGaussian(mean, torch.zeros(2, 3))
    kl = q.kl_per_dim()  # per dim: 2.0, 0.00125, 0.5
    value = free_bits_kl(kl, 0.6)
    assert value.item() == pytest.approx(2.0 + 0.6 + 0.6)
    value.backward()
    # dims under the floor are free: no KL gradient; the dim above it is penalised as usual
    assert mean.grad[:, 1].eq(0).all() and mean.grad[:, 2].eq(0).all()
    assert torch.allclose(mean.grad[:, 0], torch.tensor([1.0, 1.0]))  # d/dmu of mean_n mu^2/2
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(kl.sum(1).mean().item())


def test_free_bits_in_the_loss(model_and_batch):
    model, x = model_and_batch
    plain = neg_elbo(model, x, generator=gen())
    q = model.encode(x)
    per_dim = q.kl_per_dim().mean(0)
    low = 0.5 * per_dim.min().item()  # under every dim's KL: no effect
    terms = neg_elbo(model, x, generator=gen(), free_bits=low)
    assert torch.allclose(terms.loss, plain.loss) and torch.equal(terms.neg_elbo, plain.neg_elbo)
    high = 2.0 * per_dim.max().item() + 1.0  # over every dim's KL: the KL term is a constant
    model.zero_grad()
    terms = neg_elbo(model, x, generator=gen(), free_bits=high)
    assert terms.loss.item() == pytest.approx(terms.recon.mean().item() + 3 * high, rel=1e-6)
    terms.loss.backward()
    with_floor = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    neg_elbo(model, x, generator=gen()).recon.mean().backward()
    recon_only = [p.grad for p in model.encoder.parameters()]
    assert all(torch.allclose(a, b) for a, b in zip(with_floor, recon_only, strict=True))
    model.zero_grad()


def test_iwae_k1_draws_the_elbo_sample(model_and_batch):
    model, x = model_and_batch
    plain = neg_elbo(model, x, generator=gen())
    iw = iwae_terms(model, x, generator=gen(), k=1)
    assert torch.equal(iw.recon, plain.recon)  # same z, same log p(x|z)
    assert torch.equal(iw.kl, plain.kl) and torch.equal(iw.neg_elbo, plain.neg_elbo)
    # with one sample the bound is the ELBO whose KL is estimated from that z
    q = model.encode(x)
    z = q.sample(gen())
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    post = torch.distributions.Normal(q.mean, q.std).log_prob(z).sum(-1)
    assert torch.allclose(iw.neg_iwae, plain.recon - prior + post, atol=1e-4)
    assert torch.equal(iw.loss, iw.neg_iwae.mean())


def test_iwae_k1_is_the_elbo_in_expectation(model_and_batch):
    model, x = model_and_batch
    reps = 2000
    many = x.repeat(reps, 1, 1, 1)  # (reps * N, ...): row r * N + j is a copy of example j
    with torch.no_grad():
        draws = iwae_terms(model, many, generator=gen(1), k=1).neg_iwae.view(reps, -1)
        plain = neg_elbo(model, many, generator=gen(2)).neg_elbo.view(reps, -1)
    se = (draws.var(0) / reps + plain.var(0) / reps).sqrt()
    assert ((draws.mean(0) - plain.mean(0)).abs() < 4 * se + 1e-3).all()


def linear_gaussian(exact_posterior: bool) -> tuple[VAE, torch.distributions.Distribution]:
    """x = W z + b + s * noise with z ~ N(0, I): p(x) is Gaussian in closed form. With
    ``exact_posterior`` the encoder outputs the true p(z|x), so every importance weight is p(x)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(1, 1, 4), latent_dim=2, hidden=(), likelihood="gaussian"))
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])  # orthogonal columns
    b = torch.tensor([0.5, -0.5, 0.2, 0.0])
    dec = model.decoder[0]  # Linear(2, 8): rows 0..3 the mean, rows 4..7 sigma's pre-activation
    enc = model.encoder[0]  # Linear(4, 4): rows 0..1 the mean, rows 2..3 the logvar
    with torch.no_grad():
        dec.weight.zero_()
        dec.weight[:4] = w
        dec.bias[:4] = b
        dec.bias[4:] = -0.7
        s = model.decode(torch.zeros(1, 2)).log_sigma.exp().flatten()[0]  # the decoder's sigma
        cov = torch.linalg.inv(torch.eye(2) + w.T @ w / s**2)  # diagonal: W has orthogonal columns
        a = cov @ w.T / s**2
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:2] = a
        enc.bias[:2] = -a @ b
        enc.bias[2:] = torch.diagonal(cov).log()
        if not exact_posterior:
            enc.weight[:2] *= 0.6
            enc.bias[2:] += 0.8
    marginal = torch.distributions.MultivariateNormal(b, w @ w.T + s**2 * torch.eye(4))
    return model, marginal


def test_iwae_equals_log_px_with_the_exact_posterior():
    model, marginal = linear_gaussian(exact_posterior=True)
    x = marginal.sample((6,))
    log_px = marginal.log_prob(x)
    for k in (1, 7):
        with torch.no_grad():
            bound = -iwae_terms(model, x.view(6, 1, 1, 4), generator=gen(), k=k).neg_iwae
        assert torch.allclose(bound, log_px, atol=1e-4)


def test_iwae_tightens_with_k_towards_log_px():
    model, marginal = linear_gaussian(exact_posterior=False)
    torch.manual_seed(1)
    x = marginal.sample((8,))
    log_px = marginal.log_prob(x)
    xs = x.view(8, 1, 1, 4)
    reps = 400
    many = xs.repeat(reps, 1, 1, 1)
    with torch.no_grad():
        elbo = -neg_elbo(model, many, generator=gen(2)).neg_elbo.view(reps, 8).mean(0)
        iw = {
            k: -iwae_terms(model, many, generator=gen(k), k=k).neg_iwae.view(reps, 8).mean(0) for k in (5, 50)
        }
        big = -iwae_terms(model, xs, generator=gen(3), k=20000).neg_iwae
    gap = (log_px - elbo).mean()
    assert gap > 0.1  # the perturbed encoder leaves a real gap to close
    assert (elbo < iw[5] + 0.02).all() and (iw[5] < iw[50] + 0.02).all()
    assert (iw[50] < log_px + 0.02).all()
    assert torch.allclose(big, log_px, atol=0.05 * gap.item() + 0.01)


def test_objectives_are_values_that_call_the_loss_functions(model_and_batch):
    """`make_objective` gives frozen dataclasses, equal and hashable by value (what the engine keys its
    compiled and captured steps by), that compute exactly what `neg_elbo` and `iwae_terms` do."""
    model, x = model_and_batch
    warm = TrainConfig(kl_warmup=2)
    assert make_objective(warm, 2) == make_objective(warm, 3) == Elbo(beta=1.0, free_bits=0.0)
    assert hash(make_objective(warm, 2)) == hash(make_objective(warm, 3))
    assert make_objective(warm, 1) == Elbo(beta=0.5) != make_objective(warm, 2)
    assert make_objective(TrainConfig(free_bits=0.25), 1) == Elbo(free_bits=0.25)
    assert make_objective(TrainConfig(objective="iwae", k=4), 1) == Iwae(k=4) != Iwae(k=5)
    assert len({Elbo(), Elbo(1.0, 0.0), Iwae(4), Iwae(4)}) == 2
    with pytest.raises(AttributeError):
        Elbo().beta = 2.0  # frozen: a key cannot change under a captured step
    a = Elbo(beta=0.3, free_bits=0.1)(model, x, None, generator=gen())
    b = neg_elbo(model, x, generator=gen(), beta=0.3, free_bits=0.1)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.neg_elbo, b.neg_elbo)
    a, b = Iwae(k=3)(model, x, generator=gen()), iwae_terms(model, x, generator=gen(), k=3)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.neg_iwae, b.neg_iwae)
    for bad in (lambda: Elbo(beta=-1.0), lambda: Elbo(free_bits=float("nan")), lambda: Iwae(k=0)):
        with pytest.raises(VaelabError):
            bad()


def test_objective_config_rules():
    with pytest.raises(VaelabError, match="iwae"):
        TrainConfig(k=5)
    with pytest.raises(VaelabError, match="elbo"):
        TrainConfig(objective="iwae", k=5, beta=2.0)
    with pytest.raises(VaelabError, match="free_bits"):
        TrainConfig(free_bits=-1.0)
    with pytest.raises(VaelabError, match="objective"):
        TrainConfig(objective="wake-sleep")


def test_objective_metrics(model_and_batch):
    model, x = model_and_batch
    test = Split(x)
    assert objective_metrics(model, test, TrainConfig(), 1) == {}
    assert objective_metrics(model, test, TrainConfig(beta=0.5, kl_warmup=2), 1) == {
        "kl_weight": 0.25,
        "free_bits": 0.0,
    }
    got = objective_metrics(model, test, TrainConfig(objective="iwae", k=4), 1, seed=3)
    with torch.no_grad():
        want = iwae_terms(model, x, generator=gen(3), k=4).neg_iwae.double().mean().item()
    assert got["iwae_k"] == 4 and got["test_neg_iwae"] == pytest.approx(want, rel=1e-6)
    assert math.isfinite(got["test_neg_iwae"])
