"""Real processes: kill -9 at random moments, SIGTERM, and a double Ctrl-C never leave a broken run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from resume_helpers import PYTHON, TINY, cli, metrics, subprocess_env

from vaelab import load
from vaelab.training.checkpoint import Checkpoint, read_latest

CRASH_TEST = Path(__file__).parents[1] / "benchmarks" / "crash_test.py"


@pytest.mark.slow
def test_kill_9_at_random_moments_always_resumes_bitwise(tmp_path):
    """Three trials of the crash benchmark (which runs 30): kills land after epoch 1, while training."""
    out = tmp_path / "crash.json"
    argv = ["--trials", "3", "--epochs", "4", "--window", "epochs", "--seed", "1", "--json", str(out)]
    proc = subprocess.run(
        [PYTHON, str(CRASH_TEST), *argv], env=subprocess_env(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["trials"] == 3 and summary["failures"] == 0
    assert summary["max_lost_epochs"] is None or summary["max_lost_epochs"] <= 1


def _start(out: Path, epochs: int, *extra: str) -> subprocess.Popen:
    argv = [
        PYTHON,
        "-m",
        "vaelab",
        "train",
        *TINY,
        *extra,
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--no-progress",
    ]
    return subprocess.Popen(
        argv, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait_for_epochs(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        path = out / "metrics.jsonl"
        if path.is_file() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"no {n} epochs before the timeout (exit {proc.poll()})")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, 500)
    _wait_for_epochs(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert f"resume with: vaelab train --resume {out}" in stderr
    assert "Traceback" not in stderr
    done = len(metrics(out))
    assert Checkpoint.from_blobs(read_latest(out)).epoch == done  # the stop point was checkpointed
    assert cli("train", "--resume", str(out), "--epochs", str(done + 1), "--no-progress") == 0
    assert [r["epoch"] for r in metrics(out)] == list(range(1, done + 2))


@pytest.mark.slow
def test_double_ctrl_c_quits_at_once_and_leaves_a_resumable_run(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, 500, "--hidden", "512,512", "--batch-size", "16")  # epochs long enough that the
    _wait_for_epochs(out, 2, proc)  # second Ctrl-C, 20 ms after the first, lands inside one
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; the last checkpoint" in stderr and "Traceback" not in stderr
    load(out)
    done = Checkpoint.from_blobs(read_latest(out)).epoch
    assert cli("train", "--resume", str(out), "--epochs", str(done + 1), "--no-progress") == 0
    assert [r["epoch"] for r in metrics(out)] == list(range(1, done + 2))


def test_ctrl_c_after_the_command_is_done_quits_without_a_traceback(tmp_path):
    """A Ctrl-C that arrives once the command has returned (here: right after a graceful stop, during
    the interpreter's shutdown) exits at once with 130 and prints no traceback."""
    script = (
        "import os, signal, vaelab.cli as c\n"
        "c.main = lambda argv=None: (print('done', flush=True), 0)[1]\n"
        "import atexit\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT) or __import__('time').sleep(5))\n"
        "c.run()\n"
    )
    env = subprocess_env()
    proc = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 130 and proc.stdout == "done\n"
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
