"""The hand-derived MLP step: the same loss, terms and gradients as autograd through `neg_elbo`, and the
engine uses it exactly where it applies."""

from __future__ import annotations

import warnings

import pytest
import torch

from vaelab.models.objectives import Elbo, Iwae, neg_elbo
from vaelab.models.vae import VAE
from vaelab.training.engine import Engine, EngineOptions, make_optimizer
from vaelab.training.fused_mlp import FusedMLPStep, elbo_weight, supported


def autograd_grads(m: VAE, x: torch.Tensor, beta: float, seed: int):
    torch.manual_seed(seed)
    terms = neg_elbo(m, x, beta=beta)
    m.zero_grad(set_to_none=True)
    terms.loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=True)
    return terms, grads


@pytest.mark.parametrize(
    "kw, beta",
    [
        ({}, 1.0),
        ({"hidden": (32, 16), "latent_dim": 3}, 0.25),  # deeper, a KL weight below 1 (warm-up)
        ({"hidden": (24,)}, 0.0),  # the first warm-up epoch: no KL gradient at all
    ],
)
def test_relu_gradients_match_autograd(digits, kw, beta, make_vae):
    """The forward is autograd's op for op (equal bits); a weight gradient may differ in the last bits
    only, where BLAS picks another kernel for the transposed product autograd computes."""
    m = make_vae(**kw)
    x = digits.train.batch(slice(0, 100))
    want, grads = autograd_grads(m, x, beta, seed=5)
    torch.manual_seed(5)  # the same noise draw
    got = FusedMLPStep(m).step(x, beta)
    assert torch.equal(got.loss, want.loss.detach())
    assert torch.equal(got.recon, want.recon.detach()) and torch.equal(got.kl, want.kl.detach())
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-8, msg=n)


def test_gated_gradients_match_autograd(digits, make_vae):
    m = make_vae(hidden=(32, 16), gated=True, latent_dim=3)
    x = digits.train.batch(slice(0, 100))
    want, grads = autograd_grads(m, x, 0.5, seed=7)
    torch.manual_seed(7)
    got = FusedMLPStep(m).step(x, 0.5)
    torch.testing.assert_close(got.loss, want.loss.detach(), rtol=1e-6, atol=0)
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-7, msg=n)


def test_gradients_match_finite_differences_in_float64(digits, make_vae):
    """Independent of autograd: d loss / d w by central differences, for a few weights of each layer."""
    m = make_vae(hidden=(8,), gated=True).double()
    x = digits.train.batch(slice(0, 20)).double()
    step = FusedMLPStep(m)
    torch.manual_seed(3)
    step.step(x, 0.7)
    for p in m.parameters():
        flat, grad = p.data.view(-1), p.grad.view(-1).clone()
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            old = float(flat[i])
            losses = []
            for h in (1e-6, -1e-6):
                flat[i] = old + h
                torch.manual_seed(3)
                losses.append(float(step.step(x, 0.7).loss))
            flat[i] = old
            assert (losses[0] - losses[1]) / 2e-6 == pytest.approx(float(grad[i]), rel=1e-4, abs=1e-7)


def test_which_models_and_losses_it_covers(make_vae):
    assert supported(make_vae()) and supported(make_vae(gated=True))
    assert not supported(make_vae(arch="conv", input_shape=(1, 8, 8), hidden=(16,)))
    assert not supported(make_vae(likelihood="gaussian"))
    assert not supported(make_vae(prior="vamp", pseudo_inputs=5))
    assert not supported(make_vae(n_classes=10))
    assert elbo_weight(neg_elbo) == 1.0 and elbo_weight(Elbo()) == 1.0
    assert elbo_weight(Elbo(beta=0.3, free_bits=0.0)) == 0.3
    assert elbo_weight(Elbo(beta=1.0, free_bits=0.5)) is None  # free bits: autograd
    assert elbo_weight(Iwae(k=5)) is None
    assert elbo_weight(lambda m, x, y: neg_elbo(m, x, y)) is None


def test_engine_auto_trains_like_the_autograd_step(digits, make_vae):
    """compile=auto takes the fused step on the CPU, compile=off the autograd one: the same epochs and
    weights after 3 epochs, up to float rounding."""
    runs = {}
    for compile in ("auto", "off"):
        m = make_vae(seed=1)
        engine = Engine(m, make_optimizer(m, 1e-2), EngineOptions(compile=compile))
        assert (engine.fused is not None) == (compile == "auto")
        torch.manual_seed(9)
        sums = [engine.run_epoch(digits.train, 128, progress=False) for _ in range(2)]
        half = Elbo(beta=0.5)
        sums.append(engine.run_epoch(digits.train, 128, loss_fn=half, progress=False))
        runs[compile] = (torch.stack(sums), m.state_dict())
    torch.testing.assert_close(runs["auto"][0], runs["off"][0], rtol=1e-5, atol=1e-3)
    for k, v in runs["off"][1].items():
        torch.testing.assert_close(runs["auto"][1][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_engine_falls_back_to_autograd_where_the_fused_step_does_not_apply(digits, make_vae):
    m = make_vae(likelihood="gaussian")
    assert Engine(m, make_optimizer(m, 1e-3)).fused is None
    m = make_vae()
    with warnings.catch_warnings():  # bf16 is emulated (and says so) on CPUs without AMX
        warnings.simplefilter("ignore")
        assert Engine(m, make_optimizer(m, 1e-3), EngineOptions(precision="bf16")).fused is None
    engine = Engine(m, make_optimizer(m, 1e-3))
    iwae = Iwae(k=3)
    before = [p.detach().clone() for p in m.parameters()]
    engine.run_epoch(digits.train, 500, loss_fn=iwae, progress=False)  # runs through autograd
    assert any(not torch.equal(a, p) for a, p in zip(before, m.parameters(), strict=True))
