"""The IDX reader and IDX folders as a SOURCE."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from datagen import idx_bytes, images, labels, write_idx

from vaelab.data.readers.idx import find_idx_files, parse_idx, read_idx
from vaelab.data.sources import load_dataset
from vaelab.errors import VaelabError


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("shape", [(7,), (4, 3), (3, 4, 5), (2, 3, 4, 5)])
def test_roundtrip_every_type_and_rank(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 50).astype(dtype)
    np.testing.assert_array_equal(parse_idx(idx_bytes(arr)), arr)
    for gz in (False, True):
        got, digest = read_idx(write_idx(tmp_path / f"a{gz}", arr, gz=gz))
        np.testing.assert_array_equal(got, arr)
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative and digest is None


def test_sha256_is_of_the_raw_content_for_raw_and_gzipped_files(tmp_path):
    import hashlib

    arr = images(4)
    want = hashlib.sha256(idx_bytes(arr)).hexdigest()
    for gz in (False, True):
        _, digest = read_idx(write_idx(tmp_path / f"f{gz}", arr, gz=gz), sha256=want)
        assert digest == want
    with pytest.raises(VaelabError, match="sha256 mismatch"):
        read_idx(tmp_path / "fTrue", sha256="0" * 64)


def test_big_raw_files_are_memory_mapped(tmp_path):
    arr = images(50)
    got, _ = read_idx(write_idx(tmp_path / "x", arr), limit=100)
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, arr)


GOOD = idx_bytes(images(3))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an IDX file"),
        (b"\x00\x00", "not an IDX file"),
        (b"\x01\x00\x08\x03" + GOOD[4:], "wrong magic"),
        (b"\x00\x00\x07\x03" + GOOD[4:], "wrong magic"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (GOOD[:10], "truncated IDX file"),
        (GOOD[:-1], "truncated IDX file"),
        (GOOD + b"\x00", "bytes after"),
        (gzip.compress(GOOD)[:-12], "corrupt gzip"),
        (b"\x1f\x8b" + b"\x00" * 30, "corrupt gzip"),
    ],
)
def test_malformed_idx_is_one_clean_error(tmp_path, data, message):
    with pytest.raises(VaelabError, match=message):
        parse_idx(data, "f")
    path = tmp_path / "f-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(VaelabError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_gzip_header_claiming_more_than_the_file_can_hold(tmp_path):
    lying = b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") * 3  # 2e14 bytes from a tiny file
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(lying))
    with pytest.raises(VaelabError, match="header claims"):
        read_idx(path)


def _folder(tmp_path, n_train=30, n_test=10, gz=False):
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", images(n_train), gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels(n_train), gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", images(n_test, seed=5), gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels(n_test, seed=6), gz)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_folder_with_train_and_t10k_uses_them_as_splits(tmp_path, gz):
    data = load_dataset(str(_folder(tmp_path, gz=gz)))
    assert data.shape == (1, 6, 5) and data.test_split == "test"
    assert (len(data.train), len(data.test)) == (30, 10)
    np.testing.assert_array_equal(data.train.x.numpy()[:, 0], images(30))
    np.testing.assert_array_equal(data.test.y.numpy(), labels(10, seed=6))
    assert data.train.x.dtype == np.uint8 or str(data.train.x.dtype) == "torch.uint8"


def test_folder_with_one_set_holds_out_a_seeded_validation_split(tmp_path):
    write_idx(tmp_path / "emnist-images-idx3-ubyte", images(40))
    write_idx(tmp_path / "emnist-labels-idx1-ubyte", labels(40))
    data = load_dataset(str(tmp_path), val_fraction=0.25, split_seed=3)
    assert data.test_split == "val" and (len(data.train), len(data.test)) == (30, 10)
    assert data.meta["options"]["val_fraction"] == 0.25 and data.meta["options"]["split_seed"] == 3
    # every example lands in exactly one split
    rows = np.concatenate([data.train.x.numpy(), data.test.x.numpy()])
    assert sorted(map(bytes, rows)) == sorted(map(bytes, images(40)[:, None]))


def test_raw_copy_preferred_over_gzip(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", images(3))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images(3), gz=True)
    assert find_idx_files(tmp_path)["train"]["images"].name == "train-images-idx3-ubyte"


def test_single_idx_file_as_source_finds_its_labels(tmp_path):
    write_idx(tmp_path / "x-images.idx3-ubyte", images(12))
    write_idx(tmp_path / "x-labels.idx1-ubyte", labels(12))
    data = load_dataset(str(tmp_path / "x-images.idx3-ubyte"))
    assert data.has_labels and len(data.train) + len(data.test) == 12


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: write_idx(d / "train-labels-idx1-ubyte", labels(29)), "mismatched image and label counts"),
        (lambda d: write_idx(d / "train-labels-idx1-ubyte", images(30)), "one-dimensional"),
        (lambda d: write_idx(d / "train-images-idx3-ubyte", labels(30)), "2 to 4 dimensions"),
    ],
)
def test_folder_problems(tmp_path, make, message):
    _folder(tmp_path)
    make(tmp_path)
    with pytest.raises(VaelabError, match=message):
        load_dataset(str(tmp_path))


def test_folder_with_unrelated_sets_is_ambiguous(tmp_path):
    write_idx(tmp_path / "a-images-idx3-ubyte", images(3))
    write_idx(tmp_path / "b-images-idx3-ubyte", images(3))
    with pytest.raises(VaelabError, match="several prefixes"):
        load_dataset(str(tmp_path))
