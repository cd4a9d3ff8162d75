"""Fuzz benchmark: over a thousand hostile inputs, and not one traceback, hang or odd exit code.

Runs the cases of ``tests/hostile.py`` under a memory limit ($VAELAB_MEMORY_LIMIT, default here 1G):

- ``data``: ``vaelab train`` on hostile SOURCE files (random and mutated IDX, .npy, .npz, CSV and
  PNG files, compression bombs, FIFOs, devices, a symlink loop);
- ``run``: ``vaelab sample``, ``evaluate`` and ``train --resume`` on run directories with a tampered
  config.json, model.safetensors, checkpoint state.json, optimizer.pt or checkpoint weights (with
  the checkpoint's checksums recomputed, as an attacker would);
- ``http``: raw requests to a running ``vaelab explore`` server.

A command passes when it exits 0 or 2 with no traceback within the time limit; a request passes when
it gets a status below 500 (or 501, the standard answer to an unknown method) within the time limit
and the server prints no traceback. Peak memory is
the largest resident set of the worker process that ran the commands (torch included).

Usage: python benchmarks/fuzz_hostile.py [--data 500] [--run 400] [--http 300] [--seed 0]
       [--json results.json]. Exit status 1 if any case fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile import Worker, data_cases, http_requests, make_base_run, raw_http, run_cases

TIMEOUT_S = 120  # per command: tiny models train in well under a second


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_commands(worker: Worker, cases, group: str, results: dict) -> None:
    for label, argv in cases:
        out = worker.run(argv, TIMEOUT_S)
        results["counts"][group] += 1
        results["exit_codes"][f"{group}: {out.rc}"] += 1
        results["peak_rss"] = max(results["peak_rss"], out.peak_rss)
        if out.hung:
            results["hangs"] += 1
        if out.traceback:
            results["tracebacks"] += 1
        if out.rc not in (0, 2):
            results["bad_exit"] += 1
        if not out.ok:
            results["failures"].append(
                {"group": group, "case": label, "argv": argv, "rc": out.rc, "message": out.message}
            )


def _exchange(port: int, payload: bytes, timeout: float = 15.0) -> int | None:
    """Send raw bytes -> the response's status (0: closed without one), or None when none came in time."""
    return raw_http(port, payload, timeout)[0]


def run_http(base: Path, n: int, seed: int, results: dict) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryFile(mode="w+") as log:
        argv = ["explore", str(base), "--port", str(port), "--data", "digits"]
        server = subprocess.Popen([sys.executable, "-m", "vaelab", *argv], stdout=log, stderr=log)
        try:
            _query_all(port, n, seed, server, results)
        finally:
            server.terminate()
            server.wait(30)
        log.seek(0)
        results["tracebacks"] += log.read().count("Traceback (most recent call last)")


def _query_all(port: int, n: int, seed: int, server: subprocess.Popen, results: dict) -> None:
    deadline = time.monotonic() + 120
    info = f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    while _exchange(port, info, 2) != 200:
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("the explorer did not start")
        time.sleep(0.2)
    for label, payload in http_requests(port, n, seed):
        status = _exchange(port, payload)
        results["counts"]["http"] += 1
        results["exit_codes"][f"http: {status}"] += 1
        if status is None:
            results["hangs"] += 1
        elif status >= 500 and status != 501:  # 501: an unknown method, the standard answer
            results["bad_exit"] += 1
        if status is None or (status >= 500 and status != 501):
            results["failures"].append({"group": "http", "case": label, "status": status})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=int, default=500, help="hostile SOURCE files")
    ap.add_argument("--run", type=int, default=400, help="tampered run directories")
    ap.add_argument("--http", type=int, default=300, help="hostile HTTP requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    limit = os.environ.setdefault("VAELAB_MEMORY_LIMIT", "1G")
    results = {
        "counts": collections.Counter(),
        "exit_codes": collections.Counter(),  # per group: exit code (commands) or HTTP status
        "tracebacks": 0,
        "hangs": 0,
        "bad_exit": 0,
        "peak_rss": 0,
        "failures": [],
    }
    t0 = time.time()
    worker = Worker({"VAELAB_MEMORY_LIMIT": limit, "OMP_NUM_THREADS": "1"})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_base_run(root, worker)
        (root / "data").mkdir()
        run_commands(worker, data_cases(root / "data", args.data, args.seed), "data", results)
        (root / "runs").mkdir()
        run_commands(worker, run_cases(base, root / "runs", args.run, args.seed), "run", results)
        worker.close()
        run_http(base, args.http, args.seed, results)
    total = sum(results["counts"].values())
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
        "hardware": f"{_cpu()}, {os.cpu_count()} CPUs",
        "memory_limit": limit,
        "inputs": total,
        "by_group": dict(results["counts"]),
        "outcomes": dict(sorted(results["exit_codes"].items())),
        "tracebacks": results["tracebacks"],
        "hangs": results["hangs"],
        "exit_codes_other_than_0_or_2": results["bad_exit"],
        "peak_rss_mib": round(results["peak_rss"] / 2**20, 1),
        "seconds": round(time.time() - t0, 1),
        "failures": results["failures"][:50],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    for f in results["failures"][:20]:
        print("FAIL", json.dumps(f)[:300], file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if results["failures"] or results["tracebacks"] else 0


if __name__ == "__main__":
    sys.exit(main())
