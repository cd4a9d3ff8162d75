"""Data sources -> tensors. Every SOURCE becomes a `Dataset`: a train and a test `Split`.

The path is one way: SOURCE -> `load_dataset` -> `Dataset.to(device)` -> `Split.batch` -> loss.

A SOURCE is a named dataset (``digits``, ``mnist``, ``fashion-mnist``) or a path: a folder of
IDX files or of images, an ``.npy``/``.npz`` array, or a ``.csv``/``.tsv`` table. The readers
live in idx.py, mnist.py, images.py, arrays.py and tables.py; preprocess.py turns what they
read into splits. Loader options (`DataOptions`) are recorded in config.json, so evaluation
sees exactly the data training saw.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from vaelab.data.types import DataOptions, storage_array
from vaelab.device import bernoulli
from vaelab.errors import DataError

if TYPE_CHECKING:
    from vaelab.config import VAEConfig


class RowStore(Protocol):
    """Streamed storage other than a memory map: rows read on demand (e.g. `torch_data.TorchRows`).

    ``shape`` is (N, C, H, W) and ``dtype`` uint8 or float32; ``store[index]`` with an index array
    (M,) or a slice -> a fresh (M, C, H, W) array of that dtype. ``plan(order, batch_size)``: the
    rows the coming epoch will ask for, in batches of ``batch_size``, so that it can read ahead.
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray: ...

    def plan(self, order: np.ndarray, batch_size: int) -> None: ...


