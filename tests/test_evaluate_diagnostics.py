"""Collapse diagnostics, the per-epoch training record, and the feature-quality probes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import distributions as D
from torch import nn

from vaelab import VAE, TrainConfig, VAEConfig, collapse_diagnostics, evaluate_elbo, train
from vaelab.errors import VaelabError
from vaelab.evaluation.probes import feature_quality, knn_accuracy, probe_accuracy
from vaelab.training.callbacks import COLLAPSE_PATIENCE, PosteriorCollapseWarning


def _encoder_linear(model: VAE) -> nn.Linear:
    return [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]


def test_kl_per_dim_and_active_units_match_an_independent_computation(digits, make_vae):
    model = make_vae(latent_dim=3, hidden=(16,)).eval()
    last = _encoder_linear(model)
    with torch.no_grad():  # unit 1 ignores x: mean 0, logvar 0, i.e. q(z_1|x) = p(z_1)
        last.weight[1].zero_()
        last.bias[1] = 0.0
        last.weight[3 + 1].zero_()
        last.bias[3 + 1] = 0.0
        last.weight[0] *= 20.0  # unit 0 clearly active
    diag = collapse_diagnostics(model, digits.test, batch_size=100)

    with torch.no_grad():
        q = model.encode(digits.test.batch(slice(None)))
    ref_kl = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(0.0, 1.0)).mean(0)
    ref_var = np.var(q.mean.numpy().astype(np.float64), axis=0, ddof=1)
    assert np.allclose(diag["kl_per_dim"], ref_kl.numpy(), atol=1e-5)
    assert np.allclose(diag["posterior_mean_variance"], ref_var, rtol=1e-5, atol=1e-9)
    assert diag["kl_per_dim"][1] == pytest.approx(0.0, abs=1e-9)
    assert diag["posterior_mean_variance"][1] == pytest.approx(0.0, abs=1e-12)
    assert diag["active_units"] == int((ref_var > 0.01).sum())
    assert diag["active_units"] <= 2 and diag["posterior_mean_variance"][0] > 0.01
    # The per-dim KLs add up to the ELBO's KL term.
    assert sum(diag["kl_per_dim"]) == pytest.approx(evaluate_elbo(model, digits.test)["kl"], rel=1e-5)


def _collapsed_run(digits, epochs: int):
    """Training whose posterior means start constant and stay so (a tiny lr) -> (history, warnings)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=4, hidden=(16,)))
    with torch.no_grad():
        _encoder_linear(model).weight[:4].zero_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(model, digits, TrainConfig(epochs=epochs, batch_size=512, lr=1e-8), progress=False)
    return history, [w for w in caught if issubclass(w.category, PosteriorCollapseWarning)]


def test_training_warns_once_when_most_units_stay_collapsed(digits):
    history, collapse = _collapsed_run(digits, COLLAPSE_PATIENCE + 2)
    assert [r["active_units"] for r in history] == [0] * (COLLAPSE_PATIENCE + 2)
    assert len(collapse) == 1  # once, after COLLAPSE_PATIENCE epochs in a row
    assert f"0 of 4 latent units are active at epoch {COLLAPSE_PATIENCE}" in str(collapse[0].message)


def test_short_collapsed_run_warns_at_its_last_epoch(digits):
    _, collapse = _collapsed_run(digits, 2)
    assert len(collapse) == 1 and "at epoch 2" in str(collapse[0].message)


def test_training_records_kl_per_dim_and_active_units_without_false_alarm(digits, make_vae):
    model = make_vae()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(model, digits, TrainConfig(epochs=3, batch_size=64, lr=3e-3), progress=False)
    for rec in history:
        assert len(rec["kl_per_dim"]) == 2
        assert isinstance(rec["active_units"], int) and 0 <= rec["active_units"] <= 2
        assert sum(rec["kl_per_dim"]) == pytest.approx(rec["kl"], rel=1e-5)
    assert history[-1]["active_units"] == 2
    assert not [w for w in caught if issubclass(w.category, PosteriorCollapseWarning)]


# --- probes --------------------------------------------------------------------------------------


def _blobs(n: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.normal(size=(n, 3)) * spread + np.where(y[:, None] == 1, 2.0, -2.0)
    return z.astype(np.float32), y


def test_probes_read_separable_labels_perfectly():
    tz, ty = _blobs(200, 0)
    sz, sy = _blobs(100, 1)
    acc, converged = probe_accuracy(tz, ty, sz, sy)
    assert acc == 1.0 and converged
    assert knn_accuracy(tz, ty, sz, sy) == 1.0


def test_knn_matches_a_brute_force_vote():
    tz, ty = _blobs(150, 2, spread=2.0)  # overlapping classes, so some votes are wrong
    sz, sy = _blobs(80, 3, spread=2.0)
    dist = ((sz[:, None, :] - tz[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(dist, axis=1)[:, :5]
    pred = (ty[nearest].sum(1) >= 3).astype(int)  # two classes and k=5: no ties
    assert knn_accuracy(tz, ty, sz, sy) == pytest.approx((pred == sy).mean())
    assert 0.5 < (pred == sy).mean() < 1.0


def test_probe_errors_are_clear():
    tz, ty = _blobs(10, 0)
    with pytest.raises(VaelabError, match="two classes"):
        probe_accuracy(tz, np.zeros(10, dtype=int), tz, ty)
    with pytest.raises(VaelabError, match="at least k=5"):
        knn_accuracy(tz[:3], np.array([0, 1, 0]), tz, ty)


def test_feature_quality_on_digits_beats_an_untrained_encoder(digits, make_vae):
    model = make_vae()
    untrained = feature_quality(model, digits)
    train(model, digits, TrainConfig(epochs=10, batch_size=64, lr=3e-3), progress=False)
    fq = feature_quality(model, digits)
    assert set(fq) == {"probe_accuracy", "probe_converged", "knn_accuracy"}
    # Chance is 0.1, but random 2-d features already tell some digits apart: this encoder scores
    # 0.17-0.37 untrained (seeds 0-2) and 0.49-0.58 after these 10 epochs.
    for key in ("probe_accuracy", "knn_accuracy"):
        assert fq[key] > max(0.45, untrained[key] + 0.1), (key, untrained[key], fq[key])
    unlabelled = type(digits)("x", type(digits.train)(digits.train.x), type(digits.test)(digits.test.x))
    assert feature_quality(model, unlabelled) == {}
