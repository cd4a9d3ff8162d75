"""The standard likelihood benchmark: test NLL of an MLP VAE on dynamically binarized Fashion-MNIST.

Protocol (as in the VampPrior and Exemplar VAE papers): training images are binarized dynamically
(fresh Bernoulli pixels for every batch), test images are binarized once with a fixed seed, and the
test NLL is estimated with K=5000 importance samples per image. Model: 784-300-300 MLP encoder and
decoder (ReLU or gated), z=40, Bernoulli decoder, standard normal prior, Adam, linear KL warm-up.

Everything goes through vaelab's public API, so this is what `vaelab train` + `vaelab evaluate` do:

    vaelab train --data fashion-mnist --binarize dynamic --hidden 300,300 --latent-dim 40 [--gated] \\
        --kl-warmup 50 --lr 5e-4 --batch-size 100 --epochs 635 --out RUN
    vaelab evaluate RUN --data fashion-mnist --importance-samples 5000 --json RUN/evaluate.json

Results: docs/benchmarks/likelihood.md. Examples:

    python benchmarks/likelihood.py --epochs 635 --warmup 50 --gated --out runs/fmnist-nll
    python benchmarks/likelihood.py --eval-only runs/fmnist-nll --importance-samples 1,100,5000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vaelab import TrainConfig, VAEConfig, evaluate_model, evaluate_nll, load, load_dataset, train
from vaelab.data.dataset import Dataset
from vaelab.device import resolve_device
from vaelab.files import atomic_write_json
from vaelab.io import save_model
from vaelab.models.vae import VAE
from vaelab.schema import to_dict

SOURCE = "fashion-mnist"
DATA_OPTIONS = {"binarize": "dynamic"}  # train: fresh pixels per batch; test: binarized once, fixed seed
# Test NLL in nats under the same protocol, Exemplar VAE (Norouzi et al., NeurIPS 2020), as published.
PUBLISHED = {
    "MLP VAE, Gaussian prior (Exemplar VAE paper)": 228.70,
    "ConvHVAE, Gaussian prior (Exemplar VAE paper)": 225.38,
}


def first_test_images(data: Dataset, n: int) -> Dataset:
    """The dataset with only the first ``n`` test images (the test split is binarized in memory)."""
    test = data.test
    return dataclasses.replace(data, test=dataclasses.replace(test, x=test.x[:n], y=test.y[:n]))


def train_model(
    data: Dataset, args: argparse.Namespace, device: torch.device
) -> tuple[VAE, TrainConfig, dict]:
    cfg = VAEConfig(input_shape=data.shape, latent_dim=args.latent_dim, hidden=args.hidden, gated=args.gated)
    tcfg = TrainConfig(
        data=SOURCE,
        data_options=dict(DATA_OPTIONS),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=str(device),
        kl_warmup=args.warmup,
        precision=args.precision,
        threads=args.threads,
    )
    torch.manual_seed(args.seed)
    model = VAE(cfg).to(device)

    def on_epoch(rec: dict) -> None:
        if rec["epoch"] % args.eval_every == 0 or rec["epoch"] == args.epochs:
            print(
                f"epoch {rec['epoch']:>4}/{args.epochs}  train -ELBO {rec['train_neg_elbo']:8.3f}  "
                f"test -ELBO {rec['test_neg_elbo']:8.3f}  active units {rec['active_units']}  "
                f"{rec['seconds']:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    t0 = time.perf_counter()
    history = train(model, data, tcfg, on_epoch=on_epoch, progress=False)
    wall = time.perf_counter() - t0
    return (
        model,
        tcfg,
        {
            "epochs": args.epochs,
            "train_seconds": sum(r["seconds"] for r in history),  # the epochs' training steps
            "train_wall_seconds": wall,  # plus the per-epoch test -ELBO and diagnostics
            "test_neg_elbo_by_epoch": [round(r["test_neg_elbo"], 3) for r in history],
        },
    )


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
    p.add_argument("--epochs", type=int, default=635)
    p.add_argument("--warmup", type=int, default=50, help="KL warm-up epochs (0: none)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=40)
    p.add_argument("--hidden", type=lambda s: tuple(int(v) for v in s.split(",")), default=(300, 300))
    p.add_argument("--gated", action="store_true", help="gated hidden layers")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="training precision")
    p.add_argument(
        "--importance-samples",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=(5000,),
        help="K, or a comma-separated sweep such as 1,10,100,1000,5000 (the last K is the result)",
    )
    p.add_argument("--chunk", type=int, default=None, help="(example, sample) pairs per decoder pass")
    p.add_argument("--test-subset", type=int, default=0, help="evaluate the first N test images (0: all)")
    p.add_argument("--eval-every", type=int, default=10, help="print every N epochs")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True, help="linear/5-NN probes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: vaelab's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="write the run (model, config, results.json) here")
    p.add_argument("--eval-only", type=Path, metavar="RUN_DIR", help="evaluate a saved run, no training")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dataset(SOURCE, **DATA_OPTIONS)
    result: dict = {"command": " ".join(["python", *sys.argv]), "hardware": hardware(device)}
    if args.eval_only:
        model = load(args.eval_only, device=device)
    else:
        model, tcfg, info = train_model(data, args, device)
        result.update(info)
        if args.out:
            save_model(model, args.out, {"train": to_dict(tcfg)})  # `vaelab evaluate` can re-read it
    result["hardware"] = hardware(device)  # after training: vaelab may have set the threads
    if args.test_subset:
        data = first_test_images(data, args.test_subset)
    *sweep_ks, k = args.importance_samples
    sweep = [evaluate_nll(model, data.test, kk, args.chunk, args.eval_seed, progress=True) for kk in sweep_ks]
    report = evaluate_model(model, data, k, args.chunk, args.eval_seed, probes=args.probes, progress=True)
    result.update(report, n_test=report.pop("n", len(data.test)), published=PUBLISHED)
    if sweep:
        keys = ("importance_samples", "nll", "nll_std_err", "neg_elbo_k", "seconds")
        result["sweep"] = [{key: r[key] for key in keys} for r in sweep]
        result["sweep"].append(
            {**{key: report.get(key) for key in keys[:-1]}, "seconds": report["nll_seconds"]}
        )
    if args.out:
        atomic_write_json(args.out / "results.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
