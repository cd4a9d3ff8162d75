"""How much would a better prior buy a trained VAE? The "prior hole" measured after training.

    python benchmarks/prior_gap.py RUN_DIR [RUN_DIR ...] [--components 20,100,400] [--n-test 2000]
        [--k 10] [--data-dir /usr/share/datasets/fashion-mnist] [--json OUT.json]

For each run (a one-level model, or the top level z2 of a two-level hierarchy), one reparameterized
draw of z from q(z|x) for every training image (its pixels binarized once, seeded) is a sample of the
aggregate posterior q(z). A diagonal Gaussian mixture with K components is fitted to those draws and put
in place of the N(0, I) prior, nothing else changing: `vaelab.prior_fit.fit_mixture_prior`, what
`vaelab fit-prior` runs. The best prior for a fixed encoder and decoder is q(z) itself,
so what a mixture gains on the test split bounds from below what a more flexible prior (the VampPrior,
a learned mixture) could add to this model without retraining it.

Scored by the importance-sampled -log p(x) with K_IS samples on the first N test images (fixed
binarization, seed 0), each prior against N(0, I) on the same images and the same noise: the
paired difference and its standard error are printed. Reported too: the mean log-density of the
draws under each prior (training fit; higher is better).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from vaelab.data.sources import load_dataset
from vaelab.evaluation.likelihood import log_px_estimates
from vaelab.evaluation.prior_fit import aggregate_draws, fit_mixture_prior
from vaelab.models.vae import load


def measure(run: str, args: argparse.Namespace) -> dict:
    model = load(run)
    if model.config.prior != "normal" or model.config.n_classes:
        raise SystemExit(f"{run}: needs an unconditional model with the normal prior")
    data = load_dataset("fashion-mnist", binarize="dynamic", data_dir=args.data_dir)
    train, test = data.fixed_train(), data.test.head(args.n_test)  # pixels drawn once, seeded
    base, _ = log_px_estimates(model, test, args.k, seed=0, progress=False)
    rows = []
    for m in args.components:
        fitted, stats = fit_mixture_prior(model, train, components=m, seed=0)
        est, _ = log_px_estimates(fitted, test, args.k, seed=0, progress=False)
        diff = (est - base).numpy()  # paired: the same images and noise
        if not rows:
            rows.append(
                {
                    "prior": "N(0, I)",
                    "components": 0,
                    "train_log_density": stats["log_density_old_prior"],
                    "test_nll": float(-base.mean()),
                    "gain": 0.0,
                    "gain_std_err": 0.0,
                    "fit_seconds": 0.0,
                }
            )
        rows.append(
            {
                "prior": "diagonal mixture",
                "components": m,
                "train_log_density": stats["log_density_mixture"],
                "test_nll": float(-est.mean()),
                "gain": float(diff.mean()),
                "gain_std_err": float(diff.std(ddof=1) / math.sqrt(len(diff))),
                "fit_seconds": stats["seconds"],
                "converged": stats["converged"],
            }
        )
        gain, err = rows[-1]["gain"], rows[-1]["gain_std_err"]
        print(f"{run}: {m} components: gain {gain:+.3f} ± {err:.3f} nats", flush=True)
    z = aggregate_draws(model, train, seed=0)
    return {
        "run": run,
        "latent": "z2" if model.config.top_latent_dim else "z",
        "variance_per_dim": [round(float(v), 4) for v in z.var(0)],
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--components", default="20,100,400")
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--k", type=int, default=10, help="importance samples per test image")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.components = [int(c) for c in args.components.split(",")]
    torch.set_num_threads(args.threads)
    results = [measure(run, args) for run in args.runs]
    print("| run | latent | prior | training-draw log-density | test -log p(x) | gain (paired) |")
    print("|---|---|---|---:|---:|---:|")
    for r in results:
        for row in r["rows"]:
            name = row["prior"] + (f", {row['components']}" if row["components"] else "")
            print(
                f"| {r['run']} | {r['latent']} | {name} | {row['train_log_density']:.3f} | "
                f"{row['test_nll']:.3f} | {row['gain']:+.3f} ± {row['gain_std_err']:.3f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n_test": args.n_test, "k": args.k, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
