"""Fuzz: malformed bytes at the IDX and .npy readers give a clean `VaelabError`, nothing else.

Each reader sees 1,000+ inputs: random bytes, and valid files that were truncated, extended or
had bytes overwritten (which reach deeper into the parsers than noise does).
"""

from __future__ import annotations

import gzip
import io

import numpy as np
from datagen import idx_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab.data.readers.arrays import open_npy, parse_npy
from vaelab.data.readers.idx import parse_idx, read_idx
from vaelab.errors import VaelabError

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


SEEDS_IDX = [
    idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
    idx_bytes(np.arange(6, dtype=np.float32).reshape(3, 2)),
    idx_bytes(np.arange(5, dtype=np.int16)),
    gzip.compress(idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4)), mtime=0),
]
SEEDS_NPY = [
    _npy_bytes(np.arange(12, dtype=np.float32).reshape(3, 4)),
    _npy_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
    _npy_bytes(np.ones((2, 2), dtype=bool)),
]


@st.composite
def malformed(draw, seeds: list[bytes]) -> bytes:
    """Random bytes, or a valid file truncated / extended / with a few bytes overwritten."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(seeds)))
    how = draw(st.sampled_from(["truncate", "extend", "overwrite"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if how == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=20))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


def _only_clean_errors(read, data: bytes) -> None:
    try:
        read(data)
    except VaelabError as e:
        assert "\n" not in str(e)


@FUZZ
@given(data=malformed(SEEDS_IDX))
def test_idx_parser_bytes(data):
    _only_clean_errors(lambda b: parse_idx(b, "fuzz"), data)


@FUZZ
@given(data=malformed(SEEDS_IDX))
def test_idx_reader_files(tmp_path, data):
    path = tmp_path / "fuzz-images-idx3-ubyte"
    path.write_bytes(data)
    _only_clean_errors(lambda _: read_idx(path, limit=16), data)


@FUZZ
@given(data=malformed(SEEDS_NPY))
def test_npy_reader_files(tmp_path, data):
    path = tmp_path / "fuzz.npy"
    path.write_bytes(data)
    _only_clean_errors(lambda _: np.asarray(open_npy(path)), data)


@FUZZ
@given(data=malformed(SEEDS_NPY))
def test_npy_parser_bytes(data):
    _only_clean_errors(lambda b: parse_npy(b, "fuzz"), data)
