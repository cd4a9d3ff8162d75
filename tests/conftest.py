"""Shared fixtures: the built-in digits, small seeded VAEs, and tiny trained runs made once per session.

Markers (registered in pyproject.toml; `--strict-markers` rejects any other):
``slow`` (over ~2 s: crash/resume subprocesses, long CLI trainings), ``ddp`` (torchrun with 2
processes) and ``browser`` (headless Chromium). Plain ``pytest`` (``make test``) runs everything;
the fast suite for the edit-test loop is::

    pytest -m "not slow and not ddp and not browser"
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from vaelab import TrainConfig, VAEConfig, load_dataset
from vaelab.data.dataset import Dataset
from vaelab.models.vae import VAE


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's 8x8 digits: 1,500 train and 297 test rows of (1, 8, 8) in [0, 1]. Shared by the
    whole session, so a test must not change it in place."""
    return load_dataset("digits")


def tiny_vae(seed: int = 0, **fields: Any) -> VAE:
    """A VAE built right after ``torch.manual_seed(seed)``: by default an MLP with one hidden layer
    of 32 and a 2-d latent on (1, 8, 8) inputs; ``fields`` override any `VAEConfig` field."""
    torch.manual_seed(seed)
    return VAE(VAEConfig(**{"input_shape": (1, 8, 8), "latent_dim": 2, "hidden": (32,)} | fields))


@pytest.fixture(scope="session")
def make_vae() -> Callable[..., VAE]:
    """The `tiny_vae` factory: ``make_vae()``, ``make_vae(seed=1, hidden=(16,))``..."""
    return tiny_vae


@pytest.fixture
def tiny_model(make_vae) -> VAE:
    """``make_vae()``: a fresh seeded 2-d-latent VAE for 8x8 digits."""
    return make_vae()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory made by the CLI: 3 quick epochs on digits with a 2-d latent."""
    from vaelab.cli import main

    run = tmp_path_factory.mktemp("run") / "digits"
    rc = main(
        [
            "train",
            "--data",
            "digits",
            "--out",
            str(run),
            "--epochs",
            "3",
            "--latent-dim",
            "2",
            "--hidden",
            "64",
            "--batch-size",
            "64",
            "--no-progress",
        ]
    )
    assert rc == 0
    return run


@pytest.fixture
def train_config():
    """A factory for small CPU training configs: ``train_config(epochs=3)``."""

    def make(**kw) -> TrainConfig:
        defaults = dict(data="digits", epochs=2, batch_size=64, lr=1e-3, seed=0, device="cpu")
        defaults.update(kw)
        return TrainConfig(**defaults)

    return make


@pytest.fixture(scope="session")
def trained_run_3d(tmp_path_factory) -> Path:
    """Like `trained_run` with a 3-d latent: for what changes above 2 dims (KL ranking, PCA/t-SNE)."""
    from vaelab.cli import main

    run = tmp_path_factory.mktemp("run3d") / "digits"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "3", "--latent-dim", "3"]
    assert main([*argv, "--hidden", "64", "--batch-size", "64", "--no-progress"]) == 0
    return run
