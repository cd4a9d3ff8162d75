"""What a checkpoint costs next to an epoch, for the `make demo` model on 8x8 digits.

Times (median of --reps) one `run_epoch`, and one checkpoint as `vaelab.train` writes it: capture
the state in memory, write ``checkpoints/epoch-N/`` (three fsynced files, an atomic rename, pruning)
and replace ``model.safetensors``. The capture alone is also the NaN guard's per-epoch cost.

Usage: python benchmarks/checkpoint_cost.py [--reps 20] [--hidden 400] [--latent-dim 8]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vaelab import VAE, VAEConfig, load_dataset
from vaelab.io import save_weights
from vaelab.training.checkpoint import TrainState, save
from vaelab.training.distributed import Context
from vaelab.training.engine import make_optimizer, run_epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=data.shape, latent_dim=args.latent_dim, hidden=(args.hidden,)))
    opt = make_optimizer(model, 1e-3)  # what vaelab.train uses
    order = torch.Generator().manual_seed(0)
    run_epoch(model, opt, data.train, args.batch_size, progress=False)  # warm-up, Adam state exists
    history = [{"epoch": i, "train_neg_elbo": 30.0 + i / 7} for i in range(100)]
    run_dir = Path(tempfile.mkdtemp(prefix="vaelab-ckpt-cost-"))
    epoch_s, capture_s, checkpoint_s = [], [], []
    try:
        for i in range(args.reps):
            t0 = time.perf_counter()
            run_epoch(model, opt, data.train, args.batch_size, progress=False)
            t1 = time.perf_counter()
            state = TrainState.capture(model, opt, order)
            t2 = time.perf_counter()
            save(run_dir, i, state, history, Context())
            save_weights(model, run_dir)
            t3 = time.perf_counter()
            epoch_s.append(t1 - t0)
            capture_s.append(t2 - t1)
            checkpoint_s.append(t3 - t1)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    n_params = sum(p.numel() for p in model.parameters())
    e, c, k = (statistics.median(v) for v in (epoch_s, capture_s, checkpoint_s))
    print(f"{n_params:,} parameters, {len(data.train)} examples, batch {args.batch_size}, {args.reps} reps")
    print(f"epoch       median {e * 1e3:8.1f} ms")
    print(f"capture     median {c * 1e3:8.1f} ms  ({c / e:.1%} of an epoch)")
    print(f"checkpoint  median {k * 1e3:8.1f} ms  ({k / e:.1%} of an epoch, capture included)")


if __name__ == "__main__":
    main()