@dataclass
class Split:
    """One split of a dataset.

    ``x`` is the storage, (N, C, H, W) uint8 (0..255) or float32: a tensor held in memory, or
    streamed: a read-only ``np.memmap`` of a file or a `RowStore` (a torch Dataset read item by
    item), in which case ``rows`` (M,) picks this split's rows of it. ``y`` is (len,) int64 or None.
    `batch` turns storage into model units: uint8 / 255, then the fitted affine
    ``(x - center) * scale`` ((C, H, W), clamped to [0, 1] when ``clip``),
    then binarization: "dynamic" draws fresh Bernoulli pixels on every call (on the device),
    "static" takes them from a hash of (seed, row, pixel), so they never change (in-memory splits
    are binarized so once at load time and then hold uint8 0/255). ``ids`` (len,) are the row ids
    that static hash uses when they are not the rows' positions: a subset (`take`) keeps its rows'.

    A split is also a map-style torch Dataset (`__getitem__`, `__len__`), so that it can feed a
    ``torch.utils.data.DataLoader``.
    """

    x: Tensor | np.ndarray | RowStore
    y: Tensor | None = None
    scale: Tensor | None = None
    center: Tensor | None = None
    clip: bool = False
    binarize: str = "none"
    seed: int = 0
    rows: np.ndarray | None = None
    ids: np.ndarray | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else int(self.x.shape[0])

    def __getitem__(self, i: int) -> Tensor | tuple[Tensor, Tensor]:
        """Row ``i`` as a torch Dataset item: x (C, H, W) float32 on ``device`` in model units, exactly
        row ``i`` of `batch`; or (x, y), y a () int64 tensor, when the split has labels.

        Binarization is `batch`'s: "static" gives the row's fixed pixels (in-memory splits already
        hold them), "dynamic" draws fresh pixels from torch's global RNG on every call (in a
        DataLoader worker, the worker's seeded RNG); `Dataset.fixed_train` gives fixed ones."""
        n = len(self)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"row {i} of a split of {n} rows")
        i %= n
        x = self.batch(torch.tensor([i]))[0]
        return x if self.y is None else (x, self.y[i])

    @property
    def streamed(self) -> bool:
        return not isinstance(self.x, Tensor)

    def to(self, device: torch.device | str, storage: Tensor | np.ndarray | RowStore | None = None) -> Split:
        """This split for ``device``. In-memory storage moves there when it fits (see
        `fits_on`); otherwise it stays on the host and each batch is copied over."""
        device = torch.device(device)
        x = self.x
        if storage is not None:
            x = storage
        elif isinstance(x, Tensor) and fits_on(device, x.numel() * x.element_size()):
            x = x.to(device)

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self, x=x, y=move(self.y), scale=move(self.scale), center=move(self.center), device=device
        )

    def head(self, n: int) -> Split:
        """The first ``n`` rows (all of them when ``n >= len``), sharing this split's storage; row ids,
        and so static binarization, stay as they were."""
        if n >= len(self):
            return self
        if isinstance(self.x, Tensor):  # a view, no copy
            y = None if self.y is None else self.y[:n]
            ids = None if self.ids is None else self.ids[:n]
            return dataclasses.replace(self, x=self.x[:n], y=y, ids=ids)
        return self.take(np.arange(n))

    def subsample(self, n: int, seed: int = 0) -> Split:
        """``n`` rows drawn uniformly without replacement (seeded), in their order in this split (all of
        them when ``n >= len``): a fair sample, unlike `head`. Row ids stay as they were."""
        if n >= len(self):
            return self
        return self.take(np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False)))

    def take(self, index: np.ndarray) -> Split:
        """The rows at positions ``index`` (M,), in that order, keeping their row ids (so static
        binarization gives them the pixels they have in this split). In-memory rows are copied;
        a streamed split only narrows its ``rows``."""
        index = np.asarray(index, dtype=np.int64)
        y = None if self.y is None else self.y[torch.from_numpy(index).to(self.y.device)]
        ids = index if self.ids is None else self.ids[index]
        if isinstance(self.x, Tensor):
            x = self.x.index_select(0, torch.from_numpy(index).to(self.x.device))
            return dataclasses.replace(self, x=x, y=y, ids=ids)
        rows = index if self.rows is None else self.rows[index]
        return dataclasses.replace(self, rows=rows, y=y, ids=ids)

    def batch(self, idx: Tensor | slice, binarize: bool = True) -> Tensor:
        """Rows ``idx`` (a (B,) index tensor or a slice) -> (B, C, H, W) float32 on ``device``,
        in model units. ``binarize=False`` skips binarization (used to check value ranges)."""
        x = to_float(self._gather(idx))
        if self.scale is not None:
            assert self.center is not None  # fitted together with scale
            # (x - center) first: exact for x near the center, unlike x * scale + shift
            x = (x - self.center).mul_(self.scale)
            if self.clip:
                x = x.clamp_(0.0, 1.0)
        if binarize and self.binarize == "dynamic":
            x = bernoulli(x)
        elif binarize and self.binarize == "static":
            x = static_bernoulli(x, self._row_ids(idx), self.seed)
        return x

    def prefetch(self, order: Tensor, batch_size: int) -> None:
        """Tell streamed storage that can read ahead (a `RowStore`) which rows the coming epoch will
        ask `batch` for: ``order`` (M,) positions in this split, cut into batches of ``batch_size``.
        A hint only: batches asked for in another order are still read, just not ahead."""
        if isinstance(self.x, Tensor | np.ndarray):
            return
        rows = order.cpu().numpy().astype(np.int64)
        self.x.plan(rows if self.rows is None else self.rows[rows], batch_size)

    def _gather(self, idx: Tensor | slice) -> Tensor:
        if isinstance(self.x, Tensor):
            if isinstance(idx, slice):
                return self.x[idx].to(self.device, non_blocking=True)
            # index_select: about 2x faster than x[idx] for row gathers on the CPU
            rows = self.x.index_select(0, idx.to(self.x.device, torch.int64).reshape(-1))
            return rows.to(self.device, non_blocking=True)
        # Streamed: read the rows from the memory map (the OS page cache does the caching) or the
        # row store.
        sel = idx.cpu().numpy() if isinstance(idx, Tensor) else idx
        if self.rows is not None:
            sel = self.rows[sel]
        arr = np.asarray(self.x[sel])
        if not arr.flags.writeable:  # a slice is a view of the read-only map: copy it out
            arr = arr.copy()
        return torch.from_numpy(storage_array(arr)).to(self.device)

    def _row_ids(self, idx: Tensor | slice) -> Tensor:
        pos = torch.arange(*idx.indices(len(self))) if isinstance(idx, slice) else idx
        if self.ids is not None:
            pos = torch.from_numpy(self.ids[pos.cpu().numpy()])
        return pos.to(self.device)


@dataclass
class Dataset:
    """A loaded SOURCE. ``test`` is the held-out split that evaluation reports on; its name is
    ``test_split`` ("test" for sources with an official test split, else "val").

    ``meta`` holds ``options`` (the resolved loader options to record in config.json),
    ``range`` ((lo, hi) in model units before binarization) and ``streamed``.
    """

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

    def fixed_train(self) -> Split:
        """The training split for evaluation: dynamic binarization drawn once (static, from the split's
        own seed), so that its numbers repeat, as the test split's do."""
        t = self.train
        return dataclasses.replace(t, binarize="static") if t.binarize == "dynamic" else t

    def to(self, device: torch.device | str) -> Dataset:
        train = self.train.to(device)
        # Splits of one streamed file share its memory map: nothing to move, nothing to copy.
        test = self.test.to(device, storage=train.x if self.test.x is self.train.x else None)
        return dataclasses.replace(self, train=train, test=test)


