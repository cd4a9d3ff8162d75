"""`vaelab train --init-from RUN_DIR`: a new run from another run's model and weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaelab.cli import main
from vaelab.models.vae import load

SOURCE = ["train", "--data", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "100"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "source"
    assert main([*SOURCE, "--out", str(out), "--epochs", "3", "--gated", "--binarize", "static"]) == 0
    return out


def fails(argv: list[str]) -> int:
    """main's exit code, whether the error came from argparse (SystemExit) or the command."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def config(run) -> dict:
    return json.loads((run / "config.json").read_text())


def test_starts_from_the_weights_and_trains_with_the_new_flags(source, tmp_path, capsys):
    out = tmp_path / "iwae"
    # An lr this small leaves the weights where they started, so what is compared is the starting point.
    flags = ["--objective", "iwae", "--k", "4", "--lr", "1e-12", "--epochs", "1"]
    assert main(["train", "--init-from", str(source), "--out", str(out), *flags]) == 0
    assert f"starting from the weights of '{source}'" in capsys.readouterr().out
    before, after = load(source).state_dict(), load(out).state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=1e-9)
    cfg = config(out)
    assert cfg["model"] == config(source)["model"]  # gated, 16 wide, 2-d latent: all from the source
    assert cfg["train"]["init_from"] == str(source)
    assert cfg["train"]["objective"] == "iwae" and cfg["train"]["k"] == 4
    assert cfg["train"]["data"] == "digits" and cfg["train"]["data_options"]["binarize"] == "static"
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["epoch"] == 1 and "test_neg_iwae" in rec  # a new run: its own epochs and metrics
    assert len((source / "metrics.jsonl").read_text().splitlines()) == 3  # the source is untouched


def test_the_new_run_resumes_from_its_own_checkpoint(source, tmp_path):
    out = tmp_path / "tuned"
    assert main(["train", "--init-from", str(source), "--out", str(out), "--epochs", "1"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert config(out)["train"]["init_from"] == str(source)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hidden", "32"], "--hidden cannot be used with --init-from: the model comes from"),
        (["--prior", "vamp"], "--prior cannot be used with --init-from"),
        (["--resume", "X"], "cannot be used with --resume"),
        (["--data", "fashion-mnist", "--data-dir", "NOWHERE"], "fashion-mnist"),
    ],
)
def test_bad_combinations_are_one_line_errors(source, tmp_path, capsys, flags, message):
    assert fails(["train", "--init-from", str(source), "--out", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_the_source_can_never_be_the_output(source, capsys):
    before = (source / "model.safetensors").read_bytes()
    assert fails(["train", "--init-from", str(source), "--out", str(source), "--force"]) == 2
    assert "is the --init-from run" in capsys.readouterr().err
    assert (source / "model.safetensors").read_bytes() == before


def test_a_missing_source_is_a_one_line_error(tmp_path, capsys):
    assert fails(["train", "--init-from", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "run directory" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def cvae(tmp_path_factory):
    out = tmp_path_factory.mktemp("cvae") / "cvae"
    assert main([*SOURCE, "--out", str(out), "--epochs", "1", "--conditional"]) == 0
    return out


def labelled_npz(path, labels) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((len(labels), 1, 8, 8)).astype("float32"), y=np.asarray(labels))
    return str(path)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_cvae_refuses_labels_it_has_no_class_for(cvae, tmp_path, capsys, command):
    data = labelled_npz(tmp_path / "twelve.npz", np.arange(60) % 12)  # classes 0..11; the CVAE has 10
    if command == "train":
        argv = ["train", "--init-from", str(cvae), "--out", str(tmp_path / "x"), "--data", data]
    else:
        argv = ["evaluate", str(cvae), "--data", data]
    assert fails(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vaelab {command}: error: the model is a CVAE of 10 classes, but '{data}' has labels outside 0..9"
    ]
    assert not (tmp_path / "x").exists()


def test_a_cvae_can_be_fine_tuned_on_labels_it_knows(cvae, tmp_path):
    data = labelled_npz(tmp_path / "ten.npz", np.arange(60) % 10)
    assert (
        main(
            ["train", "--init-from", str(cvae), "--out", str(tmp_path / "x"), "--data", data, "--epochs", "1"]
        )
        == 0
    )
    assert config(tmp_path / "x")["model"]["n_classes"] == 10
