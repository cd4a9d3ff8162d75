"""The NaN/inf guard: roll back to the last good state, lower the lr, give up after repeated failures."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import torch
from resume_helpers import cli, one_thread, same_weights, train_argv, weights  # noqa: F401

from vaelab import VAE, TrainConfig, VAEConfig, VaelabError, load, load_dataset
from vaelab.data.dataset import Dataset, Split
from vaelab.data.sources import SOURCES
from vaelab.training.checkpoint import list_checkpoints
from vaelab.training.engine import Engine

train_module = importlib.import_module("vaelab.training.loop")
pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(**cfg):
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=data.shape, latent_dim=2, hidden=(16,)))
    return model, data, TrainConfig(batch_size=64, seed=0, device="cpu", **cfg)


def _poison_epochs(monkeypatch, bad_calls: set[int]) -> None:
    """Make epochs number ``bad_calls`` (1-based, counting retries) end with a NaN weight, as a NaN
    gradient stepped by Adam would."""
    real = Engine.run_epoch
    calls = [0]

    def run_epoch(self, *args, **kwargs):
        sums = real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] in bad_calls:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = math.nan
        return sums

    monkeypatch.setattr(Engine, "run_epoch", run_epoch)


def test_transient_nan_rolls_back_and_lowers_the_lr(monkeypatch, capsys):
    model, data, cfg = _setup(epochs=3, nan_lr_factor=0.25)
    _poison_epochs(monkeypatch, {2})  # the first try of epoch 2
    history = train_module.train(model, data, cfg, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["lr"] for h in history] == [1e-3, 2.5e-4, 2.5e-4]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(h["train_neg_elbo"]) for h in history)
    err = capsys.readouterr().err
    assert "rolled back to the end of epoch 1, retrying with lr 0.00025 (retry 1/3)" in err


def test_the_retry_restarts_from_the_last_good_state(monkeypatch):
    """A poisoned first try then a clean retry == a run whose epoch 2 simply used the lower lr."""
    model, data, cfg = _setup(epochs=2)
    _poison_epochs(monkeypatch, {2})
    train_module.train(model, data, cfg, progress=False)
    monkeypatch.undo()

    ref, _, _ = _setup()
    real = Engine.run_epoch
    calls = [0]

    def lower_lr_at_epoch_2(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            for group in self.opt.param_groups:
                group["lr"] *= cfg.nan_lr_factor
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run_epoch", lower_lr_at_epoch_2)
    train_module.train(ref, data, cfg, progress=False)
    assert same_weights(model.state_dict(), ref.state_dict())


def test_repeated_failures_stop_and_keep_the_last_good_weights(monkeypatch, tmp_path):
    model, data, cfg = _setup(epochs=4, nan_retries=2, checkpoint_every=3)
    _poison_epochs(monkeypatch, {2, 3, 4})  # every try of epoch 2
    with pytest.raises(VaelabError, match=r"epoch 2 gave a non-finite loss or gradient in all 3 tries"):
        train_module.train(model, data, cfg, progress=False, run_dir=tmp_path)
    monkeypatch.undo()

    good, _, _ = _setup(epochs=1)
    train_module.train(good, data, dataclasses.replace(cfg, epochs=1), progress=False)
    assert same_weights(model.state_dict(), good.state_dict())  # in memory ...
    assert same_weights(weights(tmp_path), good.state_dict())  # ... and in RUN_DIR
    assert list_checkpoints(tmp_path)[0].name == "epoch-000001"  # saved although not a checkpoint epoch


def test_cli_reports_divergence_in_one_line(monkeypatch, tmp_path, capsys):
    def nan_digits(**options) -> Dataset:
        d = load_dataset("digits")
        x = d.train.x.clone()
        x[7, 0, 3, 3] = math.nan
        return Dataset("nan-digits", Split(x, d.train.y), d.test)

    monkeypatch.setitem(SOURCES, "nan-digits", nan_digits)
    out = tmp_path / "run"
    argv = train_argv(out, 3, "--nan-retries", "1")
    argv[argv.index("digits")] = "nan-digits"
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vaelab train: error: training diverged: epoch 1")
    assert "kept the last good weights, from epoch 0" in err[-1]
    assert load(out).config.latent_dim == 2  # the run dir still loads
