"""The CLI end to end in a temp dir, and every bad-input case: one line, exit code 2."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaelab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args], capture_output=True, text=True, timeout=600
    )


def run_inproc(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run ``vaelab ARGS`` in this process (cheaper than a subprocess) -> a CompletedProcess."""
    capsys.readouterr()
    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse exits for bad flags
        rc = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_writes_the_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    expected = {"config.json", "model.safetensors", "metrics.jsonl", "samples.png", "reconstructions.png"}
    assert expected <= names
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    rec = json.loads(lines[-1])
    for key in ("epoch", "train_neg_elbo", "test_neg_elbo", "recon", "kl", "seconds"):
        assert key in rec
    doc = json.loads((trained_run / "config.json").read_text())
    assert doc["version"] == 1 and doc["train"]["epochs"] == 3 and doc["model"]["latent_dim"] == 2
    with Image.open(trained_run / "samples.png") as im:
        assert im.size[0] > 64 and im.size[1] > 64


def test_sample_reconstruct_encode_evaluate(trained_run, tmp_path, capsys):
    png, npy = tmp_path / "s.png", tmp_path / "s.npy"
    assert main(["sample", str(trained_run), "-n", "9", "--out", str(png), "--seed", "1"]) == 0
    assert main(["sample", str(trained_run), "-n", "9", "--out", str(npy), "--seed", "1"]) == 0
    arr = np.load(npy)
    assert arr.shape == (9, 1, 8, 8) and arr.min() >= 0 and arr.max() <= 1
    assert Image.open(png).size[0] > 0

    rec = tmp_path / "r.png"
    assert main(["reconstruct", str(trained_run), "--data", "digits", "-n", "8", "--out", str(rec)]) == 0
    assert rec.stat().st_size > 0

    npz, csv = tmp_path / "z.npz", tmp_path / "z.csv"
    assert main(["encode", str(trained_run), "--data", "digits", "--out", str(npz)]) == 0
    feats = np.load(npz)
    assert feats["mu"].shape == (1797, 2) and feats["logvar"].shape == (1797, 2)
    assert feats["labels"].shape == (1797,) and set(feats["split"]) == {"train", "test"}
    assert main(["encode", str(trained_run), "--data", "digits", "--out", str(csv), "--split", "test"]) == 0
    rows = csv.read_text().splitlines()
    assert rows[0] == "mu_0,mu_1,logvar_0,logvar_1,index,label,split" and len(rows) == 298

    js = tmp_path / "e.json"
    assert main(["evaluate", str(trained_run), "--data", "digits", "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    for key in ("neg_elbo", "recon", "kl", "n", "split"):
        assert key in result
    assert result["n"] == 297 and result["split"] == "test"
    assert abs(result["neg_elbo"] - result["recon"] - result["kl"]) < 1e-6
    # the same seed gives the same numbers
    assert main(["evaluate", str(trained_run), "--data", "digits", "--json", str(js), "--force"]) == 0
    assert json.loads(js.read_text())["neg_elbo"] == result["neg_elbo"]


@pytest.mark.slow
def test_outputs_are_never_overwritten_silently(trained_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    out.write_bytes(b"mine")
    proc = run_cli("sample", str(trained_run), "--out", str(out))
    assert_clean_error(proc, str(out), "--force")
    assert out.read_bytes() == b"mine"
    proc = run_inproc(capsys, "train", "--data", "digits", "--out", str(trained_run), "--epochs", "1")
    assert_clean_error(proc, "not empty", "--force")
    assert len((trained_run / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "--data", "mnistt", "--out", "{tmp}/r"], ["unknown data source 'mnistt'"]),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--epochs", "0"], ["--epochs"]),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--epochs", "-3"], ["--epochs"]),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--latent-dim", "0"], ["--latent-dim"]),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--lr", "nan"], ["--lr"]),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--hidden", "400,x"], ["--hidden"]),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--batch-size", "abc"], ["--batch-size"]),
        (["sample", "{tmp}/missing"], ["does not exist"]),
        (["evaluate", "{tmp}/missing", "--data", "digits"], ["does not exist"]),
        (["sample", "{run}", "--out", "{tmp}/x.jpg"], [".png or .npy"]),
        (["encode", "{run}", "--data", "digits", "--out", "{tmp}/x.txt"], [".npz or .csv"]),
        (["evaluate", "{run}", "--data", "nope"], ["unknown data source 'nope'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(trained_run, tmp_path, capsys, args, needles):
    args = [a.format(tmp=tmp_path, run=trained_run) for a in args]
    assert_clean_error(run_inproc(capsys, *args), *needles)
    assert not (tmp_path / "r").exists()


def test_corrupt_model_files_are_one_line(trained_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    assert_clean_error(run_cli("sample", str(broken), "--out", str(tmp_path / "a.png")), "model.safetensors")
    (broken / "config.json").write_text("{")
    assert_clean_error(run_inproc(capsys, "evaluate", str(broken), "--data", "digits"), "config.json")


def test_bernoulli_rejects_data_outside_unit_interval(monkeypatch, tmp_path, capsys):
    import torch

    import vaelab.data as data_mod

    def wide(**_):
        d = data_mod.load_digits()
        return data_mod.Dataset("wide", data_mod.Split(d.train.x * 16), data_mod.Split(d.test.x * 16))

    monkeypatch.setitem(data_mod.SOURCES, "wide", wide)
    rc = main(["train", "--data", "wide", "--out", str(tmp_path / "w"), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "outside [0, 1]" in err[0] and "'wide'" in err[0]
    # the Gaussian likelihood takes the same data
    rc = main(
        [
            "train",
            "--data",
            "wide",
            "--out",
            str(tmp_path / "g"),
            "--epochs",
            "1",
            "--likelihood",
            "gaussian",
            "--no-progress",
        ]
    )
    assert rc == 0
    last = json.loads((tmp_path / "g" / "metrics.jsonl").read_text().splitlines()[-1])
    assert torch.isfinite(torch.tensor(last["test_neg_elbo"]))


def _demo_train_args() -> list[str]:
    """The exact `vaelab train` arguments that `make demo` uses, read from the Makefile."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "vaelab train" in ln)
    args = shlex.split(line.split("vaelab", 1)[1])
    return args


@pytest.mark.slow
def test_demo_training_beats_the_per_pixel_baseline(tmp_path):
    args = _demo_train_args()
    out = args.index("--out")
    args[out + 1] = str(tmp_path / "demo")
    assert main([*args, "--no-progress"]) == 0
    last = json.loads((tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()[-1])
    # Test -ELBO baselines, in nats: uniform pixels 64 ln 2 = 44.4; independent pixels with the
    # training means 27.1; the demo's first epoch 29.3 and its last 23.9.
    assert last["test_neg_elbo"] < 25.0, last
    assert re.match(r"\d+", str(last["epoch"]))
