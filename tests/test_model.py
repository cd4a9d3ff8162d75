"""The VAE module: shapes, gradients, the sigma floor, sampling."""

from __future__ import annotations

import torch

from vaelab import VAE, VAEConfig, neg_elbo
from vaelab.models.distributions import Bernoulli, DiagonalGaussian, Gaussian


def test_shapes(tiny_model):
    x = torch.rand(6, 1, 8, 8)
    q = tiny_model.encode(x)
    assert isinstance(q, DiagonalGaussian)
    assert q.mean.shape == q.logvar.shape == (6, 2)
    px = tiny_model.decode(q.sample())
    assert isinstance(px, Bernoulli) and px.logits.shape == (6, 1, 8, 8)
    assert tiny_model.decode(torch.randn(3, 6, 2)).logits.shape == (3, 6, 1, 8, 8)
    assert tiny_model.sample(4).shape == (4, 1, 8, 8)
    assert tiny_model.reconstruct(x).shape == x.shape


def test_encoder_outputs_are_not_rectified(make_vae):
    """The write-up's bug: a ReLU on mu and logvar. Ours must produce negative values too."""
    model = make_vae(latent_dim=8)
    q = model.encode(torch.rand(256, 1, 8, 8))
    assert (q.mean < 0).any() and (q.logvar < 0).any()


def test_gradients_reach_the_encoder_through_sampled_z(tiny_model):
    x = torch.rand(8, 1, 8, 8)
    terms = neg_elbo(tiny_model, x)
    terms.loss.backward()
    for name, p in tiny_model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The reconstruction term alone also reaches the encoder: only possible through z's reparameterization.
    tiny_model.zero_grad()
    terms = neg_elbo(tiny_model, x)
    terms.recon.mean().backward()
    assert tiny_model.encoder[0].weight.grad.abs().sum() > 0


def test_gaussian_decoder_sigma_floor():
    torch.manual_seed(0)
    cfg = VAEConfig(input_shape=(1, 1, 5), latent_dim=2, hidden=(16,), likelihood="gaussian", min_sigma=0.05)
    model = VAE(cfg)
    with torch.no_grad():
        model.decoder[-1].bias.fill_(-100.0)  # push raw log-sigma far below the floor
    px = model.decode(torch.randn(4, 2))
    assert isinstance(px, Gaussian) and px.mean.shape == (4, 1, 1, 5)
    assert torch.all(px.log_sigma.exp() >= 0.05 - 1e-6)
    assert torch.isfinite(px.log_prob(px.mean)).all()


def test_sample_is_seeded_and_binary_when_asked(tiny_model):
    a = tiny_model.sample(5, generator=torch.Generator().manual_seed(3))
    b = tiny_model.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    bits = tiny_model.sample(5, generator=torch.Generator().manual_seed(3), mean=False)
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
