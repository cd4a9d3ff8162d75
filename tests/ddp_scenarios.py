"""Run by test_distributed.py as ``torchrun --standalone --nproc_per_node 2 tests/ddp_scenarios.py WORK``.

One launch (gloo on CPU) runs several scenarios, to pay the start-up cost once; it joins the
process group itself, so the CLI calls reuse it (a process group cannot be re-created under torchrun):

1. exactness: one epoch with a deterministic loss through DDP + sharding vs one process stepping
   through the same global batches (result in WORK/exactness.json);
2. WORK/C: 2 epochs, then ``--resume`` to 3 (same world size: must equal WORK/A, made by
   ``torchrun -m vaelab train`` with 3 epochs, bitwise);
3. WORK/B (made by the test with one process, 2 epochs): ``--resume`` to 3 on two processes;
4. WORK/E: early stopping on a holdout (patience 2): every rank must stop at the same epoch;
5. WORK/U: `vaelab.train` from Python on a model with the user's own networks (`custom_nets`).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from custom_nets import own_vae

from vaelab import VAE, TrainConfig, VAEConfig, load_dataset, train
from vaelab.cli import main
from vaelab.models.objectives import ElboTerms
from vaelab.training.distributed import all_reduce_sum, context, data_parallel, shard_order
from vaelab.training.engine import run_epoch

CUSTOM = TrainConfig(epochs=3, batch_size=64, seed=0, device="cpu")  # for own_vae, here and in one process
TINY = ["--data", "digits", "--batch-size", "64", "--latent-dim", "2", "--hidden", "16", "--device", "cpu"]


def mean_code_loss(model: VAE, x: torch.Tensor, y: torch.Tensor | None) -> ElboTerms:
    """The -ELBO with z = posterior mean: no sampling, so both sides do the same arithmetic."""
    q = model.encode(x)
    recon = -model.decode(q.mean).log_prob(x)
    kl = q.kl()
    return ElboTerms((recon + kl).mean(), recon, kl)


def exactness(work: Path) -> None:
    ctx = context()
    split = load_dataset("digits").train
    n = len(split) - 1  # 1499 = 23 * 64 + 27: the odd last batch gets padded by one example
    batch = 64
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)))
    ref = copy.deepcopy(model)

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mine = shard_order(perm, batch, ctx)
    sums = run_epoch(
        model,
        opt,
        split,
        batch // ctx.world_size,
        loss_fn=data_parallel(model, ctx)(mean_code_loss),
        progress=False,
        perm=mine,
    )
    sums = all_reduce_sum(sums, ctx)

    # One process on the same global batches, the padded last one included.
    padded = torch.cat([perm, perm[: (-(n % batch)) % ctx.world_size]])
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref_sums = run_epoch(ref, ref_opt, split, batch, loss_fn=mean_code_loss, progress=False, perm=padded)
    if ctx.is_main:
        diff = max(
            (a - b).abs().max().item() for a, b in zip(model.parameters(), ref.parameters(), strict=True)
        )
        result = {
            "max_param_diff": diff,
            "max_param": max(p.abs().max().item() for p in ref.parameters()),
            "sums": sums.tolist(),
            "ref_sums": ref_sums.tolist(),
            "local_rows": len(mine),
        }
        (work / "exactness.json").write_text(json.dumps(result))


def cli(*argv: str) -> None:
    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"vaelab {' '.join(argv)} exited with {code}")


def main_() -> None:
    work = Path(sys.argv[1])
    dist.init_process_group("gloo")
    exactness(work)
    cli("train", *TINY, "--out", str(work / "C"), "--epochs", "2", "--no-progress")
    cli("train", "--resume", str(work / "C"), "--epochs", "3", "--no-progress")
    cli("train", "--resume", str(work / "B"), "--epochs", "3", "--no-progress")
    early = [
        "--out",
        str(work / "E"),
        "--epochs",
        "100",
        "--lr",
        "1e-2",
        "--hidden",
        "128",
        "--latent-dim",
        "8",
    ]
    cli("train", *TINY, *early, "--holdout", "0.2", "--early-stop", "2", "--no-progress")
    train(own_vae(), load_dataset("digits"), CUSTOM, progress=False, run_dir=work / "U")
    dist.destroy_process_group()


if __name__ == "__main__":
    main_()
