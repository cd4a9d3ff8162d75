"""Epoch time of training on torch Datasets against `load_dataset`: what `vaelab.data.from_torch` costs.

    .venv/bin/python benchmarks/torch_data.py [--data fashion-mnist] [--repeats 7] [--json out.json]

Cases, each training the same 784-400-20 MLP VAE (Bernoulli, Adam 1e-3, batch 128, seed 0):
  load          load_dataset(DATA): the in-memory split vaelab trains on
  gathered      from_torch(TensorDataset(train.x, train.y), ...): gathered into memory
  streamed      the same TensorDatasets with stream=True: each batch read item by item
  streamed-w1   streamed, one DataLoader worker reading each epoch's batches ahead

Each repetition runs every case in turn (the order rotates from one repetition to the next, so
that load from other processes hits every case alike): a fresh model, `vaelab.train` for
--epochs epochs; the time of the last epoch (the history's "seconds": the training pass, without
the test evaluation) is the case's sample. Then the data path alone: one epoch of the train
split's batches read as training reads them (`Split.prefetch`, then `Split.batch` and the labels of
each batch of 128 in the seeded order), without a model. Reported per case: median and quartiles
over the repetitions, and the median of the per-repetition ratios against "load" with their
quartiles. The conversion time (`from_torch`, every item read and checked) is measured once per case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

CASES = ("load", "gathered", "streamed", "streamed-w1")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3), by statistics.quantiles' inclusive method (exact for the median)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, med, q3


def prepare(source: str, cases: list[str]) -> tuple[dict, dict]:
    """-> ({case: the data to train on}, {case: seconds to make it})."""
    from torch.utils.data import TensorDataset

    from vaelab import load_dataset
    from vaelab.data import from_torch

    t0 = time.perf_counter()
    ref = load_dataset(source)
    made, seconds = {"load": ref}, {"load": time.perf_counter() - t0}
    train, test = (TensorDataset(s.x, s.y) for s in (ref.train, ref.test))
    options = {
        "gathered": {},
        "streamed": {"stream": True},
        "streamed-w1": {"stream": True, "num_workers": 1},
    }
    for case in cases:
        if case in options:
            t0 = time.perf_counter()
            made[case] = from_torch(train, test, **options[case])
            seconds[case] = time.perf_counter() - t0
    return made, seconds


def run_case(data, shape: tuple[int, ...], epochs: int, threads: int) -> tuple[float, list]:
    """-> (the last epoch's seconds, the history without wall times)."""
    import torch

    import vaelab
    from vaelab import TrainConfig, VAEConfig

    torch.manual_seed(0)
    model = vaelab.VAE(VAEConfig(input_shape=shape, latent_dim=20, hidden=(400,)))
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=0, device="cpu", threads=threads)
    history = vaelab.train(model, data, cfg, progress=False)
    return history[-1]["seconds"], [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def read_epoch(data, batch_size: int = 128) -> float:
    """Seconds to read one epoch of the train split as `vaelab.train` does, without training."""
    import torch

    split = data.train
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    split.prefetch(perm, batch_size)
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        split.batch(idx)
        if split.y is not None:
            split.y[idx]
    return time.perf_counter() - t0


def summary(values: list[float], ratios: list[float]) -> dict:
    q1, med, q3 = quartiles(values)
    r1, rmed, r3 = quartiles(ratios)
    return {
        "seconds": values,
        "median": med,
        "q1": q1,
        "q3": q3,
        "ratio_vs_load": ratios,
        "ratio_median": rmed,
        "ratio_q1": r1,
        "ratio_q3": r3,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion-mnist", help="a SOURCE for load_dataset")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: vaelab's default)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if cases[0] != "load" or any(c not in CASES for c in cases):
        p.error(f"--cases must start with load and name only {', '.join(CASES)}")

    import torch

    made, load_s = prepare(args.data, cases)
    shape = made["load"].shape
    samples: dict[str, list[float]] = {c: [] for c in cases}
    reads: dict[str, list[float]] = {c: [] for c in cases}
    same_history = {c: True for c in cases}
    reference = None
    for rep in range(args.repeats):
        order = cases[rep % len(cases) :] + cases[: rep % len(cases)]
        times = {}
        for case in order:
            times[case], history = run_case(made[case], shape, args.epochs, args.threads)
            reference = reference or (history if case == "load" else None)
            if reference is not None and case != "load":
                same_history[case] &= history == reference
            print(f"rep {rep + 1}/{args.repeats} {case:12s} {times[case]:.3f} s", file=sys.stderr, flush=True)
        for case in cases:
            samples[case].append(times[case])
        for case in order:
            reads[case].append(read_epoch(made[case]))

    result = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": args.data,
        "shape": list(shape),
        "train_examples": len(made["load"].train),
        "epochs_per_run": args.epochs,
        "repeats": args.repeats,
        "cases": {},
    }
    print(
        "| case | training epoch s | vs load | data-only epoch s | vs load | from_torch / load s "
        "| same history |"
    )
    print("|---|---|---|---|---|---|---|")

    def cell(x: dict, key: str = "", digits: int = 3) -> str:
        v = [x[f"{key}median"], x[f"{key}q1"], x[f"{key}q3"]]
        return f"{v[0]:.{digits}f} ({v[1]:.{digits}f}-{v[2]:.{digits}f})"

    for case in cases:
        train = summary(samples[case], [a / b for a, b in zip(samples[case], samples["load"], strict=True)])
        read = summary(reads[case], [a / b for a, b in zip(reads[case], reads["load"], strict=True)])
        result["cases"][case] = {
            "train_epoch": train,
            "read_epoch": read,
            "prepare_seconds": load_s[case],
            "same_history_as_load": same_history[case],
        }
        print(
            f"| {case} | {cell(train)} | {cell(train, 'ratio_', 2)} | {cell(read, '', 4)} | "
            f"{cell(read, 'ratio_', 1)} | {load_s[case]:.2f} | {'yes' if same_history[case] else 'no'} |"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
