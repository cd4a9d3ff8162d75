"""Does early stopping on a holdout pay? An MLP VAE that overfits: 3,000 statically binarized
Fashion-MNIST training images, scored on 2,000 test images by the importance-sampled NLL.

    python benchmarks/early_stop.py [--data-dir /usr/share/datasets/fashion-mnist] [--seeds 0 1 2]
        [--epochs 200] [--k 1000] [--out docs/benchmarks/early_stop_fmnist3k_cpu.json]

Per seed, three runs of ``vaelab train`` (hidden 512,512, latent 32, batch 100, lr 1e-3):

- ``all``: all 3,000 images, ``--epochs`` epochs, the last epoch kept (what training without a
  holdout gives);
- ``early``: ``--holdout 0.2 --early-stop 10``, the best holdout epoch kept;
- ``retrain``: all 3,000 images again, for as many epochs as ``early`` kept;
- ``drop``: ``--holdout 0.2 --lr-drop 3 --early-stop 10``: the lr x0.3 after 3 epochs without a better
  holdout score (again after each drop), then the same stop.

The test split plays no part in any choice. Also reported: the epoch with the best test -ELBO in
``all``'s history, an oracle that no honest procedure can use, to show how close the holdout gets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vaelab.cli import main as vaelab
from vaelab.data.sources import load_dataset
from vaelab.evaluation.likelihood import evaluate_nll
from vaelab.models.vae import load

N_TRAIN, N_TEST = 3000, 2000
MODEL = ["--hidden", "512,512", "--latent-dim", "32", "--batch-size", "100", "--lr", "1e-3"]


def make_source(data_dir: str, path: Path) -> None:
    """The first N_TRAIN training and N_TEST test images (uint8 grey) as an .npz source."""
    data = load_dataset("fashion-mnist", data_dir=data_dir, binarize="none")
    tr, te = data.train, data.test
    np.savez(
        path,
        x_train=tr.x[:N_TRAIN].numpy(),
        y_train=tr.y[:N_TRAIN].numpy(),
        x_test=te.x[:N_TEST].numpy(),
        y_test=te.y[:N_TEST].numpy(),
    )


def train(source: Path, out: Path, seed: int, epochs: int, *extra: str) -> tuple[list[dict], float]:
    argv = ["train", "--data", str(source), "--binarize", "static", "--out", str(out), *MODEL]
    t0 = time.perf_counter()
    code = vaelab([*argv, "--epochs", str(epochs), "--seed", str(seed), "--no-progress", *extra])
    assert code == 0, f"vaelab train exited with {code}"
    seconds = time.perf_counter() - t0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], seconds


def test_nll(run: Path, source: Path, k: int) -> dict:
    model = load(run)
    data = load_dataset(str(source), binarize="static")
    r = evaluate_nll(model, data.test, importance_samples=k, seed=0, progress=False)
    return {"nll": r["nll"], "nll_std_err": r["nll_std_err"], "neg_elbo_k": r["neg_elbo_k"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--out", default="docs/benchmarks/early_stop_fmnist3k_cpu.json")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "fmnist3k.npz"
        make_source(args.data_dir, source)
        for seed in args.seeds:
            row: dict = {"seed": seed}
            hist, row["all_seconds"] = train(source, work / f"all{seed}", seed, args.epochs)
            oracle = min(hist, key=lambda r: r["test_neg_elbo"])
            row["all"] = {"epochs": len(hist), "test_neg_elbo": hist[-1]["test_neg_elbo"]}
            row["all"].update(test_nll(work / f"all{seed}", source, args.k))
            row["oracle_epoch"], row["oracle_test_neg_elbo"] = oracle["epoch"], oracle["test_neg_elbo"]
            early = ["--holdout", "0.2", "--early-stop", "10"]
            hist, row["early_seconds"] = train(source, work / f"early{seed}", seed, args.epochs, *early)
            kept = hist[-1]["best_epoch"]
            row["early"] = {
                "stopped_at": hist[-1]["epoch"],
                "kept_epoch": kept,
                "test_neg_elbo": hist[kept - 1]["test_neg_elbo"],
            }
            row["early"].update(test_nll(work / f"early{seed}", source, args.k))
            hist, row["retrain_seconds"] = train(source, work / f"retrain{seed}", seed, kept)
            row["retrain"] = {"epochs": kept, "test_neg_elbo": hist[-1]["test_neg_elbo"]}
            row["retrain"].update(test_nll(work / f"retrain{seed}", source, args.k))
            drop = ["--holdout", "0.2", "--lr-drop", "3", "--early-stop", "10"]
            hist, row["drop_seconds"] = train(source, work / f"drop{seed}", seed, args.epochs, *drop)
            kept = hist[-1]["best_epoch"]
            row["drop"] = {
                "stopped_at": hist[-1]["epoch"],
                "kept_epoch": kept,
                "lrs": sorted({r["lr"] for r in hist}, reverse=True),
                "test_neg_elbo": hist[kept - 1]["test_neg_elbo"],
            }
            row["drop"].update(test_nll(work / f"drop{seed}", source, args.k))
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        name: statistics.mean(r[name]["nll"] for r in results) for name in ("all", "early", "retrain", "drop")
    }
    doc = {
        "what": __doc__.splitlines()[0],
        "command": "python benchmarks/early_stop.py "
        + " ".join(["--seeds", *map(str, args.seeds), "--epochs", str(args.epochs), "--k", str(args.k)]),
        "data": f"fashion-mnist: first {N_TRAIN} train / {N_TEST} test images, static binarization",
        "model": " ".join(MODEL),
        "mean_test_nll": summary,
        "runs": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
