"""The data core: Split/Dataset, binarization, held-out splits, rescaling and options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaelab.data.dataset import Split, check_likelihood_range, static_bernoulli
from vaelab.data.sources import load_dataset, same_source
from vaelab.data.types import DataOptions
from vaelab.errors import VaelabError


def test_digits_keeps_its_fixed_split():
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    assert data.shape == (1, 8, 8) and (len(data.train), len(data.test)) == (1500, 297)
    perm = np.random.default_rng(0).permutation(1797)
    want = load_digits().images[np.sort(perm[1500:])] / 16.0
    np.testing.assert_allclose(data.test.batch(slice(None))[:, 0].numpy(), want, rtol=1e-6)
    assert data.meta["options"] == {"binarize": "none", "rescale": "none"}


def test_static_bernoulli_has_the_right_mean_and_no_visible_correlation():
    p = torch.rand(400, 1, 16, 16)
    bits = static_bernoulli(p, torch.arange(400), seed=3)
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    # E[bit - p] = 0 with variance sum p(1-p): a 5-sigma check on 102,400 pixels
    dev = (bits - p).sum() / (p * (1 - p)).sum().sqrt()
    assert abs(float(dev)) < 5
    half = torch.full((4000, 1, 1, 64), 0.5)
    b = static_bernoulli(half, torch.arange(4000), seed=0).reshape(4000, 64)
    corr = torch.corrcoef(b.T)  # pixels against pixels across rows
    off = corr[~torch.eye(64, dtype=torch.bool)]
    assert off.abs().max() < 0.08  # |r| of independent bits ~ N(0, 1/4000): 5 sigma = 0.079


def test_static_bernoulli_depends_only_on_seed_row_and_pixel():
    p = torch.rand(50, 2, 3, 3)
    rows = torch.arange(100, 150)
    full = static_bernoulli(p, rows, 7)
    perm = torch.randperm(50)
    torch.testing.assert_close(static_bernoulli(p[perm], rows[perm], 7), full[perm])
    assert not torch.equal(static_bernoulli(p, rows, 8), full)
    assert torch.equal(static_bernoulli(torch.zeros(3, 4), torch.arange(3), 0), torch.zeros(3, 4))
    assert torch.equal(static_bernoulli(torch.ones(3, 4), torch.arange(3), 0), torch.ones(3, 4))


def test_binarize_dynamic_redraws_and_test_split_is_fixed():
    data = load_dataset("digits", binarize="dynamic")
    torch.manual_seed(0)
    a, b = data.train.batch(slice(0, 200)), data.train.batch(slice(0, 200))
    assert not torch.equal(a, b) and set(a.unique().tolist()) == {0.0, 1.0}
    p = data.train.batch(slice(None), binarize=False)
    draws = torch.stack([data.train.batch(slice(None)) for _ in range(50)]).mean(0)
    assert (draws - p).abs().mean() < 0.05  # E[draw] = p
    # the test split: binarized once at load with a fixed seed, identical across loads
    t1 = load_dataset("digits", binarize="dynamic").test
    t2 = load_dataset("digits", binarize="static").test
    assert (
        t1.x.dtype == torch.uint8
        and torch.equal(t1.x, t2.x)
        and torch.equal(t1.batch(slice(None)), t1.batch(slice(None)))
    )


def test_binarize_static_train_is_fixed_and_uint8():
    data = load_dataset("digits", binarize="static")
    assert data.train.x.dtype == torch.uint8 and set(data.train.x.unique().tolist()) == {0, 255}
    assert torch.equal(data.train.batch(slice(0, 9)), data.train.batch(slice(0, 9)))
    assert data.meta["range"] == (0.0, 1.0)


def test_dynamic_binarization_on_the_device_in_the_training_loop():
    from vaelab.config import VAEConfig
    from vaelab.models.vae import VAE
    from vaelab.training.engine import run_epoch

    data = load_dataset("digits", binarize="dynamic").to("cpu")
    model = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,)))
    seen = []

    def loss_fn(m, x, y):
        seen.append(x)
        from vaelab.models.objectives import neg_elbo

        return neg_elbo(m, x, y)

    opt = torch.optim.Adam(model.parameters())
    sums = run_epoch(model, opt, data.train, 500, loss_fn=loss_fn, progress=False)
    assert torch.isfinite(sums).all() and len(seen) == 3
    assert all(set(x.unique().tolist()) <= {0.0, 1.0} for x in seen)


def test_val_split_is_seeded_disjoint_and_recorded(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(100, dtype=np.float32).reshape(100, 1) / 100)
    src = str(tmp_path / "a.npy")
    a, b = load_dataset(src), load_dataset(src)
    assert (len(a.train), len(a.test)) == (90, 10) and a.test_split == "val"
    assert torch.equal(a.test.x, b.test.x)
    values = torch.cat([a.train.x, a.test.x]).flatten().sort().values
    torch.testing.assert_close(values, torch.arange(100, dtype=torch.float32) / 100)
    c = load_dataset(src, split_seed=1, val_fraction=0.3)
    assert len(c.test) == 30 and not torch.equal(c.test.x[:10], a.test.x)
    assert a.meta["options"] == {"val_fraction": 0.1, "split_seed": 0, "binarize": "none", "rescale": "none"}


def test_options_are_validated():
    with pytest.raises(VaelabError, match="unknown key"):
        DataOptions.parse({"colour": "red"})
    with pytest.raises(VaelabError, match=r"DataOptions\.val_fraction must be in \(0, 1\)"):
        DataOptions.parse({"val_fraction": 1.5})
    with pytest.raises(VaelabError, match=r"DataOptions\.binarize must be one of"):
        DataOptions.parse({"binarize": "sometimes"})
    with pytest.raises(VaelabError, match="val_fraction: unexpected value"):
        DataOptions.parse({"val_fraction": "lots"})
    assert DataOptions.parse({"image_size": [32, 48]}).image_size == (32, 48)
    with pytest.raises(VaelabError, match="does not apply"):
        load_dataset("digits", val_fraction=0.2)
    with pytest.raises(VaelabError, match="unknown data source"):
        load_dataset("no-such-thing")


def test_bernoulli_range_check_and_rescale(tmp_path):
    np.save(tmp_path / "a.npy", np.linspace(-2, 5, 60, dtype=np.float32).reshape(20, 3))
    src = str(tmp_path / "a.npy")
    with pytest.raises(VaelabError, match=r"outside \[0, 1\].*DataOptions\.rescale='minmax'"):
        check_likelihood_range(load_dataset(src), "bernoulli")
    check_likelihood_range(load_dataset(src), "gaussian")
    data = load_dataset(src, rescale="minmax")
    check_likelihood_range(data, "bernoulli")
    with pytest.raises(VaelabError, match=r"DataOptions\.binarize='static' needs values in \[0, 1\]"):
        load_dataset(src, binarize="static")
    with pytest.raises(VaelabError, match="standardize"):
        load_dataset(src, rescale="standardize", likelihood="bernoulli")


def test_images_are_rescaled_with_one_scale_tables_per_column(tmp_path):
    img = np.stack([np.full((2, 2), v, np.float32) for v in (2.0, 4.0, 6.0, 10.0)])  # (4, 2, 2)
    np.save(tmp_path / "img.npy", img)
    d = load_dataset(str(tmp_path / "img.npy"), rescale="minmax", val_fraction=0.25)
    assert d.train.scale.unique().numel() == 1  # one affine for all pixels
    np.save(tmp_path / "tab.npy", np.array([[0, 10], [1, 30], [2, 50], [3, 70.0]]))
    t = load_dataset(str(tmp_path / "tab.npy"), rescale="minmax", val_fraction=0.25)
    assert t.train.scale.unique().numel() == 2


def test_same_source():
    assert same_source("mnist", "mnist") and not same_source("mnist", "fashion-mnist")
    assert same_source("./data/x.csv", "data/../data/x.csv")
    assert not same_source("a.csv", "b.csv")


def test_split_keeps_big_tensors_on_the_host_when_the_device_is_full(monkeypatch):
    import vaelab.data.dataset as data_mod

    monkeypatch.setattr(data_mod, "fits_on", lambda device, nbytes: False)
    s = Split(torch.arange(12, dtype=torch.uint8).reshape(3, 1, 2, 2), torch.tensor([0, 1, 2]))
    moved = s.to("cpu")
    assert moved.x is s.x
    torch.testing.assert_close(moved.batch(torch.tensor([2, 0])), s.x[[2, 0]].float() / 255)
