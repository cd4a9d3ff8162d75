"""Path sources: image folders, .npy/.npz arrays, .csv/.tsv tables, and streaming from disk."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data.sources import load_dataset
from vaelab.errors import VaelabError

# --- image folders ---------------------------------------------------------------------------


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def test_class_subfolders_give_labels_and_grey_images_stay_one_channel(tmp_path):
    rng = np.random.default_rng(0)
    pix = {}
    for cls in ("cat", "dog"):
        for i in range(5):
            a = rng.integers(0, 256, (7, 9), dtype=np.uint8)
            pix[(cls, i)] = a
            _png(tmp_path / cls / f"{i}.png", a)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")  # ignored
    data = load_dataset(str(tmp_path), val_fraction=0.2)
    assert data.shape == (1, 7, 9) and data.classes == ["cat", "dog"]
    assert (len(data.train), len(data.test)) == (8, 2)
    x = torch.cat([data.train.x, data.test.x]).numpy()[:, 0]
    y = torch.cat([data.train.y, data.test.y]).numpy()
    want = {(int(c == "dog"), a.tobytes()) for (c, _), a in pix.items()}
    assert {(int(label), img.tobytes()) for label, img in zip(y, x, strict=True)} == want


def test_any_colour_image_makes_the_dataset_rgb(tmp_path):
    grey = np.full((4, 4), 77, np.uint8)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 10
    _png(tmp_path / "a.png", grey)
    _png(tmp_path / "b.jpg", np.full((4, 4, 3), 128, np.uint8))  # a JPEG too
    _png(tmp_path / "c.png", rgb)
    data = load_dataset(str(tmp_path), val_fraction=0.34, split_seed=1)
    assert data.shape == (3, 4, 4) and not data.has_labels
    x = torch.cat([data.train.x, data.test.x])
    assert any(bool((img == 77).all()) for img in x)  # grey repeated over 3 channels
    assert any(img[0].eq(255).all() and img[2].eq(10).all() and img[1].eq(0).all() for img in x)


def test_image_size_resizes_and_centre_crops(tmp_path):
    a = np.zeros((20, 40), np.uint8)
    a[:, 10:30] = 255  # a bright centre square on a wide image
    _png(tmp_path / "x" / "wide.png", a)
    _png(tmp_path / "x" / "small.png", np.full((5, 5), 255, np.uint8))
    data = load_dataset(str(tmp_path / "x"), image_size=(10,))
    assert data.shape == (1, 10, 10)
    wide = next(s.x for s in (data.train, data.test) if s.x.float().mean() < 255)[0, 0]
    assert wide.float().mean() > 200  # the crop kept the centre, not the dark sides
    assert load_dataset(str(tmp_path / "x"), image_size=(6, 12)).shape == (1, 6, 12)


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits(tmp_path):
    _png(tmp_path / "a.png", np.full((3, 3), 65535, np.uint16))
    _png(tmp_path / "b.png", np.full((3, 3), 256 * 100 + 7, np.uint16))
    data = load_dataset(str(tmp_path))
    values = sorted(int(v) for v in torch.cat([data.train.x, data.test.x]).unique())
    assert values == [100, 255]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "no images"),
        (lambda d: (d / "a.png").write_bytes(b""), "zero bytes"),
        (lambda d: (d / "a.png").write_bytes(b"\x89PNG not really"), "cannot read image"),
        (
            lambda d: (
                _png(d / "a.png", np.zeros((3, 3), np.uint8)),
                _png(d / "b.png", np.zeros((4, 3), np.uint8)),
            ),
            "different sizes",
        ),
        (lambda d: (_png(d / "a.png", np.zeros((3, 3), np.uint8)), (d / "sub").mkdir()), "top level"),
        (
            lambda d: ((d / "cls").mkdir(), (d / "cls" / "x.txt").write_text("")),
            "class folder without images",
        ),
    ],
)
def test_image_folder_problems(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(VaelabError, match=message):
        load_dataset(str(tmp_path))


def test_truncated_image_names_the_file(tmp_path):
    good = _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "b.png").write_bytes(good.read_bytes()[:-30])
    with pytest.raises(VaelabError, match=r"b\.png"):
        load_dataset(str(tmp_path))


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# --- arrays ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "want_shape", "want_dtype"),
    [
        ((12, 5), np.float64, (1, 1, 5), torch.float32),
        ((12, 4, 3), np.uint8, (1, 4, 3), torch.uint8),
        ((12, 3, 4, 2), np.float32, (3, 4, 2), torch.float32),
        ((12, 6), np.bool_, (1, 1, 6), torch.uint8),
    ],
)
def test_npy_shapes_and_dtypes(tmp_path, shape, dtype, want_shape, want_dtype):
    a = (np.random.default_rng(0).random(shape) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    np.save(tmp_path / "a.npy", a)
    data = load_dataset(str(tmp_path / "a.npy"))
    assert data.shape == want_shape and data.train.x.dtype == want_dtype
    got = torch.cat([data.train.batch(slice(None)), data.test.batch(slice(None))])
    assert got.shape[0] == 12 and got.min() >= 0.0 and got.max() <= 1.0


def test_npz_with_x_y_and_with_train_test(tmp_path):
    x, y = np.random.default_rng(0).random((20, 4)), np.arange(20) % 3
    np.savez(tmp_path / "a.npz", x=x, labels=y)
    data = load_dataset(str(tmp_path / "a.npz"))
    assert data.has_labels and data.test_split == "val" and len(data.test) == 2
    np.savez_compressed(tmp_path / "b.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    data = load_dataset(str(tmp_path / "b.npz"))
    assert data.test_split == "test" and len(data.test) == 5
    np.testing.assert_array_equal(data.test.y.numpy(), y[15:])
    np.testing.assert_allclose(data.test.batch(slice(None)).numpy().reshape(5, 4), x[15:], rtol=1e-6)
    with pytest.raises(VaelabError, match="does not apply"):
        load_dataset(str(tmp_path / "b.npz"), val_fraction=0.2)


def test_array_label_column(tmp_path):
    a = np.random.default_rng(0).random((10, 4))
    a[:, 2] = np.arange(10) % 2
    np.save(tmp_path / "a.npy", a)
    data = load_dataset(str(tmp_path / "a.npy"), label_column="2")
    assert data.shape == (1, 1, 3) and data.has_labels


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "a.npy", np.array([[0.1, np.nan], [0.2, 0.3]])), "NaN at row 0, column 1"),
        (lambda p: np.save(p / "a.npy", np.array([[0.1, 0.5], [0.2, -np.inf]])), "inf at row 1, column 1"),
        (lambda p: np.save(p / "a.npy", np.array(["a", "b"])), "non-numeric"),
        (lambda p: np.save(p / "a.npy", np.array([{}], dtype=object), allow_pickle=True), "pickle"),
        (lambda p: np.save(p / "a.npy", np.zeros(5)), "expected N x D"),
        (lambda p: (p / "a.npy").write_bytes(_npz_bytes(x=np.zeros((2, 2)))), "not a valid .npy"),
    ],
)
def test_array_problems(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(VaelabError, match=message):
        load_dataset(str(tmp_path / "a.npy"))


def test_npz_problems(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((5, 3)), y=np.zeros(4, int))
    with pytest.raises(VaelabError, match="mismatched image and label counts"):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", weights=np.zeros((5, 3)))
    with pytest.raises(VaelabError, match="no data array"):
        load_dataset(str(tmp_path / "b.npz"))
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(VaelabError, match=r"not a valid \.npz"):
        load_dataset(str(tmp_path / "c.npz"))


# --- tables ----------------------------------------------------------------------------------


def _csv(path, text):
    path.write_text(text)
    return str(path)


def test_csv_with_header_and_class_name_labels(tmp_path):
    rows = "".join(f"{i},{i * 0.5},{'setosa' if i % 2 else 'virginica'}\n" for i in range(20))
    src = _csv(tmp_path / "t.csv", "a,b,species\n" + rows)
    data = load_dataset(src, label_column="species", likelihood="gaussian")
    assert data.shape == (1, 1, 2) and data.classes == ["setosa", "virginica"]
    assert data.meta["options"]["rescale"] == "standardize"  # auto, for a Gaussian likelihood
    x = data.train.batch(slice(None)).reshape(-1, 2).double()
    np.testing.assert_allclose(x.mean(0), [0, 0], atol=1e-6)
    np.testing.assert_allclose(x.std(0, unbiased=False), [1, 1], atol=1e-5)


def test_tsv_without_header_integer_labels_by_index(tmp_path):
    src = _csv(tmp_path / "t.tsv", "".join(f"{i % 3}\t{i}\t{2 * i}\n" for i in range(10)))
    data = load_dataset(src, label_column=0, rescale="minmax")
    assert data.shape == (1, 1, 2) and data.classes is None
    assert sorted(torch.cat([data.train.y, data.test.y]).tolist()) == sorted(i % 3 for i in range(10))
    x = data.train.batch(slice(None)).reshape(-1, 2)
    assert x.min() == 0.0 and x.max() == 1.0  # minmax fitted on train
    test = data.test.batch(slice(None))
    assert test.min() >= 0.0 and test.max() <= 1.0


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("a,b\n1,2\n3,nan\n", {}, "NaN at line 3, column 'b'"),
        ("a,b\n1,inf\n3,4\n", {}, "inf at line 2, column 'b'"),
        ("a,b\n1,2\n3,1e300\n", {}, "beyond float32"),
        ("a,colour\n1,red\n2,blue\n", {}, "column 'colour' is not numeric"),
        ("a,b\n1,2\n3,4\n", {"label_column": "c"}, "no column 'c'"),
        ("a,b\n1,2\n3,4\n", {"label_column": "5"}, "no column '5'"),
        ("a,b\n1,2\n3\n", {}, "line 3: 1 fields, expected 2"),
        ("a,b\n1,2\n3,\n", {}, "empty value"),
        ("a,b\n", {}, "no data rows"),
        ("a,b\n1,0.5\n2,1\n", {"label_column": "b"}, "integers or class names"),
    ],
)
def test_table_problems(tmp_path, text, options, message):
    with pytest.raises(VaelabError, match=message):
        load_dataset(_csv(tmp_path / "t.csv", text), **options)


# --- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("binarize", ["none", "static"])
def test_streamed_npy_gives_the_same_batches_as_in_memory(tmp_path, monkeypatch, binarize):
    a = np.random.default_rng(0).random((40, 1, 3, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    mem = load_dataset(str(tmp_path / "a.npy"), binarize=binarize, rescale="minmax")
    monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "1k")
    disk = load_dataset(str(tmp_path / "a.npy"), binarize=binarize, rescale="minmax")
    assert disk.meta["streamed"] and not mem.meta["streamed"]
    assert isinstance(disk.train.x, np.memmap) and disk.train.x is disk.test.x  # one map, no copy
    for m, d in ((mem.train, disk.train), (mem.test, disk.test)):
        idx = torch.tensor([3, 0, len(m) - 1, 2])
        torch.testing.assert_close(m.batch(idx), d.batch(idx))
        torch.testing.assert_close(m.batch(slice(1, None)), d.batch(slice(1, None)))
    moved = disk.to("cpu")
    assert moved.train.x is moved.test.x


@pytest.mark.parametrize("streamed", [False, True])
def test_head_is_the_first_rows_with_their_binarization(tmp_path, monkeypatch, streamed):
    """`Split.head(n)` (evaluate --limit): the first n rows, labels and static pixels of the split."""
    a = np.random.default_rng(1).random((40, 1, 3, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    if streamed:
        monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "1k")
    data = load_dataset(str(tmp_path / "a.npy"), binarize="static", rescale="minmax")
    assert data.meta["streamed"] == streamed
    for split in (data.train, data.test):
        head = split.head(3)  # the val split holds 4 of the 40 rows
        assert len(head) == 3 and split.head(len(split)) is split and split.head(10**6) is split
        torch.testing.assert_close(head.batch(slice(None)), split.batch(slice(0, 3)))
        torch.testing.assert_close(head.batch(torch.tensor([2, 0])), split.batch(torch.tensor([2, 0])))
        some = split.subsample(3, seed=5)  # random rows, each with its pixels in the whole split
        rows = np.sort(np.random.default_rng(5).choice(len(split), 3, replace=False))
        torch.testing.assert_close(some.batch(slice(None)), split.batch(torch.from_numpy(rows)))
    monkeypatch.delenv("VAELAB_MEMORY_LIMIT", raising=False)
    np.savez(tmp_path / "l.npz", x=a, y=np.arange(40) % 3)
    labelled = load_dataset(str(tmp_path / "l.npz"))
    assert labelled.test.head(3).y.tolist() == labelled.test.y[:3].tolist()


def test_streamed_raw_idx(tmp_path, monkeypatch):
    from datagen import images, write_idx

    write_idx(tmp_path / "train-images-idx3-ubyte", images(30))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images(10, seed=3))
    monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "100")
    data = load_dataset(str(tmp_path))
    assert data.meta["streamed"]
    torch.testing.assert_close(
        data.test.batch(slice(0, 10)), torch.from_numpy(images(10, seed=3)[:, None]) / 255.0
    )


def test_too_big_for_memory_and_not_streamable(tmp_path, monkeypatch):
    np.savez(tmp_path / "a.npz", x=np.zeros((100, 10)))
    monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "1k")
    with pytest.raises(VaelabError, match=r"save it as \.npy"):
        load_dataset(str(tmp_path / "a.npz"))


@pytest.mark.filterwarnings("error")
def test_an_npz_of_uint8_images_loads_without_a_torch_warning(tmp_path):
    """np.load hands back read-only arrays; wrapping one in a tensor made torch warn (non-writable)."""
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.savez(
        tmp_path / "a.npz", x_train=x[:5], y_train=np.zeros(5, np.int64), x_test=x[5:], y_test=np.zeros(3)
    )
    data = load_dataset(str(tmp_path / "a.npz"))
    assert data.train.x.shape == (5, 1, 28, 28)
    assert torch.equal(data.train.x[:, 0], torch.from_numpy(x[:5]))
