"""The data flags through the CLI: every bad input is exit code 2 and one line naming the file;
options recorded by train are reused by evaluate; one epoch on the real Fashion-MNIST."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datagen import assert_one_line_error, images, labels, run_cli, write_idx
from PIL import Image

TINY = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--batch-size", "64", "--no-progress"]


def _train(source: str, out: Path, *extra: str):
    return run_cli(["train", "--data", source, "--out", str(out), *TINY, *extra])


def _idx_folder(d: Path) -> Path:
    d.mkdir(exist_ok=True)
    write_idx(d / "train-images-idx3-ubyte", images(30))
    write_idx(d / "train-labels-idx1-ubyte", labels(30))
    write_idx(d / "t10k-images-idx3-ubyte", images(10, seed=4))
    write_idx(d / "t10k-labels-idx1-ubyte", labels(10, seed=5))
    return d


def _png(path: Path, shape=(5, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)


def _short_idx(d: Path) -> Path:
    p = _idx_folder(d) / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    return p


def _wrong_magic(d: Path) -> Path:
    p = _idx_folder(d) / "t10k-images-idx3-ubyte"
    p.write_bytes(b"\x00\x01" + p.read_bytes()[2:])
    return p


def _wrong_dims(d: Path) -> Path:
    p = _idx_folder(d) / "train-labels-idx1-ubyte"
    write_idx(p, images(30))
    return p


def _mismatch(d: Path) -> Path:
    p = _idx_folder(d) / "t10k-labels-idx1-ubyte"
    write_idx(p, labels(9))
    return p


def _empty_folder(d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


def _zero_byte_image(d: Path) -> Path:
    _png(d / "imgs" / "a.png")
    (d / "imgs" / "b.png").write_bytes(b"")
    return d / "imgs" / "b.png"


def _unreadable_image(d: Path) -> Path:
    _png(d / "imgs" / "a.png")
    (d / "imgs" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return d / "imgs" / "b.jpg"


def _mixed_sizes(d: Path) -> Path:
    _png(d / "imgs" / "a.png", (5, 5))
    _png(d / "imgs" / "b.png", (6, 5))
    return d / "imgs"


def _nan_array(d: Path) -> Path:
    a = np.random.default_rng(0).random((20, 4))
    a[7, 2] = np.nan
    np.save(d / "x.npy", a)
    return d / "x.npy"


def _inf_csv(d: Path) -> Path:
    (d / "t.csv").write_text("a,b\n0.1,0.2\n0.3,inf\n")
    return d / "t.csv"


def _non_numeric_csv(d: Path) -> Path:
    (d / "t.csv").write_text("a,b,colour\n0.1,0.2,red\n0.3,0.4,blue\n")
    return d / "t.csv"


def _outside_unit_interval(d: Path) -> Path:
    np.save(d / "x.npy", np.linspace(0, 3, 40).reshape(20, 2))
    return d / "x.npy"


BAD = [
    ("truncated IDX", _short_idx, [], "truncated IDX file"),
    ("wrong magic", _wrong_magic, [], "wrong magic"),
    ("wrong dims", _wrong_dims, [], "one-dimensional"),
    ("image/label counts", _mismatch, [], "mismatched image and label counts"),
    ("empty folder", _empty_folder, [], "no images"),
    ("zero-byte image", _zero_byte_image, [], "zero bytes"),
    ("unreadable image", _unreadable_image, [], "cannot read image"),
    ("mixed sizes", _mixed_sizes, [], "--image-size"),
    ("NaN in array", _nan_array, [], "NaN at row 7, column 2"),
    ("inf in CSV", _inf_csv, [], "inf at line 3, column 'b'"),
    ("non-numeric CSV column", _non_numeric_csv, [], "column 'colour' is not numeric"),
    ("missing label column", _non_numeric_csv, ["--label-column", "kind"], "no column 'kind'"),
    ("outside [0, 1] for Bernoulli", _outside_unit_interval, [], "--rescale"),
]


@pytest.mark.parametrize(("case", "make", "flags", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_exit_2_and_one_line_naming_the_file(tmp_path, case, make, flags, message):
    bad = make(tmp_path)  # the file at fault; the SOURCE is it, or the folder holding it
    source = bad if bad.is_dir() or bad.suffix in (".npy", ".csv") else bad.parent
    line = assert_one_line_error(_train(str(source), tmp_path / "run", *flags), message)
    assert str(bad) in line
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_outside_unit_interval_trains_with_rescale(tmp_path):
    src = _outside_unit_interval(tmp_path)
    rc, _, err = _train(str(src), tmp_path / "run", "--rescale")
    assert rc == 0, err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["data_options"]["rescale"] == "minmax"


def test_train_records_options_and_evaluate_reuses_them(tmp_path, monkeypatch):
    rows = "".join(f"{i % 4},{np.sin(i):.4f},{np.cos(i):.4f},{i / 50:.3f}\n" for i in range(50))
    (tmp_path / "t.csv").write_text("label,a,b,c\n" + rows)
    monkeypatch.chdir(tmp_path)
    flags = [
        "--likelihood",
        "gaussian",
        "--label-column",
        "label",
        "--val-fraction",
        "0.2",
        "--split-seed",
        "4",
    ]
    rc, out, err = _train("t.csv", tmp_path / "run", *flags)
    assert rc == 0, err
    train_cfg = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert train_cfg["data"] == str((tmp_path / "t.csv").resolve())  # works from any directory
    opts = train_cfg["data_options"]
    assert opts == {
        "label_column": "label",
        "val_fraction": 0.2,
        "split_seed": 4,
        "binarize": "none",
        "rescale": "standardize",
    }
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # another spelling of the same file: same options, same split, so the same test -ELBO
    rc, out, err = run_cli(
        ["evaluate", "run", "--data", str(tmp_path / "t.csv"), "--seed", "12345", "--json", "e.json"]
    )
    assert rc == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n"] == 10 and result["split"] == "test"
    assert result["neg_elbo"] == pytest.approx(last["test_neg_elbo"], rel=1e-5)
    rc, out, err = run_cli(["evaluate", "run", "--data", "t.csv", "--val-fraction", "0.5"])
    assert rc == 0 and "(n=25)" in out, err  # a flag given overrides the record
    rc, _, err = run_cli(["encode", "run", "--data", "t.csv", "--out", "z.npz"])
    assert rc == 0, err
    assert len(np.load(tmp_path / "z.npz")["mu"]) == 50


def test_idx_folder_binarized_through_train_evaluate_and_reconstruct(tmp_path):
    src = str(_idx_folder(tmp_path / "idx"))
    rc, out, err = _train(src, tmp_path / "run", "--binarize", "dynamic")
    assert rc == 0, err
    rc, out, err = run_cli(["evaluate", str(tmp_path / "run"), "--data", src])
    assert rc == 0 and "test (n=10)" in out, err
    rc, out, err = run_cli(["reconstruct", str(tmp_path / "run"), "--data", src, "-n", "4"])
    assert rc == 0 and (tmp_path / "run" / "reconstructions_n4.png").is_file(), err
    # plot defaults to the recorded (absolute) source and its options
    rc, out, err = run_cli(["plot", str(tmp_path / "run"), "--kind", "recon", "-n", "4"])
    assert rc == 0 and (tmp_path / "run" / "figures" / "recon.png").is_file(), err
    line = assert_one_line_error(
        run_cli(["plot", str(tmp_path / "run"), "--kind", "recon", "--val-fraction", "0.5", "--force"])
    )
    assert "--val-fraction does not apply" in line


def test_flag_values_are_checked_by_the_parser(tmp_path):
    for flags, needle in (
        (["--val-fraction", "1"], "--val-fraction"),
        (["--image-size", "0"], "--image-size"),
        (["--image-size", "3x4x5"], "--image-size"),
        (["--binarize", "maybe"], "--binarize"),
    ):
        assert_one_line_error(_train("digits", tmp_path / "r", *flags), needle)
    assert_one_line_error(_train("digits", tmp_path / "r", "--image-size", "8"), "does not apply")


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs `apt-get install dataset-fashion-mnist` (.ci/run installs it)",
)
def test_one_epoch_on_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # use the system copy, no download
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    out = tmp_path / "run"
    rc, stdout, err = run_cli([
        "train", "--data", "fashion-mnist", "--out", str(out), "--epochs", "1", "--batch-size", "1000",
        "--hidden", "32", "--latent-dim", "2", "--lr", "0.003", "--binarize", "dynamic", "--no-progress",
    ])  # fmt: skip
    assert rc == 0, err
    assert "60000 train / 10000 test, shape (1, 28, 28)" in stdout
    rec = json.loads((out / "metrics.jsonl").read_text())
    # 784 fair coins cost 543 nats; one epoch must already beat that clearly
    assert 100 < rec["test_neg_elbo"] < 450
    assert not (tmp_path / "cache").exists()


def test_train_and_evaluate_on_a_streamed_npy(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((300, 1, 4, 4)).astype(np.float32))
    monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "4k")  # the file is 19 kB: memory-mapped
    rc, out, err = _train(str(tmp_path / "x.npy"), tmp_path / "run", "--binarize", "static")
    assert rc == 0, err
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    rc, out, err = run_cli(
        ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "x.npy"), "--seed", "12345"]
    )
    assert rc == 0 and "test (n=30)" in out, err
    assert json.loads((tmp_path / "run" / "evaluate.json").read_text())["split"] == "test"
    monkeypatch.delenv("VAELAB_MEMORY_LIMIT")  # in memory now: the very same numbers
    rc, out2, err = run_cli(
        ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "x.npy"), "--seed", "12345", "--no-save"]
    )
    # wall times differ run to run, and only the first run wrote evaluate.json
    untimed = [re.sub(r"\d+\.\ds\b|wrote .*\n|updated the model card .*\n", "", o) for o in (out, out2)]
    assert rc == 0 and untimed[0] == untimed[1] and f"{rec['test_neg_elbo']:.3f}" in out, err
