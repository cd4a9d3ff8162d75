"""The training loop: plain Adam on the -ELBO, data held on the device, one sync per epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import Dataset
from .errors import VaelabError
from .evaluate import evaluate_elbo
from .model import VAE
from .objectives import neg_elbo

EVAL_SEED = 12345  # fixed eps for the per-epoch test -ELBO, so epochs compare like for like

EpochCallback = Callable[[dict[str, Any]], None]


def train(
    model: VAE,
    data: Dataset,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``; report ``data.test`` after each epoch.

    Returns the history: one dict per epoch with ``epoch``, ``train_neg_elbo``, ``train_recon``,
    ``train_kl``, ``test_neg_elbo``, ``recon``, ``kl`` (test split, nats per example) and
    ``seconds`` (the epoch's training wall time). ``progress=None`` shows a bar on a terminal.
    """
    device = model.device
    data = data.to(device)
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    n, bs = len(data.train), config.batch_size
    steps = math.ceil(n / bs)
    history: list[dict[str, Any]] = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        sums = torch.zeros(3, device=device)  # neg_elbo, recon, kl summed over examples
        perm = torch.randperm(n, device=device)
        bar = tqdm(
            range(steps), desc=f"epoch {epoch}/{config.epochs}", leave=False,
            disable=False if progress else None if progress is None else True,
        )
        refresh = max(1, steps // 20)  # reading the loss syncs the device: do it rarely
        for i in bar:
            x = data.train.batch(perm[i * bs : (i + 1) * bs])
            terms = neg_elbo(model, x)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            opt.step()
            with torch.no_grad():
                sums += torch.stack([terms.neg_elbo.sum(), terms.recon.sum(), terms.kl.sum()])
            if i % refresh == 0 and not bar.disable:
                bar.set_postfix(loss=f"{terms.loss.item():.2f}")
        bar.close()
        train_stats = (sums / n).tolist()
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_stats[0]):
            raise VaelabError(
                f"training diverged at epoch {epoch} (non-finite loss); try a smaller --lr"
            )
        test = evaluate_elbo(model, data.test, seed=EVAL_SEED)
        record = {
            "epoch": epoch,
            "train_neg_elbo": train_stats[0],
            "train_recon": train_stats[1],
            "train_kl": train_stats[2],
            "test_neg_elbo": test["neg_elbo"],
            "recon": test["recon"],
            "kl": test["kl"],
            "seconds": seconds,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    return history
