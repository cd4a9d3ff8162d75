"""Fuzz: hostile data files and tampered run directories through the real CLI, in a child process so
that a crash or a hang is counted rather than fatal. Each case must exit 0 or 2 with no traceback.

`benchmarks/fuzz_hostile.py` runs the same generators at scale (over a thousand inputs, HTTP included).
"""

from __future__ import annotations

import pytest
from hostile import Worker, data_cases, make_base_run, run_cases

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker():
    w = Worker({"VAELAB_MEMORY_LIMIT": "1G", "OMP_NUM_THREADS": "1"})
    yield w
    w.close()


def _failures(worker: Worker, cases) -> list[str]:
    bad = []
    for label, argv in cases:
        out = worker.run(argv, timeout=120)
        if not out.ok:
            bad.append(f"{label}: rc={out.rc} hung={out.hung} traceback={out.traceback}: {out.message}")
    return bad


def test_hostile_data_files_are_one_line_errors(worker, tmp_path):
    assert _failures(worker, data_cases(tmp_path, n=40, seed=1)) == []


def test_tampered_run_directories_are_one_line_errors(worker, tmp_path):
    base = make_base_run(tmp_path, worker)
    (tmp_path / "runs").mkdir()
    assert _failures(worker, run_cases(base, tmp_path / "runs", n=40, seed=1)) == []
