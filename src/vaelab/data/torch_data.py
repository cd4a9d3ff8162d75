"""torch Datasets in: `from_torch` turns a train and a test ``torch.utils.data.Dataset`` into a `Dataset`.

An item is ``x`` or ``(x, y)``: x a tensor or array of shape (C, H, W), (H, W) (one channel) or (D,)
(flat features, stored as (1, 1, D)); y an integer label >= 0. uint8 pixels stay uint8 (0..255 in
storage, /255 in model units), bool becomes uint8 0/255, anything else float32, as for the file
readers (`types.storage_array`). Every item is read once and checked (one shape, one storage dtype,
finite values, labels on all items or none); then the rest is what `load_dataset` does
(`preprocess.finish`: rescaling, binarization, the value range).

Data that fits in `types.memory_limit` is gathered into an ordinary in-memory `Split`, which trains
exactly like `load_dataset`'s. Bigger data stays in the torch Dataset: the split's storage is a
`TorchRows`, read batch by batch where a memory-mapped file would be (`Split._gather`); with
``num_workers`` > 0 a ``DataLoader`` reads each epoch's batches ahead, in the epoch's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from vaelab.data import types
from vaelab.data.dataset import Dataset, check_likelihood_range, check_model_fit
from vaelab.data.preprocess import finish
from vaelab.data.types import DataOptions, RawData, first_nonfinite, storage_array
from vaelab.errors import DataError

if TYPE_CHECKING:
    from vaelab.config import VAEConfig

CHECK_CHUNK = 1024  # items checked for NaN/inf at once


class ItemDataset(Protocol):
    """A map-style dataset: ``len(ds)`` items, ``ds[i]`` for 0 <= i < len (a torch Dataset, a `Split`...)."""

    def __getitem__(self, i: int) -> Any: ...

    def __len__(self) -> int: ...


def from_torch(
    train: ItemDataset,
    test: ItemDataset,
    *,
    name: str | None = None,
    classes: list[str] | None = None,
    likelihood: str | None = None,
    binarize: str | None = None,
    rescale: str | None = None,
    memory_limit: int | None = None,
    stream: bool | None = None,
    num_workers: int = 0,
) -> Dataset:
    """Map-style torch Datasets ``train`` and ``test`` (items ``x`` or ``(x, y)``) -> a `Dataset`.

    ``name`` names the data in messages (default: the train dataset's class name). ``classes``: the
    class names (default: ``train.classes`` when it is a list of names, else "0", "1"...).
    ``likelihood`` checks the value range it needs (`check_likelihood_range`) and resolves
    ``rescale="auto"``; ``binarize`` and ``rescale`` are the `DataOptions` of the same names.

    Both splits are gathered into memory when they take at most ``memory_limit`` bytes in storage
    (default `types.memory_limit`, $VAELAB_MEMORY_LIMIT); else they stream from the datasets, each
    batch read item by item (`TorchRows`). ``stream`` True or False forces either; ``num_workers``
    DataLoader processes then read each epoch's batches ahead (0: read in this process, when asked).
    Every item is read once here to check it; a streamed dataset is read once more for its value
    range. Items must not change between reads (random augmentation is drawn once when gathered).
    """
    opts = DataOptions(binarize=binarize, rescale=rescale)  # checks the values
    if num_workers < 0:
        raise DataError(f"num_workers must be >= 0, got {num_workers}")
    name = name or type(train).__name__
    parts = {f"'{name}' train": train, f"'{name}' test": test}
    firsts = [_first(ds, where) for where, ds in parts.items()]
    (shape, _, _, labeled), (t_shape, _, _, t_labeled) = firsts
    if t_shape != shape:
        raise DataError(f"'{name}': test items have shape {t_shape}, train items {shape}")
    if t_labeled != labeled:
        has, lacks = ("train", "test") if labeled else ("test", "train")
        raise DataError(f"'{name}': {has} items have labels (x, y) but {lacks} items do not")
    store = _stored(shape)
    per_item = int(np.prod(store))
    nbytes = sum(len(ds) * per_item * f[2].itemsize for ds, f in zip(parts.values(), firsts, strict=True))
    limit = types.memory_limit() if memory_limit is None else int(memory_limit)
    streamed = nbytes > limit if stream is None else bool(stream)
    xs: list[Any] = []
    ys: list[np.ndarray | None] = []
    for (where, ds), first in zip(parts.items(), firsts, strict=True):
        x, y = _read_all(ds, where, first, keep=not streamed)
        xs.append(TorchRows(ds, store, first[2], num_workers, where) if streamed else x)
        ys.append(y)
    raw = RawData(
        name,
        xs[0],
        ys[0],
        xs[1],
        ys[1],
        classes=_classes(classes, train, ys) if labeled else None,
        flat=len(shape) == 1,
        streamed=streamed,
        meta={"format": "torch"},
    )
    data = finish(raw, opts, likelihood)
    if likelihood is not None:
        check_likelihood_range(data, likelihood)
    return data


def as_dataset(
    data: Dataset | ItemDataset | tuple[ItemDataset, ItemDataset],
    test: ItemDataset | None = None,
    model_config: VAEConfig | None = None,
) -> Dataset:
    """What `vaelab.train` takes as data -> a `Dataset`. A `Dataset` is returned as it is; torch
    Datasets, ``data`` (train) with ``test``, or a tuple ``data`` = (train, test), go through
    `from_torch` (with ``model_config``'s likelihood) and are checked against ``model_config``
    (`check_model_fit`: input shape, value range, a CVAE's labels)."""
    if isinstance(data, Dataset):
        if test is not None:
            raise DataError("test= is for torch Datasets; a vaelab Dataset holds its own test split")
        return data
    if isinstance(data, tuple):
        if len(data) != 2 or test is not None:
            raise DataError(
                "data as a tuple must be (train, test) torch Datasets, without test= "
                f"(got a tuple of {len(data)}{' and test=' if test is not None else ''})"
            )
        data, test = data
    if test is None:
        raise DataError(
            f"data is a {type(data).__name__} without a test split: pass test=<a torch Dataset> "
            "or data=(train, test)"
        )
    likelihood = None if model_config is None else model_config.likelihood
    out = from_torch(data, test, likelihood=likelihood)
    if model_config is not None:
        check_model_fit(out, model_config)
    return out


def _stored(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """An item's shape -> its storage shape (C, H, W): (H, W) -> (1, H, W), (D,) -> (1, 1, D)."""
    return (1, 1, *shape)[-3:]  # type: ignore[return-value]


_First = tuple[tuple[int, ...], str, np.dtype, bool]  # item 0: shape, dtype name, storage dtype, labeled


def _first(ds: ItemDataset, where: str) -> _First:
    """Item 0 of ``ds`` -> (its shape, its dtype's name, the storage dtype, whether it has a label)."""
    try:
        n = len(ds)
    except TypeError:
        raise DataError(
            f"{where}: not a map-style dataset with a length (an IterableDataset cannot be indexed)"
        ) from None
    if n == 0:
        raise DataError(f"{where}: the dataset is empty")
    x, y = _split_item(ds[0], f"{where} item 0")
    return x.shape, x.dtype.name, storage_array(x[:0]).dtype, y is not None


def _read_all(
    ds: ItemDataset, where: str, first: _First, keep: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Read and check every item of ``ds`` -> (x (N, C, H, W) in the storage dtype, or None unless
    ``keep``; labels (N,) int64, or None)."""
    shape, kind, dtype, labeled = first
    n = len(ds)
    store = _stored(shape)
    out = np.empty((n, *store), dtype=dtype) if keep else None
    buf = None if keep else np.empty((min(n, CHECK_CHUNK), *store), dtype=dtype)
    labels = np.empty(n, dtype=np.int64) if labeled else None
    for start in range(0, n, CHECK_CHUNK):
        block = out[start : start + CHECK_CHUNK] if out is not None else buf
        assert block is not None
        m = min(CHECK_CHUNK, n - start)
        for j in range(m):
            i = start + j
            x, y = _split_item(ds[i], f"{where} item {i}")
            if x.shape != shape:
                raise DataError(f"{where} item {i} has shape {x.shape}, item 0 had {shape}")
            sx = storage_array(x)
            if sx.dtype != dtype:
                raise DataError(
                    f"{where} item {i} is {x.dtype.name}, item 0 was {kind}: uint8 pixels (0..255) "
                    "and float values cannot be mixed"
                )
            block[j] = sx.reshape(store)
            if labels is None and y is not None:
                raise DataError(f"{where} item {i} has a label, item 0 had none")
            if labels is not None:
                if y is None:
                    raise DataError(f"{where} item {i} has no label, item 0 had one")
                labels[i] = y
        bad = first_nonfinite(block[:m], chunk_rows=m)
        if bad is not None:
            (j, *pos), kind_bad = bad
            raise DataError(f"{where} item {start + j} has a {kind_bad} value at x{list(pos)}")
    return out, labels


def _split_item(item: Any, where: str) -> tuple[np.ndarray, int | None]:
    """An item (``where`` names it in messages) -> (x as a numeric array, its label or None)."""
    if isinstance(item, tuple | list):
        if len(item) not in (1, 2):
            raise DataError(f"{where} has {len(item)} parts; items must be x or (x, y)")
        x, y = item[0], (item[1] if len(item) == 2 else None)
    else:
        x, y = item, None
    return _array(x, where), None if y is None else _label(y, where)


def _array(x: Any, where: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # float16, bfloat16: numpy has no bfloat16
        a = x.cpu().numpy()
    else:
        a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise DataError(f"{where}: x has dtype {a.dtype}; expected numbers")
    if a.ndim not in (1, 2, 3) or 0 in a.shape:
        raise DataError(f"{where}: x has shape {a.shape}; expected (C, H, W), (H, W) or (D,)")
    return a


def _label(y: Any, where: str) -> int:
    value = y
    if isinstance(y, Tensor):
        value = y.item() if y.numel() == 1 else y
    elif isinstance(y, np.ndarray | np.generic):
        value = y.item() if y.size == 1 else y
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{where} has label {_short(y)}; labels must be integers >= 0")
    return value


def _short(v: Any) -> str:
    text = " ".join(repr(v).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _classes(given: list[str] | None, train: ItemDataset, ys: list[np.ndarray | None]) -> list[str]:
    """The class names: ``given``, else ``train.classes`` (torchvision's), else "0".."K-1"."""
    k = 1 + max(int(y.max()) for y in ys if y is not None)
    names = given if given is not None else getattr(train, "classes", None)
    if isinstance(names, list | tuple) and all(isinstance(c, str) for c in names):
        if len(names) < k:
            if given is not None:
                raise DataError(f"classes has {len(names)} names but the labels go up to {k - 1}")
        else:
            return list(names)
    return [str(c) for c in range(k)]


class _Plan:
    """A DataLoader batch sampler over the batches planned for the current epoch (persistent workers
    read a new plan each time the loader is iterated)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Collate:
    """Items -> one (B, C, H, W) storage tensor (picklable, for DataLoader workers)."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, where: str) -> None:
        self.shape, self.dtype, self.where = shape, dtype, where

    def __call__(self, items: list[Any]) -> Tensor:
        out = np.empty((len(items), *self.shape), dtype=self.dtype)
        for j, item in enumerate(items):
            x, _ = _split_item(item, f"{self.where}: an item read while training")
            sx = storage_array(x)
            if sx.size != out[j].size or sx.dtype != self.dtype:
                raise DataError(
                    f"{self.where}: an item read while training is {x.dtype.name} of shape {x.shape}, "
                    "unlike the items read when the data was loaded"
                )
            out[j] = sx.reshape(self.shape)
        return torch.from_numpy(out)


class TorchRows:
    """A torch Dataset's x values as streamed split storage (a `dataset.RowStore`).

    ``rows[index]`` (index (M,) or a slice) -> (M, C, H, W) array in the storage dtype, read item by
    item. With ``num_workers`` > 0, `plan` starts a DataLoader (persistent workers) over the coming
    epoch's batches; batches asked for in that order come from it, read ahead, any other rows are
    read directly. Labels are not read here: the split holds them (`from_torch` read them once).
    """

    def __init__(
        self, dataset: ItemDataset, shape: tuple[int, int, int], dtype: np.dtype, num_workers: int, where: str
    ) -> None:
        self.dataset = dataset
        self.shape: tuple[int, ...] = (len(dataset), *shape)
        self.dtype = np.dtype(dtype)
        self.num_workers = num_workers
        self.collate = _Collate(shape, self.dtype, where)
        self._plan = _Plan()
        self._loader: torch.utils.data.DataLoader | None = None
        self._it: Any = None
        self._next = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        batches = self._plan.batches
        if self._it is not None and self._next < len(batches) and np.array_equal(batches[self._next], index):
            self._next += 1
            return next(self._it).numpy()
        return self.collate([self.dataset[int(i)] for i in index]).numpy()

    def plan(self, order: np.ndarray, batch_size: int) -> None:
        """The rows the coming epoch reads, ``order`` (M,) cut into batches of ``batch_size``."""
        if self.num_workers == 0:
            return
        self._plan.batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset,  # type: ignore[arg-type]  # any map-style dataset
                batch_sampler=self._plan,
                num_workers=self.num_workers,
                collate_fn=self.collate,
                persistent_workers=True,
                generator=torch.Generator(),  # the workers' seeds: leave torch's global RNG alone
            )
        self._it, self._next = iter(self._loader), 0
