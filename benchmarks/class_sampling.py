"""How often a probe classifier recognises the class asked for in `vaelab sample --label C`.

The probe is a logistic regression trained on the real training digits (its accuracy on the real test
digits is printed as the ceiling). For each run it samples N images of every class with the method
`vaelab sample --label` uses (CVAE decoder, or the latent mixture for unconditional runs).

    python benchmarks/class_sampling.py runs/family/mlp-cvae runs/family/mlp -n 100
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

from vaelab.data.sources import load_dataset
from vaelab.evaluation.conditional import sample_class
from vaelab.models.vae import load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories trained on digits")
    p.add_argument("-n", type=int, default=100, help="samples per class")
    args = p.parse_args()
    data = load_dataset("digits")
    probe = LogisticRegression(max_iter=2000).fit(data.train.x.flatten(1).numpy(), data.train.y.numpy())
    real = probe.score(data.test.x.flatten(1).numpy(), data.test.y.numpy())
    print(f"probe accuracy on real test digits: {real:.3f} (chance 0.100)")
    for run in args.runs:
        model = load(run)
        accs = []
        for c in range(10):
            x, _ = sample_class(model, c, args.n, seed=c, train=data.train)
            accs.append(float((probe.predict(x.flatten(1).numpy()) == c).mean()))
        kind = "CVAE decoder" if model.config.n_classes else "latent mixture"
        print(f"{run}: {kind}: mean {np.mean(accs):.3f}, worst class {np.argmin(accs)} at {min(accs):.2f}")
        print("  per class " + " ".join(f"{a:.2f}" for a in accs))


if __name__ == "__main__":
    main()
