"""The error classes: each kind of bad input has its own `VaelabError` subclass, and the CLI still
turns every one of them into one line on stderr and exit code 2."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from datagen import assert_one_line_error, run_cli

import vaelab
from vaelab import VAE, CheckpointError, ConfigError, DataError, VAEConfig, VaelabError, load, load_dataset
from vaelab.cli._flags import flag_name
from vaelab.config import TrainConfig
from vaelab.data import DataOptions
from vaelab.data.dataset import check_likelihood_range
from vaelab.device import resolve_device
from vaelab.io import save_model
from vaelab.training.engine import resolve_mode
from vaelab.training.run import Run
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



def test_a_template_names_fields_and_arguments_and_keeps_user_text_as_is():
    template = "'{w}': {f.binarize:={b!r}} needs 0..1; pass {f.rescale:='minmax'}, {a.force:=True}, {a.split}"
    e = DataError(template, f=DataOptions, w="{x}.npy", b="static")
    python = "'{x}.npy': DataOptions.binarize='static' needs 0..1; pass rescale='minmax', force=True, split"
    assert str(e) == python and repr(e) == f"DataError({python!r})"
    cli = "'{x}.npy': --binarize static needs 0..1; pass --rescale minmax, --force, --split"
    assert e.render(flag_name) == cli
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is DataError and str(again) == str(e)
    config = ConfigError(TrainConfig, "{f.k}={k} needs {m.prior}", k=2, m=VAEConfig)
    config = pickle.loads(pickle.dumps(config))
    assert type(config) is ConfigError and str(config) == "TrainConfig.k=2 needs prior"
    assert config.render(flag_name) == "--k=2 needs --prior"
    assert str(VaelabError("{a.split} is {plain}")) == "{a.split} is {plain}"  # no keywords: no template


def test_library_errors_name_fields_and_arguments_the_cli_its_flags(tmp_path):
    np.save(tmp_path / "wide.npy", np.linspace(-2, 5, 60, dtype=np.float32).reshape(20, 3))
    src = str(tmp_path / "wide.npy")
    with pytest.raises(DataError, match=r"DataOptions\.binarize='static' needs .*; pass rescale='minmax' to"):
        load_dataset(src, binarize="static")
    with pytest.raises(DataError, match=r"which likelihood='bernoulli' requires; pass DataOptions\.rescale="):
        check_likelihood_range(load_dataset(src), "bernoulli")
    with pytest.raises(DataError, match=r"^DataOptions\.val_fraction must be in \(0, 1\), got 2"):
        DataOptions(val_fraction=2)
    with pytest.raises(VaelabError, match=r"^TrainConfig\.compile='cuda-graph' needs a CUDA device"):
        resolve_mode("cuda-graph", torch.device("cpu"))
    with pytest.raises(VaelabError, match=r"^device must be auto, cpu, cuda or mps; got 'tpu'"):
        resolve_device("tpu")
    run = _run_dir(tmp_path)
    with pytest.raises(CheckpointError, match=r"is not empty; pass force=True to overwrite"):
        Run.create(run)

    def train(*flags: str) -> str:
        return assert_one_line_error(run_cli(["train", "--out", str(tmp_path / "new"), *flags]))

    line = train("--data", src, "--binarize", "static")
    assert "--binarize static needs values in [0, 1] but they span [-2, 5]; pass --rescale minmax to" in line
    line = train("--data", src)
    assert "--likelihood bernoulli requires; pass --rescale minmax to min-max scale them, or use" in line
    line = train("--data", "digits", "--compile", "cuda-graph")
    assert line.startswith("vaelab train: error: --compile cuda-graph needs a CUDA device")
    line = train("--data", "digits", "--out", str(run), "--epochs", "1")
    assert "is not empty; pass --force to overwrite" in line


def test_a_bad_value_in_a_file_stays_a_config_error_named_as_the_files_key():
    from vaelab.schema import from_dict

    with pytest.raises(ConfigError) as e:
        from_dict(VAEConfig, {"latent_dim": 0}, "run/config.json: model")
    message = "run/config.json: model: VAEConfig.latent_dim must be a positive integer, got 0"
    assert str(e.value) == message
    assert e.value.render(lambda ref: "--" + ref.name) == message  # a key in a file, not a flag
