"""Tiny trained runs for the picture tests, trained once per test process through the CLI.

Imported by the test modules (not a conftest, so it composes with other test helpers).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from vaelab.cli import main


@functools.cache
def trained_run(latent_dim: int = 2, epochs: int = 4) -> Path:
    """A digits run (hidden 32, seed 0) with config.json, model.safetensors and metrics.jsonl.

    Shared: tests must copy it (`copy_run`) before changing anything in it.
    """
    root = Path(tempfile.mkdtemp(prefix="vaelab-pictures-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    run = root / f"digits-z{latent_dim}"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", str(epochs), "--seed", "0"]
    argv += ["--latent-dim", str(latent_dim), "--hidden", "32", "--batch-size", "64", "--no-progress"]
    assert main(argv) == 0
    return run


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a shared run directory."""
    shutil.copytree(run, dest)
    return dest
