"""What a new user trips over: numbers that must repeat under a seed, and equal data read equally
whatever its file format."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from vaelab import VAE, TrainConfig, VAEConfig, evaluate_model, load_dataset, train


def _write_csv(path, header: list[str], rows: np.ndarray) -> None:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_every_number_evaluate_reports_repeats_for_a_fixed_seed():
    data = load_dataset("digits", binarize="dynamic")
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=data.shape, latent_dim=2, hidden=(32,)))
    train(model, data, TrainConfig(epochs=2, batch_size=128), progress=False)
    runs = []
    for _ in range(3):
        torch.manual_seed(len(runs))  # the global RNG differs between calls: no number may depend on it
        r = evaluate_model(model, data, importance_samples=20, seed=5)
        r.pop("nll_seconds")
        runs.append(r)
    assert runs[0] == runs[1] == runs[2]
    assert {"nll", "probe_accuracy", "knn_accuracy", "kl_per_dim"} <= set(runs[0])


def test_a_csv_label_column_is_taken_as_labels_and_said_so(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    rows = np.column_stack([rng.random((40, 4)).round(3), y])
    _write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "Label"], rows)
    with pytest.warns(UserWarning, match="using column 'Label' as the labels"):
        data = load_dataset(str(tmp_path / "t.csv"), likelihood="gaussian")
    assert data.shape == (1, 1, 4)
    got = torch.cat([data.train.y, data.test.y]).sort().values
    assert torch.equal(got, torch.from_numpy(np.sort(y)))
    with warnings.catch_warnings():  # naming it is no surprise: no warning
        warnings.simplefilter("error")
        named = load_dataset(str(tmp_path / "t.csv"), likelihood="gaussian", label_column="Label")
    assert named.shape == (1, 1, 4) and torch.equal(named.train.y, data.train.y)


def test_a_y_column_of_measurements_stays_a_feature(tmp_path):
    xy = np.random.default_rng(1).random((30, 2)).round(4)
    _write_csv(tmp_path / "xy.csv", ["x", "y"], xy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset(str(tmp_path / "xy.csv"), likelihood="gaussian")
    assert data.shape == (1, 1, 2) and data.train.y is None


def test_csv_pixels_0_to_255_read_like_the_same_uint8_array(tmp_path):
    rng = np.random.default_rng(2)
    px = rng.integers(0, 256, (60, 16)).astype(np.uint8)
    labels = rng.integers(0, 4, 60)
    _write_csv(tmp_path / "px.csv", ["label", *(f"p{i}" for i in range(16))], np.column_stack([labels, px]))
    np.savez(tmp_path / "px.npz", x=px, y=labels)
    with pytest.warns(UserWarning, match="as the labels"):
        from_csv = load_dataset(str(tmp_path / "px.csv"))
    from_npz = load_dataset(str(tmp_path / "px.npz"))
    for a, b in ((from_csv.train, from_npz.train), (from_csv.test, from_npz.test)):
        torch.testing.assert_close(a.batch(slice(None)), b.batch(slice(None)), rtol=0, atol=0)
        assert torch.equal(a.y, b.y)
    assert from_csv.train.batch(slice(None)).max() <= 1.0


def test_csv_binary_cells_stay_0_and_1(tmp_path):
    bits = np.random.default_rng(3).integers(0, 2, (20, 8))
    _write_csv(tmp_path / "bits.csv", [f"b{i}" for i in range(8)], bits)
    data = load_dataset(str(tmp_path / "bits.csv"))
    values = torch.cat([data.train.batch(slice(None)), data.test.batch(slice(None))]).unique()
    assert values.tolist() == [0.0, 1.0]


def test_encoding_all_of_a_one_file_source_keeps_the_file_order(tmp_path):
    from vaelab.evaluation.features import encode_dataset, encode_split, write_features

    rng = np.random.default_rng(4)
    x = rng.random((50, 6)).round(4)
    _write_csv(tmp_path / "t.csv", [f"f{i}" for i in range(6)], x)
    data = load_dataset(str(tmp_path / "t.csv"), likelihood="gaussian")
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=data.shape, latent_dim=2, hidden=(8,), likelihood="gaussian"))
    feats = encode_dataset(model, data, "all")
    assert feats["index"].tolist() == list(range(50))
    assert sorted(set(feats["split"])) == ["test", "train"]
    # Row i of the features is row i of the file.
    rows = data.meta["source_rows"]
    mu_train, _ = encode_split(model, data.train)
    np.testing.assert_array_equal(feats["mu"][rows["train"]], mu_train)
    held = encode_dataset(model, data, "test")
    assert held["index"].tolist() == rows["val"].tolist() and set(held["split"]) == {"test"}
    write_features(feats, tmp_path / "f.csv")
    header = (tmp_path / "f.csv").read_text().splitlines()[0].split(",")
    assert header == ["mu_0", "mu_1", "logvar_0", "logvar_1", "index", "split"]
