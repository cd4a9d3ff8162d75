"""Shared fixtures: a tiny trained run on the built-in digits, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaelab import TrainConfig, VAEConfig, load_dataset
from vaelab.models.vae import VAE


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny_model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(32,)))


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
