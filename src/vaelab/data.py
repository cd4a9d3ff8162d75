"""Data sources -> tensors. Every source becomes a `Dataset`: a train and a test `Split`
of images (N, C, H, W), stored as uint8 (0..255) or float32, with optional int64 labels.

The path is one way: SOURCE -> `load_dataset` -> `Dataset.to(device)` -> batches -> loss.
New sources register a loader in `SOURCES` (named datasets) or are matched by path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import VaelabError

DIGITS_SPLIT_SEED = 0
DIGITS_N_TRAIN = 1500


@dataclass
class Split:
    """One split: ``x`` (N, C, H, W) uint8 or float32, ``y`` (N,) int64 or None."""

    x: Tensor
    y: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Split:
        y = None if self.y is None else self.y.to(device)
        return Split(self.x.to(device), y)

    def batch(self, idx: Tensor | slice) -> Tensor:
        """Rows ``idx`` as float32 in the model's units (uint8 is scaled to [0, 1])."""
        return to_float(self.x[idx])


@dataclass
class Dataset:
    """A loaded SOURCE. ``test`` is the held-out split that evaluation reports on."""

    name: str
    train: Split
    test: Split
    classes: list[str] | None = None
    test_split: str = "test"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def has_labels(self) -> bool:
        return self.train.y is not None

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(
            self.name,
            self.train.to(device),
            self.test.to(device),
            self.classes,
            self.test_split,
            self.meta,
        )


def to_float(x: Tensor) -> Tensor:
    """uint8 0..255 -> float32 in [0, 1]; float stays float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def value_range(x: Tensor) -> tuple[float, float]:
    """(min, max) of a split in model units."""
    if x.dtype == torch.uint8:
        return float(x.min()) / 255.0, float(x.max()) / 255.0
    return float(x.min()), float(x.max())


def check_likelihood_range(data: Dataset, likelihood: str) -> None:
    """Bernoulli and discretized logistic likelihoods are only defined for x in [0, 1]."""
    if likelihood not in ("bernoulli", "logistic"):
        return
    for name, split in (("train", data.train), ("test", data.test)):
        lo, hi = value_range(split.x)
        if lo < 0.0 or hi > 1.0:
            raise VaelabError(
                f"data '{data.name}' ({name} split) has values in [{lo:g}, {hi:g}], outside [0, 1] "
                f"required by --likelihood {likelihood}; use --likelihood gaussian or rescale the data"
            )


def seeded_split(n: int, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed permutation of range(n) cut into (train_idx, test_idx)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def load_digits(**_: Any) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, scaled from 0..16 to [0, 1], as (N, 1, 8, 8) float32.

    The split is fixed: a permutation seeded with 0, first 1,500 train, remaining 297 test.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    tr, te = seeded_split(len(x), DIGITS_N_TRAIN, DIGITS_SPLIT_SEED)
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return Dataset(
        "digits",
        Split(x[tr_t], y[tr_t]),
        Split(x[te_t], y[te_t]),
        classes=[str(i) for i in range(10)],
    )


SOURCES: dict[str, Callable[..., Dataset]] = {"digits": load_digits}


def load_dataset(source: str, **options: Any) -> Dataset:
    """Resolve SOURCE (a named dataset, later also a path) into a `Dataset` on the CPU."""
    loader = SOURCES.get(source)
    if loader is None:
        known = ", ".join(sorted(SOURCES))
        raise VaelabError(f"unknown data source '{source}' (known: {known})")
    return loader(**options)
