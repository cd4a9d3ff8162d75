"""The standard likelihood benchmark: test NLL of an MLP VAE on dynamically binarized Fashion-MNIST.

Protocol (as in the VampPrior and Exemplar VAE papers): training images are binarized dynamically
(fresh Bernoulli pixels for every batch), test images are binarized once with a fixed seed, and the
test NLL is estimated with K=5000 importance samples per image. Model: 784-300-300 MLP encoder and
decoder, z=40, Bernoulli decoder, standard normal prior, Adam, linear KL warm-up.

Data: the Debian package (``apt-get install dataset-fashion-mnist``), read straight from its IDX
files. Results go to docs/benchmarks/likelihood.md; this script prints one JSON document (and
writes it, with the model, to --out).

    python benchmarks/likelihood.py --epochs 635 --warmup 50 --lr 5e-4 --batch-size 100 --out runs/fmnist-nll
    python benchmarks/likelihood.py --eval-only runs/fmnist-nll          # re-evaluate a saved model
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab import VAE, VAEConfig, collapse_diagnostics, evaluate_elbo, evaluate_nll, load
from vaelab.data import Dataset, Split, to_float
from vaelab.device import resolve_device
from vaelab.engine import run_epoch
from vaelab.io import atomic_write_json
from vaelab.objectives import neg_elbo
from vaelab.probes import feature_quality

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
PUBLISHED = {  # test NLL in nats, same protocol: Exemplar VAE (Norouzi et al., NeurIPS 2020), Table 1
    "MLP VAE, Gaussian prior (Exemplar VAE paper)": 228.70,
    "ConvHVAE, Gaussian prior (Exemplar VAE paper)": 225.38,
}


def read_idx(path: Path) -> np.ndarray:
    """A (gzipped) IDX file -> uint8 array; images (N, 28, 28), labels (N,)."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class DynamicBinarized(Split):
    """Training split of grey uint8 images: every batch draws fresh pixels x ~ Bernoulli(grey / 255)."""

    def batch(self, idx: Tensor | slice) -> Tensor:  # type: ignore[override]
        return torch.bernoulli(to_float(self.x[idx]))


def fashion_mnist(data_dir: Path, test_seed: int) -> tuple[Split, Split]:
    """(train: grey, binarized per batch; test: binarized once with ``test_seed``), (N, 1, 28, 28)."""
    files = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    paths = [data_dir / f"{name}.gz" for name in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `apt-get install dataset-fashion-mnist`")
    xtr, ytr, xte, yte = (torch.from_numpy(read_idx(p).copy()) for p in paths)
    gen = torch.Generator().manual_seed(test_seed)
    test_bits = torch.bernoulli(to_float(xte), generator=gen).to(torch.uint8) * 255  # fixed once
    return (
        DynamicBinarized(xtr.unsqueeze(1), ytr.long()),
        Split(test_bits.unsqueeze(1), yte.long()),
    )


def build_model(args: argparse.Namespace) -> VAE:
    fields = {f.name for f in dataclasses.fields(VAEConfig)}
    extra = {}
    if args.gated:
        if "gated" not in fields:
            sys.exit("--gated: this vaelab has no gated layers yet")
        extra["gated"] = True
    cfg = VAEConfig(input_shape=(1, 28, 28), latent_dim=args.latent_dim, hidden=args.hidden, **extra)
    return VAE(cfg)


def train_model(model: VAE, train: Split, test: Split, args: argparse.Namespace) -> dict:
    """Adam on the -ELBO with beta = min(1, epoch / warmup); returns timing and the last test -ELBO."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    seconds, last = 0.0, {}
    for epoch in range(1, args.epochs + 1):
        beta = min(1.0, epoch / args.warmup) if args.warmup > 0 else 1.0

        def loss_fn(m: VAE, x: Tensor, y: Tensor | None, beta: float = beta):
            return neg_elbo(m, x, beta=beta)

        t0 = time.perf_counter()
        sums = run_epoch(model, opt, train, args.batch_size, loss_fn=loss_fn, progress=False)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        train_bound = float(sums[0]) / len(train)
        if not math.isfinite(train_bound):
            sys.exit(f"training diverged at epoch {epoch}")
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            last = evaluate_elbo(model, test, seed=0)
            print(
                f"epoch {epoch:>4}/{args.epochs} beta {beta:.3f}  train -ELBO {train_bound:8.3f}  "
                f"test -ELBO {last['neg_elbo']:8.3f}  {seconds:7.1f}s",
                file=sys.stderr,
                flush=True,
            )
    return {"train_seconds": seconds, "test_neg_elbo": last.get("neg_elbo")}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--epochs", type=int, default=635)
    p.add_argument("--warmup", type=int, default=50, help="KL warm-up epochs (0: none)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=40)
    p.add_argument("--hidden", type=lambda s: tuple(int(v) for v in s.split(",")), default=(300, 300))
    p.add_argument("--gated", action="store_true", help="gated hidden layers (when vaelab has them)")
    p.add_argument(
        "--importance-samples",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=(5000,),
        help="K, or a comma-separated sweep such as 1,10,100,1000,5000 (the last K is the result)",
    )
    p.add_argument("--chunk", type=int, default=None, help="(example, sample) pairs per decoder pass")
    p.add_argument("--train-subset", type=int, default=0, help="train on the first N images (0: all)")
    p.add_argument("--test-subset", type=int, default=0, help="evaluate the first N test images (0: all)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--test-seed", type=int, default=0, help="seed of the one-off test binarization")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True, help="linear/5-NN probes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="write model.safetensors, config.json and results.json here")
    p.add_argument("--eval-only", type=Path, metavar="RUN_DIR", help="evaluate a saved model, no training")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train, test = fashion_mnist(args.data_dir, args.test_seed)
    if args.train_subset:
        train = DynamicBinarized(train.x[: args.train_subset], train.y[: args.train_subset])
    if args.test_subset:
        test = Split(test.x[: args.test_subset], test.y[: args.test_subset])
    train, test = DynamicBinarized(train.x.to(device), train.y.to(device)), test.to(device)

    result: dict = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "hardware": hardware(device),
    }
    if args.eval_only:
        model = load(args.eval_only, device=device)
    else:
        torch.manual_seed(args.seed)
        model = build_model(args).to(device)
        result.update(epochs=args.epochs, n_train=len(train), **train_model(model, train, test, args))
        if args.out:
            model.save(args.out, {"benchmark": {k: str(v) for k, v in vars(args).items()}})
    model.eval()
    sweep = []
    for k in args.importance_samples:
        nll = evaluate_nll(model, test, k, args.chunk, args.eval_seed, progress=True)
        sweep.append(
            {key: nll[key] for key in ("importance_samples", "nll", "nll_std_err", "neg_elbo_k", "seconds")}
        )
    if len(sweep) > 1:
        result["sweep"] = sweep
    result.update(
        n_test=len(test),
        nll=nll["nll"],
        nll_std_err=nll["nll_std_err"],
        neg_elbo_k=nll["neg_elbo_k"],
        importance_samples=nll["importance_samples"],
        eval_seconds=nll["seconds"],
        neg_elbo=evaluate_elbo(model, test, seed=args.eval_seed)["neg_elbo"],
        active_units=collapse_diagnostics(model, test)["active_units"],
        latent_dim=model.config.latent_dim,
        published=PUBLISHED,
    )
    if args.probes:  # latent means of one random binarization of the training images
        result.update(feature_quality(model, Dataset("fashion-mnist", train, test)))
    if args.out:
        atomic_write_json(args.out / "results.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
