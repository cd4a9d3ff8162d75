"""A run directory written by vaelab 0.1.0 (before the layered layout) still loads, samples,
evaluates and resumes: `tests/fixtures/run_0_1_0` holds one (digits, 2 epochs, a checkpoint each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from datagen import run_cli

from vaelab import load
from vaelab.training.run import Run

FIXTURE = Path(__file__).parent / "fixtures" / "run_0_1_0"


def test_an_old_run_loads_and_is_read_as_it_was():
    model = load(FIXTURE)
    assert model.config.latent_dim == 2 and model.config.hidden == (16,)
    run = Run.open(FIXTURE)
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    assert run.train_config.data == "digits"
    assert torch.isfinite(model.sample(4)).all()


def test_an_old_run_samples_evaluates_and_resumes(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    rc, _, err = run_cli(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")])
    assert rc == 0, err
    rc, out, err = run_cli(["evaluate", str(run), "--importance-samples", "10", "--no-probes"])
    assert rc == 0 and "NLL" in out, err
    rc, _, err = run_cli(["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    assert rc == 0, err
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
