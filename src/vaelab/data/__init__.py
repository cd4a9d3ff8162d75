"""The data layer: SOURCE strings and arrays -> a `Dataset` of train and test `Split`s.

The path is one way, down: `sources.load_dataset` -> `preprocess` (the held-out split, rescaling,
binarization) -> `mnist` + `download`, and `readers` (IDX, image folders, arrays, tables) -> `types`
(the options and `RawData` every reader returns). `dataset` holds `Dataset` and `Split`, which the
layers above use. `torch_data.from_torch` makes a `Dataset` of torch Datasets.
"""

from vaelab.data.dataset import SOURCES, Dataset, Split
from vaelab.data.sources import canonical_source, load_dataset, load_digits, same_source
from vaelab.data.torch_data import from_torch
from vaelab.data.types import DataOptions, RawData

__all__ = [
    "SOURCES",
    "DataOptions",
    "Dataset",
    "RawData",
    "Split",
    "canonical_source",
    "from_torch",
    "load_dataset",
    "load_digits",
    "same_source",
]
