"""The importance-sampled likelihood (vaelab.evaluation.likelihood): exact cases, bounds, reproducibility."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import distributions as D
from torch import nn

from vaelab import VAE, TrainConfig, VAEConfig, evaluate_elbo, evaluate_nll, log_px_estimates, train
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.evaluation.likelihood import importance_log_weights


@pytest.fixture(scope="module")
def trained(digits, make_vae):
    """A tiny VAE trained briefly on 8x8 digits (2-d latent)."""
    model = make_vae()
    train(model, digits, TrainConfig(epochs=10, batch_size=64, lr=3e-3), progress=False)
    return model


# --- a linear-Gaussian VAE, where log p(x) is analytic -------------------------------------------


def _only_linear(net: nn.Module) -> nn.Linear:
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 1, "hidden=() must give a single linear layer"
    return layers[0]


def linear_gaussian(dx: int = 6, k: int = 2, sigma: float = 0.5, exact_posterior: bool = True, seed: int = 0):
    """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I), so p(x) = N(b, W W^T + sigma^2 I).

    W has orthogonal columns, which makes the true posterior diagonal: with ``exact_posterior`` the
    encoder is set to it exactly, otherwise to a deliberately wrong (shifted, wider) Gaussian.
    Returns (model, p(x) as a torch MultivariateNormal).
    """
    g = torch.Generator().manual_seed(seed)
    q_mat, _ = torch.linalg.qr(torch.randn(dx, k, generator=g))
    w = q_mat * torch.tensor([1.5, 0.8])[:k]  # (dx, k), orthogonal columns
    b = torch.randn(dx, generator=g) * 0.3
    cfg = VAEConfig(input_shape=(1, 1, dx), latent_dim=k, hidden=(), likelihood="gaussian", min_sigma=0.01)
    model = VAE(cfg)
    # Posterior: Sigma = (I + W^T W / s^2)^-1 (diagonal here), mean = Sigma W^T (x - b) / s^2.
    post_cov = torch.linalg.inv(torch.eye(k) + w.T @ w / sigma**2)
    gain = post_cov @ w.T / sigma**2  # (k, dx)
    post_logvar = torch.log(torch.diagonal(post_cov))
    if not exact_posterior:
        gain, post_logvar = 0.9 * gain, post_logvar + 0.4
    enc, dec = _only_linear(model.encoder), _only_linear(model.decoder)
    floor = math.log(cfg.min_sigma)
    raw = floor + math.log(math.expm1(math.log(sigma) - floor))  # inverse of the decoder's soft floor
    with torch.no_grad():
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:k] = gain
        enc.bias[:k] = -gain @ b + (0.0 if exact_posterior else 0.2)
        enc.bias[k:] = post_logvar
        dec.weight.zero_()
        dec.weight[:dx] = w
        dec.bias[:dx] = b
        dec.bias[dx:] = raw
    p_x = D.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(dx))
    return model.eval(), p_x


def _sample_split(p_x: D.MultivariateNormal, n: int, seed: int = 1) -> Split:
    torch.manual_seed(seed)
    x = p_x.sample((n,))  # (n, dx)
    return Split(x.view(n, 1, 1, -1))


def test_linear_gaussian_decoder_is_the_intended_model():
    model, _p_x = linear_gaussian()
    z = torch.randn(5, 2)
    px = model.decode(z)
    assert torch.allclose(px.log_sigma, torch.full_like(px.log_sigma, math.log(0.5)), atol=1e-5)


def test_exact_posterior_gives_the_exact_log_likelihood_for_any_k():
    # With q = p(z|x) every importance weight equals p(x): the estimate is exact, even at K = 1.
    model, p_x = linear_gaussian(exact_posterior=True)
    split = _sample_split(p_x, 50)
    exact = p_x.log_prob(split.x.view(50, -1)).double()
    for k in (1, 7):
        log_px, elbo = log_px_estimates(model, split, k, seed=3, progress=False)
        assert torch.allclose(log_px, exact, atol=1e-3)
        assert torch.allclose(elbo, exact, atol=1e-3)


def test_wrong_posterior_estimate_matches_exact_value_within_standard_error():
    model, p_x = linear_gaussian(exact_posterior=False)
    n = 200
    split = _sample_split(p_x, n)
    exact = -p_x.log_prob(split.x.view(n, -1)).double()  # (n,) exact -log p(x)
    r = evaluate_nll(model, split, importance_samples=2000, seed=0, progress=False)
    assert abs(r["nll"] - exact.mean().item()) < 3 * r["nll_std_err"]
    # The stricter check: the per-example Monte Carlo errors average to ~0 within their own
    # standard error (about 0.001 nats here), and the K=1 estimate (the ELBO) is visibly looser.
    log_px, elbo = log_px_estimates(model, split, 2000, seed=0, progress=False)
    assert r["nll"] == pytest.approx(-log_px.mean().item())
    err = -log_px - exact
    assert abs(err.mean().item()) < 4 * err.std().item() / math.sqrt(n) + 1e-3
    assert err.abs().max() < 0.2  # each example is within Monte Carlo noise of its exact value
    assert (-elbo - exact).mean() > 0.3  # the gap the ELBO leaves with this wrong posterior


# --- against an independent computation ----------------------------------------------------------


def test_log_weights_match_torch_distributions(trained, digits):
    x = digits.test.batch(slice(0, 5))
    q = trained.encode(x)
    eps = torch.randn(3, 5, 2)
    got = importance_log_weights(trained, x, q, eps)  # (3, 5)
    z = q.mean + q.std * eps
    logits = trained.decoder(z)  # (3, 5, 64)
    ref = (
        D.Bernoulli(logits=logits, validate_args=False).log_prob(x.flatten(1)).sum(-1)
        + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
        - D.Normal(q.mean, q.std).log_prob(z).sum(-1)
    )
    assert got.shape == (3, 5)
    assert torch.allclose(got, ref, atol=1e-4)


# --- the bounds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nll_never_exceeds_neg_elbo(trained, digits, seed):
    # Same samples: log-mean-exp >= mean (Jensen), so this holds on every run, example by example.
    log_px, k_elbo = log_px_estimates(trained, digits.test, 200, seed=seed, progress=False)
    assert bool((log_px >= k_elbo - 1e-9).all())
    r = evaluate_nll(trained, digits.test, importance_samples=200, seed=seed, progress=False)
    assert r["nll"] <= r["neg_elbo_k"]
    # Against the reported one-sample -ELBO (its own noise averaged over a few seeds).
    neg_elbo = sum(evaluate_elbo(trained, digits.test, seed=s)["neg_elbo"] for s in range(5)) / 5
    assert r["nll"] < neg_elbo


def test_estimate_tightens_as_k_grows(trained, digits):
    ks = (1, 10, 100, 1000)
    nll = [
        sum(evaluate_nll(trained, digits.test, k, seed=s, progress=False)["nll"] for s in (0, 1)) / 2
        for k in ks
    ]
    assert all(a > b for a, b in itertools.pairwise(nll)), nll
    # K = 1 is the ELBO itself: it agrees with the one-sample -ELBO up to Monte Carlo noise.
    assert abs(nll[0] - evaluate_elbo(trained, digits.test)["neg_elbo"]) < 0.5


def test_result_fields(trained, digits):
    r = evaluate_nll(trained, digits.test, importance_samples=20, progress=False)
    n = len(digits.test)
    nll_i = -log_px_estimates(trained, digits.test, 20, progress=False)[0]
    assert r["n"] == n and r["importance_samples"] == 20
    assert r["nll"] == pytest.approx(nll_i.mean().item())
    assert r["nll_std_err"] == pytest.approx(nll_i.std().item() / math.sqrt(n))
    assert r["bits_per_dim"] == pytest.approx(r["nll"] / (64 * math.log(2)))


# --- reproducibility -----------------------------------------------------------------------------


def test_reproducible_with_the_seed_and_independent_of_chunk(trained, digits):
    state = torch.get_rng_state()
    a = log_px_estimates(trained, digits.test, 50, seed=4, progress=False)[0]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    b = log_px_estimates(trained, digits.test, 50, seed=4, progress=False)[0]
    assert torch.equal(a, b)
    c = log_px_estimates(trained, digits.test, 50, seed=5, progress=False)[0]
    assert not torch.equal(a, c)
    for chunk in (1, 333, 10**6):  # chunk only changes memory and speed
        d = log_px_estimates(trained, digits.test, 50, chunk=chunk, seed=4, progress=False)[0]
        assert torch.allclose(a, d, atol=1e-4)


def test_model_mode_is_restored(trained, digits):
    trained.train()
    evaluate_nll(trained, Split(digits.test.x[:10]), 5, progress=False)
    assert trained.training
    trained.eval()


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"importance_samples": 0}, "importance"), ({"chunk": 0}, "chunk")]
)
def test_bad_arguments_are_clear_errors(trained, digits, kwargs, message):
    with pytest.raises(VaelabError, match=message):
        evaluate_nll(trained, digits.test, **{"importance_samples": 5, **kwargs})