def to_float(x: Tensor) -> Tensor:
    """uint8 0..255 -> float32 in [0, 1]; float stays float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether a tensor of ``nbytes`` may live on ``device``: always on the host (the memory
    limit was applied at load time); on a GPU when it takes at most half its free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= free // 2
    return True


def _mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32, a 32-bit integer hash; numpy's uint32 arithmetic wraps mod 2^32 by definition."""
    x = x ^ (x >> np.uint32(16))
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def static_bernoulli(p: Tensor, rows: Tensor, seed: int) -> Tensor:
    """Bernoulli(p) pixels that depend only on (seed, row, pixel): never on batching or device.

    p: (B, C, H, W) in [0, 1]; rows: (B,) row ids -> (B, C, H, W) float32 0/1 on p's device. A pixel
    is 1 when the 24-bit hash u of (seed, row, pixel) satisfies u < p * 2^24, so P(1) = p to 2^-24.
    """
    with np.errstate(over="ignore"):
        key = _mix32(np.array([seed & 0xFFFFFFFF], dtype=np.uint32))
        row = _mix32(rows.cpu().numpy().astype(np.uint32) ^ key)  # (B,)
        pixel = _mix32(np.arange(p[0].numel(), dtype=np.uint32) + np.uint32(0x9E3779B9))  # (D,)
        u = (_mix32(row[:, None] ^ pixel[None, :]) >> np.uint32(8)).astype(np.float32)  # (B, D), exact
    bits = torch.from_numpy(u).to(p.device) < p.reshape(p.shape[0], -1) * 16777216.0
    return bits.to(torch.float32).reshape(p.shape)


def value_range(x: Tensor | np.ndarray) -> tuple[float, float]:
    """(min, max) of a storage array in model units (before any rescaling)."""
    if x.dtype in (torch.uint8, np.uint8):
        return float(x.min()) / 255.0, float(x.max()) / 255.0
    return float(x.min()), float(x.max())


def split_range(split: Split, chunk: int = 8192) -> tuple[float, float]:
    """(min, max) of a split in model units before binarization, read in chunks."""
    lo, hi = float("inf"), float("-inf")
    for start in range(0, len(split), chunk):
        rows = slice(start, start + chunk)
        if split.scale is None:  # min/max of the stored values: no float copy of uint8 pixels
            a, b = value_range(split._gather(rows))
        else:
            xb = split.batch(rows, binarize=False)
            a, b = float(xb.min()), float(xb.max())
        lo, hi = min(lo, a), max(hi, b)
    return lo, hi


def check_likelihood_range(data: Dataset, likelihood: str) -> None:
    """Bernoulli and discretized logistic likelihoods are only defined for x in [0, 1]."""
    if likelihood not in ("bernoulli", "logistic"):
        return
    lo, hi = data.meta.get("range") or _dataset_range(data)
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            "'{n}': values in [{lo:g}, {hi:g}] are outside [0, 1], which {a.likelihood:={lk!r}} requires; "
            "pass {f.rescale:='minmax'} to min-max scale them, or use {a.likelihood:='gaussian'}",
            f=DataOptions, n=data.name, lo=lo, hi=hi, lk=likelihood,
        )


def check_model_fit(data: Dataset, config: VAEConfig) -> None:
    """``data`` against a model's config: the input shape, the value range its likelihood needs, and
    for a CVAE labels in 0..n_classes-1 on both splits."""
    if data.shape != tuple(config.input_shape):
        raise DataError(
            f"'{data.name}' has items of shape {data.shape} but the model's input_shape is "
            f"{tuple(config.input_shape)}"
        )
    check_likelihood_range(data, config.likelihood)
    check_class_labels(data, config.n_classes)


def check_class_labels(data: Dataset, n_classes: int) -> None:
    """For a CVAE of ``n_classes`` (0: not a CVAE, nothing to check): labels in 0..n_classes-1 on both
    splits, else a one-line `DataError`."""
    c = n_classes
    if not c:
        return
    if not data.has_labels:
        raise DataError(f"the model is a CVAE (n_classes={c}), which needs labels; '{data.name}' has none")
    for split in (data.train, data.test):
        if split.y is not None and len(split.y) and not (int(split.y.min()) >= 0 and int(split.y.max()) < c):
            raise DataError(
                f"the model is a CVAE of {c} classes, but '{data.name}' has labels outside 0..{c - 1}"
            )


def _dataset_range(data: Dataset) -> tuple[float, float]:
    (a, b), (c, d) = split_range(data.train), split_range(data.test)
    return min(a, c), max(b, d)


def seeded_split(n: int, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed permutation of range(n) cut into sorted (train_idx, test_idx)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


# Extra named sources registered by code (name -> loader(**options) -> Dataset); the built-in
# names (NAMED) and paths are resolved by preprocess.read_source.
SOURCES: dict[str, Callable[..., Dataset]] = {}
