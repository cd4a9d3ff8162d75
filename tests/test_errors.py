"""The error classes: each kind of bad input has its own `VaelabError` subclass, and the CLI still
turns every one of them into one line on stderr and exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datagen import assert_one_line_error, run_cli

import vaelab
from vaelab import VAE, CheckpointError, ConfigError, DataError, VAEConfig, VaelabError, load, load_dataset
from vaelab.io import save_model
from vaelab.training.validate import check_history


@pytest.mark.parametrize("cls", [ConfigError, DataError, CheckpointError])
def test_each_error_is_a_vaelab_error(cls):
    assert issubclass(cls, VaelabError)
    assert getattr(vaelab, cls.__name__) is cls and cls.__name__ in vaelab.__all__


def _run_dir(tmp_path):
    torch.manual_seed(0)
    save_model(VAE(VAEConfig(input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))), tmp_path / "run")
    return tmp_path / "run"


def test_a_bad_data_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="unknown data source"):
        load_dataset(str(tmp_path / "missing.npy"))
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npy"):
        load_dataset(str(tmp_path / "empty.npy"))


def test_a_bad_run_directory_is_a_checkpoint_error(tmp_path):
    run = _run_dir(tmp_path)
    (run / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere")
    run = _run_dir(tmp_path / "again")
    (run / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load(run)
    with pytest.raises(CheckpointError, match="history record 1"):
        check_history([{"epoch": 2}], 1, "a checkpoint")


def test_the_cli_prints_each_as_one_line_and_exits_2(tmp_path):
    source = tmp_path / "x.npy"
    np.save(source, np.zeros((8, 3), np.float32))
    missing = str(tmp_path / "missing.npy")
    assert_one_line_error(run_cli(["train", "--data", missing, "--out", str(tmp_path / "a")]), "missing.npy")
    run = _run_dir(tmp_path)
    (run / "config.json").write_text("{not json")
    assert_one_line_error(run_cli(["evaluate", str(run), "--data", str(source)]), "not valid JSON")
