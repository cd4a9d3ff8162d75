"""Model family on the 8x8 digits: architectures and objectives compared on the held-out split.

Each configuration is one `vaelab train` command (printed, so it can be rerun alone). For each run
it reports the test -ELBO (seeded, one sample), the test -log p(x) estimated with the IWAE bound at
K=1000 (tighter than the ELBO; an upper bound on the NLL), the KL, the active latent units
(Cov_x E_q[z_d] > 0.01, Burda et al. 2016) and the training wall time.

    python benchmarks/model_family.py --epochs 100 --out runs/family --json docs/benchmarks/model_family.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch

from vaelab.cli import main as vaelab
from vaelab.data.sources import load_dataset
from vaelab.models.objectives import iwae_terms
from vaelab.models.vae import load

COMMON = ["--data", "digits", "--batch-size", "64", "--latent-dim", "8"]
CONFIGS: dict[str, list[str]] = {
    "mlp": [],
    "mlp-gated": ["--gated"],
    "conv": ["--arch", "conv"],
    "conv-gated": ["--arch", "conv", "--gated"],
    "mlp-beta0.5": ["--beta", "0.5"],
    "mlp-beta2": ["--beta", "2"],
    "mlp-beta4": ["--beta", "4"],
    "mlp-warmup": ["--kl-warmup", "25"],
    "mlp-freebits": ["--free-bits", "0.5"],
    "mlp-iwae5": ["--objective", "iwae", "--k", "5"],
    "mlp-cvae": ["--conditional"],
    "mlp-vamp50": ["--prior", "vamp", "--pseudo-inputs", "50"],
    "mlp-vamp150": ["--prior", "vamp", "--pseudo-inputs", "150"],
    "mlp-vamp500": ["--prior", "vamp", "--pseudo-inputs", "500"],
    "mlp-mix20": ["--prior", "mixture", "--mixture-components", "20"],
    "mlp-mix100": ["--prior", "mixture", "--mixture-components", "100"],
    "mlp-z16": ["--latent-dim", "16"],  # the flat control for the hierarchy's 8 + 8 dims
    "mlp-hvae": ["--latent-dim", "16", "--top-latent-dim", "8"],
    "mlp-hvae-vamp150": [
        "--latent-dim",
        "16",
        "--top-latent-dim",
        "8",
        "--prior",
        "vamp",
        "--pseudo-inputs",
        "150",
    ],
    "mlp-cvae-z16": ["--conditional", "--latent-dim", "16"],  # the one-level control for mlp-cvae-hvae
    "mlp-cvae-hvae": ["--conditional", "--latent-dim", "16", "--top-latent-dim", "8"],
    "conv-gated-hvae": ["--arch", "conv", "--gated", "--latent-dim", "16", "--top-latent-dim", "8"],
}
IWAE_K = 1000


@torch.no_grad()
def held_out(run_dir: Path) -> dict[str, float]:
    """-log p(x) by IWAE(K) on the test split (seeded), and the active units, for one run."""
    model = load(run_dir)
    test = load_dataset("digits").test
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for start in range(0, len(test), 25):  # 25 x 1000 decodes at a time
        sl = slice(start, start + 25)
        total += iwae_terms(model, test.batch(sl), test.y[sl], gen, k=IWAE_K).neg_iwae.double().sum().item()
    mu = model.encode(test.batch(slice(None)), test.y).mean  # (N, K)
    return {"test_nll_iwae1000": total / len(test), "active_units": int((mu.var(0) > 0.01).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/family")
    p.add_argument("--only", nargs="*", default=list(CONFIGS), help="configuration names")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    rows = []
    for name in args.only:
        run_dir = Path(args.out) / name
        argv = ["train", *COMMON, "--seed", str(args.seed), "--epochs", str(args.epochs)]
        argv += ["--out", str(run_dir), "--force"]
        argv += CONFIGS[name]
        print("$ vaelab " + shlex.join(argv), flush=True)
        t0 = time.perf_counter()
        assert vaelab([*argv, "--no-progress"]) == 0
        wall = time.perf_counter() - t0
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        row = {
            "name": name,
            "flags": " ".join(CONFIGS[name]),
            "test_neg_elbo": last["test_neg_elbo"],
            "kl": last["kl"],
            **held_out(run_dir),
            "train_seconds": wall,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| run | flags | test -ELBO | test -log p(x), IWAE K=1000 | KL | active units | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | `{r['flags']}` | {r['test_neg_elbo']:.2f} | {r['test_nll_iwae1000']:.2f} | "
            f"{r['kl']:.2f} | {r['active_units']} | {r['train_seconds']:.0f} |"
        )
    if args.json:
        doc = {"epochs": args.epochs, "seed": args.seed, "rows": rows}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
