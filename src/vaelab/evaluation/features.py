"""Latent features: z's posterior mean and log-variance for every example, as arrays or CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from vaelab.data.dataset import Dataset, Split
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_bytes
from vaelab.models.vae import VAE, eval_mode


@torch.no_grad()
def encode_split(model: VAE, split: Split, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """-> (mu, logvar), each (N, latent_dim) float32."""
    mus, logvars = [], []
    with eval_mode(model):
        for start in range(0, len(split), batch_size):
            sl = slice(start, start + batch_size)
            y = None if split.y is None else split.y[sl].to(model.device)  # a conditional model needs them
            q = model.encode(split.batch(sl).to(model.device), y)
            mus.append(q.mean.float().cpu())
            logvars.append(q.logvar.float().cpu())
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


def encode_dataset(model: VAE, data: Dataset, which: str = "all") -> dict[str, np.ndarray]:
    """Encode ``which`` in {'all', 'train', 'test'} -> dict of mu, logvar (N, K), split (N,) ("train"
    or "test", the held-out split), index (N,): each row's position in its source file (the train or
    test file of a source that has both, else the one file), and labels (N,) when every row has one.
    For a one-file source, 'all' comes back in the file's order."""
    chosen = {"all": ["train", "test"], "train": ["train"], "test": ["test"]}.get(which)
    if chosen is None:
        raise VaelabError("{a.which} must be all, train or test; got {v!r}", v=which)
    source_rows = data.meta.get("source_rows")
    out: dict[str, list] = {"mu": [], "logvar": [], "split": [], "index": [], "labels": []}
    for name in chosen:
        split = data.train if name == "train" else data.test
        mu, logvar = encode_split(model, split)
        out["mu"].append(mu)
        out["logvar"].append(logvar)
        out["split"].append(np.full(len(mu), name))
        rows = (source_rows or {}).get("train" if name == "train" else "val")
        if rows is None or len(rows) != len(mu):  # e.g. a run's holdout in place of the test split
            rows, source_rows = np.arange(len(mu)), None
        out["index"].append(np.asarray(rows))
        if split.y is not None:
            out["labels"].append(split.y.cpu().numpy())
    result = {k: np.concatenate(v) for k, v in out.items() if v}
    if len(out["labels"]) != len(chosen):
        result.pop("labels", None)
    if len(chosen) == 2 and source_rows is not None:  # one file: back to its order
        order = np.argsort(result["index"], kind="stable")
        result = {k: v[order] for k, v in result.items()}
    return result


def write_features(feats: dict[str, np.ndarray], path: str | Path) -> None:
    """Write to .npz (arrays) or .csv (columns mu_i, logvar_i, index, label, split)."""
    path = Path(path)
    buf = io.BytesIO()
    if path.suffix.lower() == ".npz":
        np.savez(buf, **feats)  # type: ignore[arg-type]  # numpy's stub matches **feats to allow_pickle
        atomic_write_bytes(path, buf.getvalue())
        return
    mu, logvar = feats["mu"], feats["logvar"]
    k = mu.shape[1]
    header = [f"mu_{i}" for i in range(k)] + [f"logvar_{i}" for i in range(k)]
    cols = [mu, logvar]
    if "index" in feats:
        header.append("index")
        cols.append(feats["index"][:, None])
    if "labels" in feats:
        header.append("label")
        cols.append(feats["labels"][:, None])
    lines = [",".join([*header, "split"])]
    table = np.concatenate([c.astype(np.float64) for c in cols], axis=1)
    for row, split in zip(table, feats["split"], strict=True):
        vals = [f"{v:.7g}" for v in row[: 2 * k]] + [str(int(v)) for v in row[2 * k :]]
        lines.append(",".join([*vals, str(split)]))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
