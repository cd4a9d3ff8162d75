"""The maths of distributions.py against independent computations."""

from __future__ import annotations

import math

import torch
from torch import distributions as D

from vaelab.models.distributions import Bernoulli, DiagonalGaussian, Gaussian, standard_normal_log_prob


def _posterior(n: int = 5, d: int = 3, seed: int = 0) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 0.5)


def test_kl_matches_torch_distributions():
    q = _posterior()
    ref = D.kl_divergence(
        D.Normal(q.mean, q.std), D.Normal(torch.zeros_like(q.mean), torch.ones_like(q.mean))
    ).sum(-1)
    torch.testing.assert_close(q.kl(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.kl_per_dim().sum(-1), q.kl())


def test_closed_form_kl_matches_monte_carlo_within_sampling_error():
    q = _posterior(n=4, d=2, seed=1)
    g = torch.Generator().manual_seed(2)
    k = 200_000
    z = q.mean + q.std * torch.randn(k, *q.mean.shape, generator=g)  # (K, N, D)
    log_ratio = q.log_prob(z) - standard_normal_log_prob(z.reshape(-1, 2)).view(k, 4)  # (K, N)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(k)
    assert torch.all((mc - q.kl()).abs() < 5 * se), (mc, q.kl(), se)


def test_posterior_log_prob_matches_torch():
    q = _posterior()
    z = torch.randn(7, 5, 3)
    ref = D.Normal(q.mean, q.std).log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_prob(z), ref, rtol=1e-5, atol=1e-5)


def test_standard_normal_log_prob():
    z = torch.randn(6, 4)
    ref = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(standard_normal_log_prob(z), ref)


def test_sample_is_reparameterized_and_seeded():
    mean = torch.zeros(3, 2, requires_grad=True)
    logvar = torch.zeros(3, 2, requires_grad=True)
    q = DiagonalGaussian(mean, logvar)
    z1 = q.sample(torch.Generator().manual_seed(0))
    z2 = q.sample(torch.Generator().manual_seed(0))
    assert torch.equal(z1, z2)
    z1.sum().backward()
    assert mean.grad is not None and torch.all(mean.grad == 1)
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_bernoulli_log_prob_matches_torch_for_binary_and_grey_pixels():
    logits = torch.randn(4, 1, 8, 8) * 3
    for x in (torch.bernoulli(torch.full((4, 1, 8, 8), 0.5)), torch.rand(4, 1, 8, 8)):
        # grey pixels: the cross-entropy x log p + (1 - x) log(1 - p), computed independently
        logsig = torch.nn.functional.logsigmoid
        expect = (x * logsig(logits) + (1 - x) * logsig(-logits)).flatten(1).sum(1)
        torch.testing.assert_close(Bernoulli(logits).log_prob(x), expect, rtol=1e-5, atol=1e-4)
    xb = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    ref = D.Bernoulli(logits=logits).log_prob(xb).flatten(1).sum(1)
    torch.testing.assert_close(Bernoulli(logits).log_prob(xb), ref, rtol=1e-5, atol=1e-4)


def test_bernoulli_is_stable_for_extreme_logits():
    logits = torch.tensor([[[[200.0, -200.0]]]])
    x = torch.tensor([[[[0.0, 1.0]]]])
    lp = Bernoulli(logits).log_prob(x)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, torch.tensor([-400.0]))


def test_gaussian_log_prob_matches_torch():
    mean, log_sigma = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2) * 0.3
    x = torch.randn(3, 1, 2, 2)
    ref = D.Normal(mean, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian(mean, log_sigma).log_prob(x), ref, rtol=1e-5, atol=1e-5)


def test_likelihood_sampling_shapes_and_ranges():
    g = torch.Generator().manual_seed(0)
    b = Bernoulli(torch.randn(5, 1, 8, 8)).sample(g)
    assert b.shape == (5, 1, 8, 8) and set(b.unique().tolist()) <= {0.0, 1.0}
    s = Gaussian(torch.zeros(5, 3, 4, 4), torch.zeros(5, 3, 4, 4)).sample(g)
    assert s.shape == (5, 3, 4, 4)


def test_bernoulli_draws_what_torch_bernoulli_draws_from_the_same_stream():
    from vaelab.device import bernoulli

    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        p = torch.rand(5, 1, 8, 8).to(dtype)
        torch.manual_seed(3)
        want = torch.bernoulli(p)
        torch.manual_seed(3)
        got = bernoulli(p)
        assert got.dtype == dtype and torch.equal(got, want)
        g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        assert torch.equal(bernoulli(p, g1), torch.bernoulli(p, generator=g2))
    edges = bernoulli(torch.tensor([0.0, 1.0] * 500))
    assert torch.equal(edges, torch.tensor([0.0, 1.0] * 500))
