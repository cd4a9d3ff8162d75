"""``vaelab train --config FILE.toml`` and the RUN_DIR/run.toml every run gets (cli/_run_toml.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from datagen import assert_one_line_error, run_cli
from resume_helpers import same_weights, weights

from vaelab.cli import build_parser
from vaelab.cli._flags import given
from vaelab.cli._run_toml import RUN_TOML, apply, keys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TINY = ["--data", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "64", "--device", "cpu"]


def train(*argv: str) -> None:
    rc, _, err = run_cli(["train", *argv, "--no-progress"])
    assert rc == 0, err


def sections(run: Path) -> dict:
    doc = json.loads((run / "config.json").read_text())
    return {"model": doc["model"], "train": doc["train"]}


def run_toml(run: Path) -> dict:
    return tomllib.loads((run / RUN_TOML).read_text())


def assert_repeats(run: Path, tmp_path: Path) -> Path:
    """`--config RUN/run.toml --out NEW` gives the same config.json sections, weights and run.toml."""
    again = tmp_path / "again"
    train("--config", str(run / RUN_TOML), "--out", str(again))
    assert sections(again) == sections(run)
    assert same_weights(weights(again), weights(run))  # on CPU, bitwise
    assert (again / RUN_TOML).read_text() == (run / RUN_TOML).read_text()
    return again


def write(tmp_path: Path, text: str, name: str = "my.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toml") / "run"
    train(*TINY, "--out", str(out), "--epochs", "2", "--gated", "--beta", "0.5", "--kl-warmup", "2")
    return out


def test_every_run_gets_a_run_toml_that_repeats_it(run, tmp_path):
    text = (run / RUN_TOML).read_text()
    assert text.startswith("# ") and "no out, force or resume" in text
    doc = run_toml(run)
    assert not {"out", "force", "resume", "progress", "tensorboard", "config"} & set(doc)
    assert doc["data"] == "digits" and doc["hidden"] == [16] and doc["gated"] is True
    assert doc["beta"] == 0.5 and doc["kl_warmup"] == 2 and doc["epochs"] == 2
    assert doc["conditional"] is False and "pseudo_inputs" not in doc  # implied by prior = "normal"
    assert doc["binarize"] == "none" and doc["rescale"] == "none"  # the data options as applied
    assert_repeats(run, tmp_path)


def test_flags_on_the_command_line_override_the_file(tmp_path):
    out = tmp_path / "run"
    config = write(tmp_path, f'data = "digits"\nout = "{out}"\nlatent-dim = 3\nhidden = [8]\nepochs = 2\n')
    train("--config", config, "--epochs", "1", "--hidden", "16", "--batch-size", "64")
    doc = sections(out)
    assert doc["model"]["latent_dim"] == 3 and doc["model"]["hidden"] == [16]
    assert doc["train"]["epochs"] == 1 and doc["train"]["batch_size"] == 64
    assert run_toml(out)["hidden"] == [16]  # the run's run.toml holds what it ran with


def test_keys_come_from_the_parser_with_either_spelling(tmp_path):
    parser = build_parser().parse_args(["train"]).train_parser
    assert {"data", "out", "force", "init_from", "latent_dim", "conditional", "epochs", "image_size"} <= set(
        keys(parser)
    )
    assert "help" not in keys(parser) and "config" not in keys(parser)
    config = write(
        tmp_path,
        'image-size = [32, 48]\nval_fraction = 0.2\nlabel-column = 3\nrescale = "minmax"\n'
        "progress = false\nlr = 1\ngated = false\nchannels = []\n",
    )
    args = build_parser().parse_args(["train", "--config", config, "--lr", "0.01"])
    apply(args)
    assert args.image_size == (32, 48) and args.val_fraction == 0.2 and args.label_column == "3"
    assert args.rescale == "minmax" and args.progress is False and args.channels == ()
    assert args.lr == 0.01  # typed, so the file's lr = 1 is not used
    assert "gated" not in given(args)  # a switch set to false is not given
    assert "channels" in given(args)


def test_unknown_key(tmp_path):
    config = write(tmp_path, 'data = "digits"\nlatnt_dim = 3\n', name="run.toml")
    result = run_cli(["train", "--config", config, "--out", str(tmp_path / "x")])
    assert_one_line_error(result, f"{config}: unknown key 'latnt_dim' (did you mean latent_dim?)")
    assert not (tmp_path / "x").exists()
    result = run_cli(["train", "--config", write(tmp_path, "latent-dim = 3\nlatent_dim = 3\n")])
    assert_one_line_error(result, "key 'latent_dim' is given twice")
    table = write(tmp_path, "[model]\nlatent_dim = 3\n")  # the keys are flat: no tables
    assert_one_line_error(run_cli(["train", "--config", table]), "unknown key 'model'")


@pytest.mark.parametrize(
    "line, message",
    [
        ('latent_dim = "8"', 'latent_dim: expected an integer, got "8"'),
        ("latent_dim = 0", "latent_dim: must be a positive integer, got 0"),
        ("latent_dim = 2.5", "latent_dim: expected an integer, got 2.5"),
        ("hidden = 400", "hidden: expected a list of integers such as [400, 400], got 400"),
        ('hidden = ["a"]', "hidden: expected a list of integers"),
        ('gated = "yes"', 'gated: expected true or false, got "yes"'),
        ("lr = true", "lr: expected a number, got true"),
        ('likelihood = "poisson"', 'likelihood: must be one of bernoulli, gaussian, logistic; got "poisson"'),
        ("data = 3", "data: expected a string, got 3"),
        ("image_size = 1.5", "image_size: expected S, [H, W]"),
        ("nan_lr_factor = 2.0", "nan_lr_factor: must be in (0, 1), got 2.0"),
    ],
)
def test_a_wrong_type_names_the_key_and_file(tmp_path, line, message):
    config = write(tmp_path, line + "\n")
    result = run_cli(["train", "--config", config, "--out", str(tmp_path / "x")])
    assert_one_line_error(result, config, message)


def test_bad_toml_names_the_file_and_line(tmp_path):
    config = write(tmp_path, 'data = "digits"\nlatent_dim = = 3\n')
    assert_one_line_error(run_cli(["train", "--config", config]), f"{config}: not valid TOML", "line 2")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"data = '\xff'\n")
    assert_one_line_error(run_cli(["train", "--config", str(binary)]), str(binary), "not UTF-8")
    missing = str(tmp_path / "missing.toml")
    assert_one_line_error(run_cli(["train", "--config", missing]), missing, "cannot read")


def test_resume_keeps_run_toml_up_to_date(tmp_path):
    out = tmp_path / "run"
    train(*TINY, "--out", str(out), "--epochs", "1")
    train("--resume", str(out), "--epochs", "2")
    assert run_toml(out)["epochs"] == 2
    # A settings file with a setting the run fixes says where it came from.
    result = run_cli(["train", "--resume", str(out), "--config", str(out / RUN_TOML)])
    assert_one_line_error(result, f"in {out / RUN_TOML} cannot be used with --resume")
    config = write(tmp_path, "epochs = 3\n")
    train("--resume", str(out), "--config", config)
    assert run_toml(out)["epochs"] == 3 and len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_init_from_round_trips(run, tmp_path):
    tuned = tmp_path / "tuned"
    train("--init-from", str(run), "--out", str(tuned), "--epochs", "1", "--objective", "iwae", "--k", "2")
    doc = run_toml(tuned)
    assert doc["init_from"] == str(run) and doc["objective"] == "iwae" and doc["k"] == 2
    assert "latent_dim" not in doc and "gated" not in doc  # the model is the --init-from run's
    assert_repeats(tuned, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags",
    [
        ["--conditional"],
        ["--latent-dim", "3", "--top-latent-dim", "1"],
        ["--prior", "vamp", "--pseudo-inputs", "7"],
        ["--prior", "mixture"],
        ["--holdout", "0.2", "--early-stop", "2"],
        ["--arch", "conv", "--channels", "4,8", "--binarize", "static"],
    ],
)
def test_model_options_round_trip(tmp_path, flags):
    out = tmp_path / "run"
    train(*TINY, "--out", str(out), "--epochs", "1", *flags)
    assert_repeats(out, tmp_path)


def test_any_string_round_trips():
    from vaelab.cli._run_toml import render
    from vaelab.config import TrainConfig, VAEConfig

    odd = 'a "quoted" \\ path\twith\x01control\x7f and ünïcode'
    parser = build_parser().parse_args(["train"]).train_parser
    text = render(VAEConfig(), TrainConfig(data=odd, lr=1e-5, data_options={"label_column": 3}), parser)
    doc = tomllib.loads(text)
    assert doc["data"] == odd and doc["lr"] == 1e-5 and doc["label_column"] == "3"
