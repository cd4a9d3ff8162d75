"""Crash safety: kill -9 ``vaelab train`` at random moments, then check the run dir loads and resumes.

Each trial starts ``python -m vaelab train`` (tiny model on 8x8 digits), SIGKILLs it after a delay
drawn uniformly over its whole lifetime (``--window process``, start-up included) or from the moment
its run dir is set up (``training``), both as long as an uninterrupted run; or (``epochs``) in the
epoch loop: after the metrics line of an epoch j drawn from 1..E-1, at a delay drawn uniformly over
one epoch of the uninterrupted run, so the kill lands in epoch j+1 (training, evaluation, or the
checkpoint writes) whatever the machine's load does to the timings. Then it checks:

- killed before config.json exists: ``--resume`` refuses with one clear line (exit 2) and a fresh
  ``--force`` run completes;
- otherwise: ``vaelab.load(RUN_DIR)`` works, the newest checkpoint is at most ``--checkpoint-every``
  epochs behind the metrics lines written before the kill (the work lost), and
  ``vaelab train --resume RUN_DIR`` finishes with weights and metrics.jsonl bitwise identical to the
  uninterrupted run (``seconds`` excepted).

Usage: python benchmarks/crash_test.py [--trials 30] [--epochs 20] [--checkpoint-every 1]
       [--window process|training|epochs] [--seed 0] [--json results.json]. Exit status 1 if any trial
       fails. A run that ends before its kill time is not a trial: the kill time is drawn again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("start-up", "before 1st checkpoint", "training", "writing final files", "finished")
TINY = ["--data", "digits", "--batch-size", "64", "--latent-dim", "2", "--hidden", "16", "--device", "cpu"]


def victim_argv(out: Path, epochs: int, every: int) -> list[str]:
    return [
        sys.executable, "-m", "vaelab", "train", *TINY, "--out", str(out), "--epochs", str(epochs),
        "--checkpoint-every", str(every), "--no-progress", "--force",
    ]  # fmt: skip


def env() -> dict[str, str]:
    # One thread: the in-process resume below then does bitwise the same arithmetic.
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def complete_lines(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl records that were fully written (a kill may leave a partial last line)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().split("\n")[:-1]:
        out.append(json.loads(line))
    return out


def strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def state(run_dir: Path) -> tuple[dict, list[dict[str, Any]]]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors")), strip(complete_lines(run_dir / "metrics.jsonl"))


def same(a: tuple[dict, list], b: tuple[dict, list]) -> bool:
    import torch

    wa, ma = a
    wb, mb = b
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and ma == mb


def vaelab(*argv: str) -> tuple[int, str]:
    """Run the CLI in this process -> (exit code, stderr)."""
    from vaelab.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def lines_written(out: Path) -> int:
    metrics = out / "metrics.jsonl"
    return metrics.read_bytes().count(b"\n") if metrics.is_file() else 0


def wait_until(cond, proc: subprocess.Popen) -> float:
    """Poll ``cond()`` every 5 ms until it holds or the process ends -> the time it held."""
    while not cond() and proc.poll() is None:
        time.sleep(0.005)
    return time.perf_counter()


def reference(work: Path, epochs: int, every: int) -> tuple[tuple[dict, list], float, float, float]:
    """The uninterrupted run -> (its weights and metrics, seconds until its run dir is set up,
    seconds in all, median seconds between metrics lines = one epoch with its checkpoint)."""
    out = work / "reference"
    t0 = time.perf_counter()
    proc = subprocess.Popen(victim_argv(out, epochs, every), env=env(), stdout=subprocess.DEVNULL)
    started = wait_until(lambda: (out / "config.json").exists(), proc) - t0
    stamps = [wait_until(lambda n=n: lines_written(out) >= n, proc) for n in range(1, epochs + 1)]
    if proc.wait() != 0:
        raise SystemExit("the uninterrupted reference run failed")
    epoch = statistics.median(b - a for a, b in itertools.pairwise(stamps))
    return state(out), started, time.perf_counter() - t0, epoch


def trial(i: int, rng: random.Random, work: Path, ref: tuple, span: float, args) -> dict:
    from vaelab import load
    from vaelab.training.checkpoint import Checkpoint, read_latest

    out = work / f"trial{i:03d}"
    kill_at = rng.uniform(0.0, span)
    after = rng.randint(1, args.epochs - 1) if args.window == "epochs" else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(victim_argv(out, args.epochs, args.checkpoint_every), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        if args.window == "training":
            t0 = wait_until(lambda: (out / "config.json").exists(), proc)
        elif args.window == "epochs":
            t0 = wait_until(lambda: lines_written(out) >= after, proc)
        time.sleep(max(0.0, kill_at - (time.perf_counter() - t0)))
        finished = proc.poll() is not None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rec: dict[str, Any] = {"trial": i, "kill_at_s": round(kill_at, 3), "finished_first": finished}
    if after is not None:
        rec["after_epoch"] = after
    lines = complete_lines(out / "metrics.jsonl")
    rec["epochs_done"] = len(lines)
    if not (out / "config.json").exists():
        rec["phase"] = "start-up"
        code, err = vaelab("train", "--resume", str(out))
        rec["resume_refused_cleanly"] = code == 2 and err.count("\n") == 1
        code, _ = vaelab(*victim_argv(out, args.epochs, args.checkpoint_every)[3:])
        rec["ok"] = rec["resume_refused_cleanly"] and code == 0 and same(state(out), ref)
        return rec
    load(out)  # raises if the run dir does not load
    blobs = read_latest(out)
    rec["checkpoint_epoch"] = Checkpoint.from_blobs(blobs).epoch if blobs else None
    if finished:
        rec["phase"] = "finished"
    elif rec["checkpoint_epoch"] is None:
        rec["phase"] = "before 1st checkpoint"
    elif len(lines) >= args.epochs:
        rec["phase"] = "writing final files"
    else:
        rec["phase"] = "training"
    rec["lost_epochs"] = len(lines) - (rec["checkpoint_epoch"] or 0)
    t0 = time.perf_counter()
    code, err = vaelab("train", "--resume", str(out), "--no-progress")
    rec["resume_s"] = round(time.perf_counter() - t0, 2)
    rec["identical"] = code == 0 and same(state(out), ref)
    rec["ok"] = rec["identical"] and rec["lost_epochs"] <= args.checkpoint_every
    if not rec["ok"]:
        rec["stderr"] = err[-500:]
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--window",
        choices=["process", "training", "epochs"],
        default="process",
        help="draw kill times over the whole lifetime, from config.json's creation, or from epoch 1's end",
    )
    p.add_argument("--json", type=Path, help="write the per-trial results and the summary here")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vaelab-crash-"))
    try:
        ref, started, lifetime, epoch = reference(work, args.epochs, args.checkpoint_every)
        span = {"process": lifetime, "training": lifetime - started, "epochs": epoch}[args.window]
        print(
            f"uninterrupted run: {lifetime:.2f}s for {args.epochs} epochs (run dir set up after "
            f"{started:.2f}s, {epoch:.2f}s per epoch); kill times ~ U(0, {span:.2f}) s into the "
            f"'{args.window}' window"
        )
        results, redrawn = [], 0
        while len(results) < args.trials and redrawn < 10 * args.trials:
            rec = trial(len(results) + redrawn, rng, work, ref, span, args)
            print(json.dumps({k: v for k, v in rec.items() if k != "stderr"}), flush=True)
            if rec["finished_first"]:  # the run ended before its kill time: not a kill, draw again
                redrawn += 1
                continue
            results.append(rec)
            if not rec["ok"]:
                print(rec.get("stderr", ""), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    trained = [r for r in results if r["phase"] != "start-up"]
    summary = {
        "trials": len(results),
        "redrawn_runs_finished_before_the_kill": redrawn,
        "failures": sum(not r["ok"] for r in results),
        "phases": {ph: sum(r["phase"] == ph for r in results) for ph in PHASES if ph != "finished"},
        "resumed_bitwise_identical": sum(bool(r.get("identical")) for r in trained),
        "max_lost_epochs": max((r["lost_epochs"] for r in trained), default=None),
        "mean_lost_epochs": statistics.fmean(r["lost_epochs"] for r in trained) if trained else None,
        "uninterrupted_run_s": round(lifetime, 2),
        "run_dir_set_up_s": round(started, 2),
        "epoch_s": round(epoch, 3),
        "window": args.window,
        "epochs": args.epochs,
        "checkpoint_every": args.checkpoint_every,
        "seed": args.seed,
    }
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "trials": results}, indent=2) + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
