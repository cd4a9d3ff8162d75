"""SOURCE strings -> a `Dataset`: the one entry point of the data layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelab.data import preprocess, types
from vaelab.data.dataset import SOURCES, Dataset
from vaelab.data.types import NAMED, DataOptions


def load_digits(**options: Any) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, scaled from 0..16 to [0, 1], as (N, 1, 8, 8) float32.

    The split is fixed: a permutation seeded with 0, first 1,500 train, remaining 297 test.
    """
    return load_dataset("digits", **options)




def same_source(a: str, b: str) -> bool:
    """Whether two SOURCE strings name the same data (equal names, or paths to one file)."""
    if a == b:
        return True
    if a in NAMED or b in NAMED or a in SOURCES or b in SOURCES:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def canonical_source(source: str) -> str:
    """A dataset name as is; a path made absolute, so a run's record works from any directory."""
    if source in NAMED:
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def load_dataset(
    source: str, *, likelihood: str | None = None, memory_limit: int | None = None, **options: Any
) -> Dataset:
    """Resolve SOURCE into a `Dataset` on the CPU (streamed splits stay memory-mapped).

    ``options`` are `DataOptions` fields. ``likelihood`` only resolves ``rescale="auto"`` (tables
    are standardized for a Gaussian likelihood). ``memory_limit`` (bytes) caps what is read into
    memory; bigger .npy and raw IDX files are streamed (default: see `types.memory_limit`).
    The options actually applied are in ``dataset.meta["options"]``.
    """
    if source in SOURCES:  # a loader registered by code: it takes the options itself
        data = SOURCES[source](**options)
        data.meta.setdefault("options", dict(options))
        return data
    opts = DataOptions.parse(options)
    limit = types.memory_limit() if memory_limit is None else int(memory_limit)
    raw = preprocess.read_source(source, opts, limit)
    return preprocess.finish(raw, opts, likelihood)
