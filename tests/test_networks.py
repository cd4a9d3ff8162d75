"""Shapes and wiring of every architecture: mlp / conv, plain / gated, unconditional / CVAE."""

from __future__ import annotations

import pytest
import torch

from vaelab.config import VAEConfig
from vaelab.errors import VaelabError
from vaelab.io import save_model
from vaelab.models.networks import conv_decoder, conv_encoder, join_label, mlp
from vaelab.models.vae import VAE, load

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (2, 12, 20)]  # digits, MNIST-like, CIFAR-like, odd


def tiny(shape=(1, 8, 8), **kw) -> VAEConfig:
    base = {"input_shape": shape, "latent_dim": 2, "hidden": (16,), "channels": (4, 8)}
    return VAEConfig(**{**base, **kw})


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_encode_decode_shapes(shape, arch, gated, likelihood):
    torch.manual_seed(0)
    model = VAE(tiny(shape, arch=arch, gated=gated, likelihood=likelihood))
    x = torch.rand(3, *shape)
    q = model.encode(x)
    assert q.mean.shape == q.logvar.shape == (3, 2)
    px = model.decode(q.sample())
    assert px.mean.shape == (3, *shape)
    assert px.log_prob(x).shape == (3,)
    assert torch.isfinite(px.log_prob(x)).all()
    # extra leading sample dims pass through the decoder
    assert model.decode(torch.randn(5, 3, 2)).mean.shape == (5, 3, *shape)
    assert model.sample(4).shape == (4, *shape)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_conditional_shapes_and_label_use(arch):
    torch.manual_seed(0)
    model = VAE(tiny((1, 8, 8), arch=arch, n_classes=10))
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    assert model.encode(x, y).mean.shape == (6, 2)
    z = torch.randn(6, 2)
    assert model.decode(z, y).mean.shape == (6, 1, 8, 8)
    assert model.decode(torch.randn(4, 6, 2), y).mean.shape == (4, 6, 1, 8, 8)
    # the label changes the output: same z, different classes
    assert not torch.allclose(model.decode(z, y).mean, model.decode(z, (y + 1) % 10).mean)
    with pytest.raises(VaelabError, match="conditional"):
        model.encode(x)


def test_conv_stage_count_sets_divisibility():
    VAEConfig(input_shape=(1, 12, 12), arch="conv", channels=(8, 16))  # 12 = 4 * 3
    with pytest.raises(VaelabError, match="divisible by 4"):
        VAEConfig(input_shape=(1, 30, 30), arch="conv", channels=(8, 16))
    with pytest.raises(VaelabError, match="divisible by 8"):
        VAEConfig(input_shape=(1, 28, 28), arch="conv", channels=(8, 16, 32))
    with pytest.raises(VaelabError, match="divisible"):
        VAEConfig(input_shape=(1, 1, 64), arch="conv")  # flat data has no image to convolve
    with pytest.raises(VaelabError, match="arch"):
        VAEConfig(arch="resnet")


def test_conv_networks_halve_and_double():
    enc = conv_encoder((3, 32, 32), (8, 16), (), 10)
    feats = enc[:-1](torch.zeros(2, 3, 32, 32))  # all but the final Linear
    assert feats.shape == (2, 16 * 8 * 8)
    dec = conv_decoder(5, (7,), (8, 16), (6, 32, 32))
    assert dec(torch.zeros(2, 5)).shape == (2, 6, 32, 32)


def test_gated_layer_is_a_times_sigmoid_g():
    torch.manual_seed(0)
    net = mlp(3, (4,), 2, gated=True)
    x = torch.randn(5, 3)
    lin, out = net[0], net[2]
    a, g = lin(x).chunk(2, dim=-1)
    assert torch.allclose(net(x), out(a * torch.sigmoid(g)))


def test_join_label():
    onehot = torch.eye(3)[[0, 2]]  # (2, 3)
    assert join_label(torch.zeros(2, 5), onehot).shape == (2, 8)
    assert join_label(torch.zeros(4, 2, 5), onehot).shape == (4, 2, 8)
    img = join_label(torch.zeros(2, 1, 4, 4), onehot)
    assert img.shape == (2, 4, 4, 4) and img[1, 3].eq(1).all() and img[1, 1].eq(0).all()
    h = torch.zeros(2, 5)
    assert join_label(h, None) is h


def test_mlp_state_dict_keys_unchanged():
    """Runs saved before the model family existed (plain mlp) must still load."""
    keys = set(VAE(tiny()).state_dict())
    want = {f"{m}.{i}.{p}" for m in ("encoder", "decoder") for i in (0, 2) for p in ("weight", "bias")}
    assert keys == want


@pytest.mark.parametrize(
    "kw", [{"arch": "conv", "gated": True, "n_classes": 10}, {"gated": True, "likelihood": "gaussian"}]
)
def test_save_load_roundtrip(tmp_path, kw):
    torch.manual_seed(0)
    model = VAE(tiny(**kw)).eval()
    save_model(model, tmp_path)
    again = load(tmp_path)
    assert again.config == model.config
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3])
    assert torch.equal(model.encode(x, y).mean, again.encode(x, y).mean)
