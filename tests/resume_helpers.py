"""Shared helpers for the checkpoint, resume, NaN-guard, crash and DDP tests: tiny runs on digits."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

TINY = ["--data", "digits", "--batch-size", "64", "--latent-dim", "2", "--hidden", "16", "--device", "cpu"]


def train_argv(out: Path, epochs: int, *extra: str) -> list[str]:
    """argv for ``vaelab train`` of a tiny model into ``out``."""
    return ["train", *TINY, "--out", str(out), "--epochs", str(epochs), "--no-progress", *extra]


def cli(*argv: str) -> int:
    from vaelab.cli import main

    return main(list(argv))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise equality of two state dicts."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(run_dir: Path, drop: tuple[str, ...] = ("seconds",)) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-time field (the only one that may differ between runs)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def subprocess_env() -> dict[str, str]:
    """One thread per process: matches `one_thread`, so results are bitwise comparable with it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


PYTHON = sys.executable


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (fast on a busy 2-core box, and deterministic)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
