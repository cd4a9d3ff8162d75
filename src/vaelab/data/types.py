"""The data layer's shared types and checks: loader options, what a reader returns, memory limits.

Everything in `vaelab.data` may import this module; it imports nothing from the rest of `vaelab.data`,
so the readers only read.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaelab.errors import DataError

BINARIZE = ("none", "dynamic", "static")


RESCALE = ("auto", "none", "minmax", "standardize")


NAMED = ("digits", "mnist", "fashion-mnist")


@dataclass
class DataOptions:
    """Loader options; ``None`` means "not given" (the source's default applies).

    data_dir: where to look for (and download) mnist/fashion-mnist first ($VAELAB_DATA).
    image_size: (S,) shorter side to S then centre crop S x S, or (H, W) exact resize.
    val_fraction, split_seed: the held-out split of sources without their own test split.
    binarize: none, dynamic (fresh Bernoulli pixels every batch) or static (drawn once).
    label_column: CSV column name or index (also a column index of an N x D array).
    rescale: auto, none, minmax (to [0, 1], fitted on train) or standardize (zero mean, unit var).
    """

    data_dir: str | None = None
    image_size: tuple[int, ...] | None = None
    val_fraction: float | None = None
    split_seed: int | None = None
    binarize: str | None = None
    label_column: str | int | None = None
    rescale: str | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
            if len(self.image_size) not in (1, 2) or min(self.image_size) < 1:
                raise DataError(
                    "{f.image_size} must be S or HxW with positive sizes, got {v}",
                    f=DataOptions, v=self.image_size,
                )
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise DataError("{f.val_fraction} must be in (0, 1), got {v}", f=DataOptions, v=self.val_fraction)
        if self.split_seed is not None and (isinstance(self.split_seed, bool) or self.split_seed < 0):
            raise DataError(
                "{f.split_seed} must be an integer >= 0, got {v}", f=DataOptions, v=self.split_seed
            )
        for name, allowed in (("binarize", BINARIZE), ("rescale", RESCALE)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise DataError(
                    "{f." + name + "} must be one of {ok}; got {v!r}",
                    f=DataOptions, ok=", ".join(allowed), v=value,
                )

    @classmethod
    def parse(cls, options: dict[str, Any]) -> DataOptions:
        """Validate a ``data_options`` dict (from flags or config.json): known keys, right types."""
        from vaelab.schema import from_dict

        return from_dict(cls, dict(options), "data options")

    def given(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


def storage_array(a: np.ndarray) -> np.ndarray:
    """Any numeric array -> the storage dtypes: uint8 stays, bool -> uint8 0/255, else float32."""
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass
class RawData:
    """What a reader found. ``x`` (N, C, H, W) is in a storage dtype (uint8 or float32) unless
    ``streamed``, when it is a read-only ``np.memmap`` of any numeric dtype. ``x_test`` is None
    when the source has no test split of its own (a seeded validation split is held out)."""

    name: str
    x: np.ndarray
    y: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    classes: list[str] | None = None
    accepts: tuple[str, ...] = ()  # options that apply, beyond binarize and rescale
    flat: bool = False  # (N, 1, 1, D) features: rescale per feature, not per dataset
    table: bool = False  # rescale="auto" standardizes it for a Gaussian likelihood
    streamed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def memory_limit() -> int:
    """Bytes a dataset may take in memory: $VAELAB_MEMORY_LIMIT (e.g. 8G, 512M) or half of
    the memory available now."""
    text = os.environ.get("VAELAB_MEMORY_LIMIT", "").strip()
    if text:
        return parse_size(text, "VAELAB_MEMORY_LIMIT")
    return available_memory() // 2


def parse_size(text: str, what: str) -> int:
    """'8G', '512M', '64k', '1000' -> bytes (powers of 1024)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", text.strip().lower())
    if not m:
        raise DataError(f"{what} must be a size such as 8G, 512M or 1000000; got {text!r}")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def available_memory() -> int:
    """Bytes of memory available: psutil's count where psutil is installed (an optional extra that
    knows every OS), else MemAvailable from /proc/meminfo (Linux), else free physical pages
    (sysconf, POSIX), else 8 GiB."""
    try:
        psutil = importlib.import_module("psutil")  # optional: vaelab does not depend on it
        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or it cannot tell on this platform
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def first_nonfinite(a: np.ndarray, chunk_rows: int = 4096) -> tuple[tuple[int, ...], str] | None:
    """Index and kind ("NaN" or "inf") of the first non-finite value of a float array, read in chunks."""
    if a.dtype.kind != "f":
        return None
    for start in range(0, len(a), chunk_rows):
        block = np.asarray(a[start : start + chunk_rows])
        bad = ~np.isfinite(block)
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            kind = "NaN" if np.isnan(block[i]) else "inf"
            return (start + i[0], *i[1:]), kind
    return None


def check_labels(arr: np.ndarray, where: str, n_images: int, images_where: str) -> np.ndarray:
    """(N,) non-negative integer labels, as many as there are images."""
    if arr.ndim != 1:
        raise DataError(f"'{where}': labels must be one-dimensional, found shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"'{where}': labels must be integers")
    elif arr.dtype.kind not in "iub":
        raise DataError(f"'{where}': labels must be integers, found dtype {arr.dtype}")
    if len(arr) != n_images:
        raise DataError(
            f"'{where}': {len(arr):,} labels but '{images_where}' has {n_images:,} images "
            "(mismatched image and label counts)"
        )
    if len(arr) and arr.min() < 0:
        raise DataError(f"'{where}': labels must be non-negative, found {arr.min()}")
    return arr.astype(np.int64)
