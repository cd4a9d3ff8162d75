"""Where an epoch's time goes: the parts of one training step of the 784-400-20 MLP at batch 128,
each timed alone and scaled to an epoch (469 steps), with wall and process CPU time.

- matmul bound: the five 128x784x400 matrix products of a step (two forward, two weight gradients, one
  input gradient; the first layer needs no input gradient), fp32 and bf16;
- Adam: the default single-tensor update, foreach, and fused (what `make_optimizer` builds);
- batch gather from a uint8 (60000, 1, 28, 28) tensor: advanced indexing against index_select;
- dynamic binarization of a batch: ``torch.bernoulli`` against `distributions.bernoulli` (same draws);
- fused Adam called through ``opt.step()`` and its kernel directly (`direct_adam.py`, benchmark-only);
- the whole step of the engine, fp32: autograd, and the hand-derived MLP step (`fused_mlp.py`).

    python benchmarks/speed_parts.py [--threads N] [--repeats 5]

Each figure is the minimum over repeats (the least disturbed by other processes) and the median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from direct_adam import check_same_update, direct_step  # benchmarks/, the script's own folder

from vaelab import VAE, VAEConfig
from vaelab.device import bernoulli
from vaelab.models.objectives import Elbo, neg_elbo
from vaelab.training.engine import Engine, configure_threads, make_optimizer

STEPS = 469  # ceil(60000 / 128)


def per_epoch(fn: Callable[[], object], repeats: int, n: int = 50) -> tuple[float, float, float]:
    """fn's cost scaled to STEPS calls -> (min wall s, median wall s, median CPU s)."""
    for _ in range(3):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        walls.append((time.perf_counter() - t0) / n * STEPS)
        cpus.append((time.process_time() - c0) / n * STEPS)
    return min(walls), statistics.median(walls), statistics.median(cpus)


def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(input_shape=(1, 28, 28), latent_dim=20, hidden=(400,)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="0 = vaelab's default")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    rows: list[tuple[str, tuple[float, float, float]]] = []

    for dtype in (torch.float32, torch.bfloat16):
        x, w, g = (
            torch.randn(128, 784, dtype=dtype),
            torch.randn(400, 784, dtype=dtype),
            torch.randn(128, 400, dtype=dtype),
        )
        x2 = torch.randn(128, 784, dtype=dtype)

        def products(x=x, w=w, g=g, x2=x2):
            x @ w.t(), g @ w, g.t() @ x, x2.t() @ g, x2 @ w.t()

        rows.append((f"matmul bound, {str(dtype)[6:]}", per_epoch(products, args.repeats, n=20)))

    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        model = vae()
        neg_elbo(model, torch.rand(128, 1, 28, 28)).loss.backward()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
        rows.append((f"Adam step, {name}", per_epoch(opt.step, args.repeats)))

    data = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8)
    perm = torch.randperm(60_000)
    it = iter(range(10**9))

    def idx() -> torch.Tensor:
        i = next(it) % 468
        return perm[i * 128 : (i + 1) * 128]

    rows.append(("gather x[idx] -> float", per_epoch(lambda: data[idx()].float().div_(255), args.repeats)))
    rows.append(
        (
            "gather index_select -> float",
            per_epoch(lambda: data.index_select(0, idx()).float().div_(255), args.repeats),
        )
    )

    grey = data[:128].float().div_(255)
    rows.append(
        ("dynamic binarization, torch.bernoulli", per_epoch(lambda: torch.bernoulli(grey), args.repeats))
    )
    rows.append(
        ("dynamic binarization, vaelab (same draws)", per_epoch(lambda: bernoulli(grey), args.repeats))
    )
    model = vae()
    neg_elbo(model, torch.rand(128, 1, 28, 28)).loss.backward()
    opt = make_optimizer(model, 1e-3)
    opt.step()  # creates the state: direct_step takes the direct path from here on
    check_same_update()
    rows.append(
        ("Adam step, fused, kernel called directly", per_epoch(lambda: direct_step(opt), args.repeats))
    )

    model = vae()
    engine = Engine(model, make_optimizer(model, 1e-3))
    rows.append(
        (
            "engine autograd step, fp32",
            per_epoch(lambda: engine.eager_step(Elbo(), data[idx()].float().div_(255), None), args.repeats),
        )
    )
    assert engine.fused is not None
    rows.append(
        (
            "engine fused MLP step (the CPU default), fp32",
            per_epoch(lambda: engine.step(Elbo(), data[idx()].float().div_(255), None), args.repeats),
        )
    )

    print(f"# {threads} thread(s), torch {torch.__version__}, seconds per epoch of {STEPS} steps\n")
    print("| part | min wall s | median wall s | median CPU s |")
    print("|---|---|---|---|")
    for name, (lo, med, cpu) in rows:
        print(f"| {name} | {lo:.3f} | {med:.3f} | {cpu:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
