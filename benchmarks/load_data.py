"""Load time and peak memory of the data path: Fashion-MNIST from the Debian package, the same
images as an .npy held in memory or streamed from disk, and a big float32 .npy.

    .venv/bin/python benchmarks/load_data.py [--repeats 3] [--big-mib 1024] [--json out.json]

Every case runs in a fresh process. Reported per case (best of --repeats for time):
  load_s     wall time of `load_dataset` (reading, checking, splitting; not the imports)
  peak_mib   peak resident memory during the load minus the resident memory before it
             (Linux VmHWM after resetting it; includes touched pages of memory-mapped files,
             which the kernel can drop at any time)
  anon_mib   peak anonymous memory (RssAnon sampled every 2 ms) minus before: what the process
             really holds
  epoch_s    one pass over the train split in random batches of 128, as the training loop reads it
Needs `apt-get install dataset-fashion-mnist` for the Fashion-MNIST cases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(case: str, path: str) -> dict:
    """Run one case in this (fresh) process and return its measurements."""
    import torch

    # Import every module of the data path first, so that only the load itself is measured.
    from vaelab.data.sources import load_dataset

    torch.set_num_threads(1)
    before_rss, before_anon = _status("VmRSS"), _status("RssAnon")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    peak_anon = [before_anon]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], _status("RssAnon"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    data = load_dataset("fashion-mnist" if case == "debian" else path)
    load_s = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak_anon[0] = max(peak_anon[0], _status("RssAnon"))
    peak_rss = _status("VmHWM")
    split = data.train
    perm = torch.randperm(len(split))
    t0 = time.perf_counter()
    for i in range(0, len(split), 128):
        split.batch(perm[i : i + 128])
    epoch_s = time.perf_counter() - t0
    return {
        "case": case,
        "n_train": len(data.train),
        "n_test": len(data.test),
        "shape": list(data.shape),
        "dtype": str(split.x.dtype),
        "streamed": bool(data.meta["streamed"]),
        "load_s": load_s,
        "peak_mib": (peak_rss - before_rss) / 2**20,
        "anon_mib": (peak_anon[0] - before_anon) / 2**20,
        "epoch_s": epoch_s,
    }


def run_case(case: str, path: str, env: dict[str, str], repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, path],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["load_s"])
    best["peak_mib"] = max(r["peak_mib"] for r in runs)
    best["anon_mib"] = max(r["anon_mib"] for r in runs)
    best["epoch_s"] = min(r["epoch_s"] for r in runs)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the synthetic float32 .npy (0: skip)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0

    import numpy as np

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = {"XDG_CACHE_HOME": str(Path(tmp) / "cache"), "VAELAB_DATA": ""}  # force the system copy
        if (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
            results.append(run_case("debian", "", cache, args.repeats))
            from vaelab.data.sources import load_dataset

            os.environ.update(cache)
            x = load_dataset("fashion-mnist").train.x.numpy()  # (60000, 1, 28, 28) uint8
            np.save(Path(tmp) / "fmnist.npy", x)
            npy = str(Path(tmp) / "fmnist.npy")
            results.append(run_case("npy-memory", npy, {}, args.repeats))
            results.append(run_case("npy-streamed", npy, {"VAELAB_MEMORY_LIMIT": "1M"}, args.repeats))
        else:
            print(f"skipping Fashion-MNIST: {DEBIAN} not found (apt-get install dataset-fashion-mnist)")
        if args.big_mib:
            rows = args.big_mib * 2**20 // (784 * 4)
            big = Path(tmp) / "big.npy"
            arr = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(rows, 784))
            for i in range(0, rows, 65536):  # write in chunks: never hold it all
                arr[i : i + 65536] = np.random.default_rng(i).random((min(65536, rows - i), 784))
            arr.flush()
            del arr
            limit = {"VAELAB_MEMORY_LIMIT": str(args.big_mib // 2) + "M"}
            results.append(run_case(f"big-{args.big_mib}MiB-memory", str(big), {}, 1))
            results.append(run_case(f"big-{args.big_mib}MiB-streamed", str(big), limit, 1))

    print("| case | examples | storage | streamed | load s | peak RSS MiB | peak anon MiB | epoch s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['case']} | {r['n_train']:,} + {r['n_test']:,} | {r['dtype']} {tuple(r['shape'])} | "
            f"{'yes' if r['streamed'] else 'no'} | {r['load_s']:.2f} | {r['peak_mib']:.0f} | "
            f"{r['anon_mib']:.0f} | {r['epoch_s']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
