"""The `vaelab` executable and the outside world: SIGTERM before training starts, and a stdout pipe
whose reader leaves early (``vaelab train ... | head -1``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

VAELAB = [sys.executable, "-m", "vaelab"]


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (Linux: the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_sigterm_during_start_up_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*VAELAB, "train", "--data", "digits", "--out", str(out), "--epochs", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # the handler is in place; torch is most likely still loading
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the machine was too fast: training finished before the signal")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("vaelab"), err
    if "terminated (SIGTERM)" in err:  # stopped before training: at most an empty run dir
        assert len(lines) <= 2 and not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_a_reader_that_leaves_early_does_not_stop_training(tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs", "3", "--hidden", "32", "--latent-dim", "2", "--no-progress"]
    cmd = " ".join([*VAELAB, "train", "--data", "digits", "--out", str(out), *flags])
    shell = f"{cmd} | head -1; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3] and (out / "model.safetensors").exists()


def test_the_cli_starts_without_importing_torch():
    code = "import sys, vaelab.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run([*VAELAB, "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "train" in proc.stdout
