"""The discretized logistic likelihood for 8-bit pixels, against an independent computation."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import AffineTransform, SigmoidTransform, TransformedDistribution, Uniform

from vaelab.config import VAEConfig
from vaelab.models.distributions import DiscretizedLogistic
from vaelab.models.vae import VAE

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every 8-bit value


def all_levels(loc: float, log_scale: float) -> torch.Tensor:
    """log p(level) for each of the 256 levels of one pixel -> (256,)."""
    d = DiscretizedLogistic(torch.full((256, 1, 1, 1), loc), torch.full((256, 1, 1, 1), log_scale))
    return d.log_prob(LEVELS.float().view(256, 1, 1, 1)).double()


@pytest.mark.parametrize(
    ("loc", "log_scale"), [(0.5, -3.0), (0.0, -6.9), (1.0, -1.0), (-0.7, -4.0), (1.8, -2.0), (0.3, 2.0)]
)
def test_a_probability_mass_matching_the_logistic_cdf(loc, log_scale):
    logp = all_levels(loc, log_scale)
    assert torch.isfinite(logp).all() and (logp <= 1e-6).all()
    assert torch.logsumexp(logp, 0).item() == pytest.approx(0.0, abs=1e-5)
    # independently: differences of the logistic CDF at the bin edges, in float64
    logistic = TransformedDistribution(
        Uniform(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
        [SigmoidTransform().inv, AffineTransform(loc, torch.tensor(log_scale, dtype=torch.float64).exp())],
    )
    edges = torch.cat(
        [torch.tensor([-torch.inf]), (torch.arange(255) + 0.5) / 255, torch.tensor([torch.inf])]
    )
    cdf = torch.sigmoid((edges.double() - loc) / torch.tensor(log_scale).double().exp())
    mass = cdf[1:] - cdf[:-1]
    keep = mass > 1e-30  # where float64 still resolves the mass
    assert torch.allclose(logp[keep], mass[keep].log(), atol=2e-4, rtol=1e-4)
    assert torch.allclose(logistic.cdf(edges[1:-1].double()), cdf[1:-1], atol=1e-12)


def test_mean_and_samples():
    torch.manual_seed(0)
    loc, log_scale = torch.tensor([[[[0.3, 0.98]]]]), torch.tensor([[[[-2.5, -3.0]]]])
    d = DiscretizedLogistic(loc, log_scale)
    for j in range(2):
        probs = all_levels(loc.flatten()[j].item(), log_scale.flatten()[j].item()).exp()
        assert d.mean.flatten()[j].item() == pytest.approx((probs * LEVELS).sum().item(), abs=1e-5)
    big = DiscretizedLogistic(loc.expand(20000, 1, 1, 2), log_scale.expand(20000, 1, 1, 2))
    x = big.sample(torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.round(x * 255) / 255) and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x.mean(0), d.mean[0], atol=0.01)
    # values off the 8-bit grid are snapped to their level
    off = torch.tensor([[[[0.3 + 0.3 / 255, 0.98]]]])
    on = torch.round(off * 255) / 255
    assert torch.equal(d.log_prob(off), d.log_prob(on))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_logistic_decoder(arch):
    torch.manual_seed(0)
    model = VAE(
        VAEConfig(
            input_shape=(3, 8, 8),
            latent_dim=2,
            hidden=(8,),
            channels=(4, 8),
            arch=arch,
            likelihood="logistic",
        )
    )
    x = torch.randint(0, 256, (4, 3, 8, 8)).float() / 255
    px = model.decode(model.encode(x).mean)
    logp = px.log_prob(x)
    assert logp.shape == (4,) and torch.isfinite(logp).all() and (logp < 0).all()
    logp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.decoder.parameters())
    assert model.sample(3).shape == (3, 3, 8, 8)


def _rgb_crops(n: int = 300, side: int = 8, seed: int = 0) -> torch.Tensor:
    """(n, 3, side, side) uint8 crops of scikit-learn's two sample photos: natural RGB images."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # two (427, 640, 3) uint8 images
    crops = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        i, j = rng.integers(0, img.shape[0] - side), rng.integers(0, img.shape[1] - side)
        crops.append(img[i : i + side, j : j + side].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(crops))


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_a_decoder_started_at_the_marginal_predicts_it_whatever_z(arch):
    from vaelab.data.dataset import Split
    from vaelab.models.objectives import neg_elbo

    x8 = _rgb_crops()
    split = Split(x8)
    x = x8.float() / 255
    torch.manual_seed(0)
    cfg = VAEConfig(input_shape=(3, 8, 8), latent_dim=4, hidden=(32,), likelihood="logistic", arch=arch)
    fresh = VAE(cfg)
    started = VAE(cfg)
    started.load_state_dict(fresh.state_dict())
    started.init_decoder_at_marginal(split)
    px = started.decode(torch.randn(256, 4))  # z from the prior: the output barely depends on it
    loc = px.loc if hasattr(px, "loc") else px.mean
    want = x.mean((0, 2, 3)) if arch == "conv" else x.mean(0)
    got = loc.mean((0, 2, 3)) if arch == "conv" else loc.mean(0)
    assert (got - want).abs().mean() < 0.02 and (got - want).abs().max() < 0.1
    gen = torch.Generator().manual_seed(0)
    before = neg_elbo(fresh, x, generator=gen).neg_elbo.mean() / (x[0].numel() * 0.6931)  # bits/dim
    gen = torch.Generator().manual_seed(0)
    after = neg_elbo(started, x, generator=gen).neg_elbo.mean() / (x[0].numel() * 0.6931)
    assert before > 9.0 and after < 8.5, (before, after)  # a logistic at the marginal: about 8.2


def test_a_fresh_logistic_run_starts_at_the_marginal_and_resumes_exactly(tmp_path):
    import numpy as np

    from vaelab.cli import main
    from vaelab.models.vae import load

    np.save(tmp_path / "rgb.npy", _rgb_crops(200).numpy())
    flags = ["--data", str(tmp_path / "rgb.npy"), "--likelihood", "logistic", "--arch", "conv"]
    flags += [
        "--channels",
        "8",
        "--hidden",
        "32",
        "--latent-dim",
        "4",
        "--no-progress",
        "--checkpoint-every",
        "1",
    ]
    assert main(["train", *flags, "--out", str(tmp_path / "a"), "--epochs", "3"]) == 0
    assert main(["train", *flags, "--out", str(tmp_path / "b"), "--epochs", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "3", "--no-progress"]) == 0
    a, b = load(tmp_path / "a").state_dict(), load(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run was not started again
    first = [
        float(line.split('"test_neg_elbo": ')[1].split(",")[0])
        for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    assert first[0] / (3 * 64 * 0.6931) < 8.6  # bits/dim after one epoch: near the marginal, not 9.6
