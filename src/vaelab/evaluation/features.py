"""Latent features: z's posterior mean and log-variance for every example, as arrays or CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from vaelab.data.dataset import Dataset, Split
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_bytes
from vaelab.models.vae import VAE


@torch.no_grad()
def encode_split(model: VAE, split: Split, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """-> (mu, logvar), each (N, latent_dim) float32."""
    model.eval()
    mus, logvars = [], []
    for start in range(0, len(split), batch_size):
        sl = slice(start, start + batch_size)
        y = None if split.y is None else split.y[sl].to(model.device)  # a conditional model needs them
        q = model.encode(split.batch(sl).to(model.device), y)
        mus.append(q.mean.float().cpu())
        logvars.append(q.logvar.float().cpu())
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


def encode_dataset(model: VAE, data: Dataset, which: str = "all") -> dict[str, np.ndarray]:
    """Encode ``which`` in {'all', 'train', 'test'} -> dict of mu, logvar, split (and labels)."""
    splits = {"train": [("train", data.train)], "test": [(data.test_split, data.test)]}
    chosen = splits["train"] + splits["test"] if which == "all" else splits.get(which)
    if chosen is None:
        raise VaelabError(f"--split must be all, train or test; got {which!r}")
    out: dict[str, list] = {"mu": [], "logvar": [], "split": [], "labels": []}
    for name, split in chosen:
        mu, logvar = encode_split(model, split)
        out["mu"].append(mu)
        out["logvar"].append(logvar)
        out["split"].append(np.full(len(mu), name))
        if split.y is not None:
            out["labels"].append(split.y.cpu().numpy())
    result = {k: np.concatenate(v) for k, v in out.items() if v}
    if len(out["labels"]) != len(chosen):
        result.pop("labels", None)
    return result


def write_features(feats: dict[str, np.ndarray], path: str | Path) -> None:
    """Write to .npz (arrays) or .csv (columns mu_i, logvar_i, label, split)."""
    path = Path(path)
    buf = io.BytesIO()
    if path.suffix.lower() == ".npz":
        np.savez(buf, **feats)
        atomic_write_bytes(path, buf.getvalue())
        return
    mu, logvar = feats["mu"], feats["logvar"]
    k = mu.shape[1]
    header = [f"mu_{i}" for i in range(k)] + [f"logvar_{i}" for i in range(k)]
    cols = [mu, logvar]
    if "labels" in feats:
        header.append("label")
        cols.append(feats["labels"][:, None])
    lines = [",".join([*header, "split"])]
    table = np.concatenate([c.astype(np.float64) for c in cols], axis=1)
    for row, split in zip(table, feats["split"], strict=True):
        vals = [f"{v:.7g}" for v in row[: 2 * k]] + [str(int(v)) for v in row[2 * k :]]
        lines.append(",".join([*vals, str(split)]))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
