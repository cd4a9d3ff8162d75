"""From what a reader returns (`RawData`) to a `Dataset`: which reader, the held-out split,
rescaling, binarization and the checks that go with them.

Memory: a source is read into memory when its array takes at most `memory_limit` bytes (half
the available RAM unless $VAELAB_MEMORY_LIMIT says otherwise); holding out a validation split
copies it once, hence the half. Bigger uncompressed files (.npy, raw IDX) are memory-mapped
and streamed batch by batch instead; see docs/data.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.data.dataset import SOURCES, Dataset, Split, seeded_split, split_range
from vaelab.data.types import NAMED, DataOptions, RawData, storage_array
from vaelab.errors import DataError

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 0
TRAIN_BINARIZE_SEED = 0x7A11  # static binarization keys: fixed, so every run sees the same pixels
TEST_BINARIZE_SEED = 0x7E57
DIGITS_SPLIT_SEED = 0
DIGITS_N_TRAIN = 1500
_COMMON = ("binarize", "rescale")


def read_source(source: str, opts: DataOptions, limit: int) -> RawData:
    """Pick the reader for SOURCE: a dataset name, an IDX or image folder, an array or a table."""
    if source == "digits":
        return _read_digits()
    if source in NAMED:
        from vaelab.data.mnist import read_named

        return read_named(source, opts)
    path = Path(source).expanduser()
    if not path.exists():
        names = ", ".join([*NAMED, *sorted(SOURCES)])
        raise DataError(
            f"unknown data source '{source}': not a dataset name ({names}) and no such file or directory"
        )
    if not (path.is_dir() or path.is_file()):  # a FIFO or a device would block or never end
        raise DataError(f"'{source}': not a regular file or a directory (a pipe, socket or device?)")
    from vaelab.data.readers import idx

    if path.is_dir():
        if idx.find_idx_files(path):
            return idx.read_idx_dir(path, source, limit)
        from vaelab.data.readers.images import read_image_folder

        return read_image_folder(path, source, opts, limit)
    name = path.name.lower()
    if idx.is_idx_name(name):
        return idx.read_idx_file(path, source, limit)
    if name.endswith((".npy", ".npz")):
        from vaelab.data.readers.arrays import read_array_file

        return read_array_file(path, source, opts, limit)
    if name.endswith((".csv", ".tsv")):
        from vaelab.data.readers.tables import read_table

        return read_table(path, source, opts)
    raise DataError(
        f"'{source}': unsupported file type; expected a folder (IDX files or images), .npy, .npz, "
        ".csv, .tsv or an IDX file"
    )


def _read_digits() -> RawData:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    tr, te = seeded_split(len(x), DIGITS_N_TRAIN, DIGITS_SPLIT_SEED)
    classes = [str(i) for i in range(10)]
    return RawData("digits", x[tr], y[tr], x[te], y[te], classes=classes)


def finish(raw: RawData, opts: DataOptions, likelihood: str | None) -> Dataset:
    """Hold out the validation split, fit the rescaling, set up binarization and check ranges."""
    for key in opts.given():
        if key not in raw.accepts and key not in _COMMON:
            raise DataError("{f." + key + "} does not apply to data source '{s}'", f=DataOptions, s=raw.name)
    options: dict[str, Any] = {k: getattr(opts, k) for k in ("data_dir", "image_size", "label_column")}
    meta = dict(raw.meta)
    if raw.x_test is None:
        train, test, rows = _holdout(raw, opts, options)
        test_split = "val"
        meta["source_rows"] = rows  # each split's rows of the source, to join results back to it
    else:
        train, test = _as_split(raw, raw.x, raw.y), _as_split(raw, raw.x_test, raw.y_test)
        test_split = "test"

    rescale = _resolve_rescale(raw, opts, likelihood)
    if rescale != "none":
        scale, center = _fit_rescale(train, rescale, raw.flat)
        for s in (train, test):
            s.scale, s.center, s.clip = scale, center, rescale == "minmax"
    (lo1, hi1), (lo2, hi2) = split_range(train), split_range(test)
    lo, hi = min(lo1, lo2), max(hi1, hi2)
    binarize = opts.binarize or "none"
    if binarize != "none":
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                "'{s}': {f.binarize:={b!r}} needs values in [0, 1] but they span [{lo:g}, {hi:g}]; pass "
                "{f.rescale:='minmax'} to min-max scale them",
                f=DataOptions, s=raw.name, b=binarize, lo=lo, hi=hi,
            )
        # The test split is always binarized once, with a fixed seed: comparable numbers.
        for split, mode, seed in (
            (train, binarize, TRAIN_BINARIZE_SEED),
            (test, "static", TEST_BINARIZE_SEED),
        ):
            split.binarize, split.seed = mode, seed
            if mode == "static" and not split.streamed:
                _materialize(split)
    options.update(binarize=binarize, rescale=rescale)
    meta.update(
        options={k: v for k, v in options.items() if v is not None},
        range=(lo, hi) if binarize == "none" else (0.0, 1.0),
        streamed=raw.streamed,
    )
    return Dataset(raw.name, train, test, raw.classes, test_split, meta)


def _materialize(split: Split, chunk: int = 8192) -> None:
    """Binarize an in-memory split once, in place, into uint8 0/255 storage (same pixels as the
    per-batch path of a streamed split: `static_bernoulli` depends on row and pixel only)."""
    parts = [
        split.batch(slice(start, start + chunk)).mul_(255).to(torch.uint8)
        for start in range(0, len(split), chunk)
    ]
    split.x = torch.cat(parts)
    split.scale = split.center = None
    split.clip, split.binarize = False, "none"


def _holdout(
    raw: RawData, opts: DataOptions, options: dict[str, Any]
) -> tuple[Split, Split, dict[str, np.ndarray]]:
    """A seeded validation split of ``val_fraction`` of the rows (at least one in each part) ->
    (train, val, {"train": its source rows (sorted), "val": its source rows})."""
    frac = DEFAULT_VAL_FRACTION if opts.val_fraction is None else opts.val_fraction
    seed = DEFAULT_SPLIT_SEED if opts.split_seed is None else opts.split_seed
    options.update(val_fraction=frac, split_seed=seed)
    n = len(raw.x)
    if n < 2:
        raise DataError(f"'{raw.name}' has {n} example(s); at least 2 are needed to hold out a split")
    n_test = min(n - 1, max(1, round(n * frac)))
    tr, te = seeded_split(n, n - n_test, seed)
    y = raw.y
    return (
        _as_split(raw, raw.x, None if y is None else y[tr], tr),
        _as_split(raw, raw.x, None if y is None else y[te], te),
        {"train": tr, "val": te},
    )


def _as_split(raw: RawData, x: np.ndarray, y: np.ndarray | None, rows: np.ndarray | None = None) -> Split:
    yt = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
    if raw.streamed:
        return Split(x, yt, rows=rows)
    return Split(torch.from_numpy(take(x, rows)), yt)


def take(x: np.ndarray, rows: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
    """``x[rows]`` (all rows when None) in the storage dtype, converted chunk by chunk, so a
    memory-mapped or float64 source never needs a full-size temporary copy."""
    if (
        rows is None
        and not isinstance(x, np.memmap)
        and x.dtype in (np.uint8, np.float32)
        and x.flags.writeable
    ):
        return storage_array(x)  # already in memory and in shape: no copy (read-only arrays are copied)
    n = len(x) if rows is None else len(rows)
    dtype = storage_array(np.asarray(x[:1])).dtype
    out = np.empty((n, *x.shape[1:]), dtype=dtype)
    for start in range(0, n, chunk):
        sel = slice(start, start + chunk) if rows is None else rows[start : start + chunk]
        out[start : start + chunk] = storage_array(np.asarray(x[sel]))
    return out


def _resolve_rescale(raw: RawData, opts: DataOptions, likelihood: str | None) -> str:
    mode = opts.rescale or "auto"
    if mode == "auto":
        mode = "standardize" if raw.table and likelihood == "gaussian" else "none"
    if mode == "standardize" and likelihood in ("bernoulli", "logistic"):
        raise DataError(
            "'{s}': {f.rescale:='standardize'} gives values outside [0, 1], which {a.likelihood:={lk!r}} "
            "cannot model; use {f.rescale:='minmax'} or {a.likelihood:='gaussian'}",
            f=DataOptions, s=raw.name, lk=likelihood,
        )
    return mode


def _fit_rescale(train: Split, mode: str, flat: bool, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature (flat data) or whole-dataset (images) affine fitted on the train split, as
    (scale, center), each (C, H, W), for (x - center) * scale: minmax maps [min, max] to [0, 1];
    standardize gives mean 0, std 1."""
    shape = tuple(int(v) for v in train.x.shape[1:])
    dim = 0 if flat else None
    lo: torch.Tensor | None = None
    hi: torch.Tensor | None = None
    ref: torch.Tensor | None = None
    total: torch.Tensor | float = 0.0
    total_sq: torch.Tensor | float = 0.0
    for start in range(0, len(train), chunk):
        xb = train.batch(slice(start, start + chunk), binarize=False).double()
        if flat:
            b_lo, b_hi = xb.amin(dim=0), xb.amax(dim=0)
        else:
            b_lo, b_hi = xb.min(), xb.max()
        lo = b_lo if lo is None else torch.minimum(lo, b_lo)
        hi = b_hi if hi is None else torch.maximum(hi, b_hi)
        if ref is None:  # sums around a first estimate of the mean: no cancellation in the variance
            ref = xb.mean() if dim is None else xb.mean(dim=0)
        xc = xb - ref
        total = total + (xc.sum() if dim is None else xc.sum(dim=0))
        total_sq = total_sq + ((xc * xc).sum() if dim is None else (xc * xc).sum(dim=0))
    # The train split is never empty, so the loop above ran at least once.
    assert lo is not None and hi is not None and ref is not None
    assert isinstance(total, torch.Tensor) and isinstance(total_sq, torch.Tensor)
    count = len(train) * (1 if flat else int(np.prod(shape)))
    if mode == "minmax":
        width = hi - lo
        scale = torch.where(width > 0, 1.0 / width.clamp_min(1e-300), torch.ones_like(width))
        center = lo
    else:
        d = total / count
        mean = ref + d
        std = (total_sq / count - d * d).clamp_min(0.0).sqrt()
        scale = torch.where(std > 1e-12, 1.0 / std.clamp_min(1e-12), torch.ones_like(std))
        center = mean
    return scale.float().expand(shape).contiguous(), center.float().expand(shape).contiguous()
