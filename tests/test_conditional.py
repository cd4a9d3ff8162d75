"""Class-conditional generation on digits: a probe classifier trained on real digits must recognise
the class asked for, for a CVAE and for the latent-mixture method of unconditional runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from vaelab.cli import main
from vaelab.config import TrainConfig, VAEConfig
from vaelab.errors import VaelabError
from vaelab.evaluation.conditional import fit_class_mixture, sample_class, sample_mixture
from vaelab.models.vae import VAE
from vaelab.training.loop import train


@pytest.fixture(scope="module")
def probe(digits):
    """Logistic regression on real training digits (~97% on the test split)."""
    clf = LogisticRegression(max_iter=2000).fit(digits.train.x.flatten(1).numpy(), digits.train.y.numpy())
    assert clf.score(digits.test.x.flatten(1).numpy(), digits.test.y.numpy()) > 0.9
    return clf


def trained(digits, n_classes: int, latent_dim: int, top_latent_dim: int = 0) -> VAE:
    torch.manual_seed(0)
    cfg = VAEConfig(
        input_shape=(1, 8, 8),
        latent_dim=latent_dim,
        hidden=(64,),
        n_classes=n_classes,
        top_latent_dim=top_latent_dim,
    )
    model = VAE(cfg)
    train(model, digits, TrainConfig(epochs=10, batch_size=50, lr=3e-3), progress=False)
    return model


def accuracy(probe, x: torch.Tensor, label: int) -> float:
    return float((probe.predict(x.flatten(1).numpy()) == label).mean())


@pytest.mark.parametrize("levels", [1, 2], ids=["one-level", "hierarchical"])
def test_cvae_samples_are_the_class_asked_for(digits, probe, levels):
    model = trained(digits, n_classes=10, latent_dim=2 * levels, top_latent_dim=levels - 1)
    accs = []
    for c in range(10):
        x, method = sample_class(model, c, 50, seed=c)
        assert x.shape == (50, 1, 8, 8) and "conditional VAE" in method
        accs.append(accuracy(probe, x, c))
    assert np.mean(accs) > 0.8 and min(accs) > 0.4, accs  # chance is 0.1
    with pytest.raises(VaelabError, match=r"0\.\.9"):
        sample_class(model, 10, 5)


def test_latent_mixture_samples_for_unconditional_runs(digits, probe):
    model = trained(digits, n_classes=0, latent_dim=4)
    accs = []
    for c in range(10):
        x, method = sample_class(model, c, 40, seed=c, train=digits.train, max_components=3)
        assert "mixture" in method and "unconditional" in method
        accs.append(accuracy(probe, x, c))
    assert np.mean(accs) > 0.5, accs  # chance is 0.1
    with pytest.raises(VaelabError, match="labels"):
        sample_class(model, 3, 5, train=None)
    with pytest.raises(VaelabError, match="does not occur"):
        sample_class(model, 42, 5, train=digits.train)


def test_mixture_sampling_matches_the_fit():
    rng = np.random.default_rng(0)
    mu = np.concatenate([rng.normal(-3, 0.5, (300, 2)), rng.normal(3, 0.5, (300, 2))])
    gmm = fit_class_mixture(mu, max_components=4)
    assert gmm.n_components == 2  # BIC finds the two clusters
    z = sample_mixture(gmm, 20000, np.random.default_rng(1))
    assert np.allclose(z.mean(0), mu.mean(0), atol=0.1) and np.allclose(z.std(0), mu.std(0), atol=0.1)
    cold = sample_mixture(gmm, 20000, np.random.default_rng(1), temperature=0.5)
    assert np.allclose(np.abs(cold).mean(), 3.0, atol=0.1) and cold[:, 0].std() < z[:, 0].std()


@pytest.mark.slow
def test_cli_conditional_train_and_sample(tmp_path, capsys, probe):
    run = tmp_path / "cvae"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "1", "--latent-dim", "2"]
    assert main([*argv, "--hidden", "32", "--conditional", "--arch", "conv", "--channels", "4,8"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["n_classes"] == 10
    out = tmp_path / "three.npy"
    assert main(["sample", str(run), "--label", "3", "-n", "5", "--out", str(out)]) == 0
    assert "class 3 (conditional VAE" in capsys.readouterr().out
    assert np.load(out).shape == (5, 1, 8, 8)
    assert main(["sample", str(run), "-n", "12"]) == 0  # no --label: labels cycle through the classes
    assert "cycling" in capsys.readouterr().out
    assert main(["sample", str(run), "--label", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0..9" in err
    for cmd in (["evaluate", str(run)], ["reconstruct", str(run)]):  # both need the labels: they pass them
        assert main([*cmd, "--data", "digits"]) == 0


def test_cli_label_on_unconditional_run(tmp_path, capsys):
    run = tmp_path / "vae"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "1", "--latent-dim", "2"]
    assert main([*argv, "--hidden", "32"]) == 0
    assert main(["sample", str(run), "--label", "7", "-n", "4", "--components", "2"]) == 0
    out = capsys.readouterr().out
    assert "latent mixture" in out and "class 7" in out
    assert (run / "samples_label7_seed0.png").is_file()
