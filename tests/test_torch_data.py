"""torch Datasets in and out: `vaelab.data.from_torch`, `vaelab.train` on torch Datasets (gathered and
streamed), and a `Split` in a ``torch.utils.data.DataLoader``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from resume_helpers import one_thread, same_weights  # noqa: F401
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import vaelab
from vaelab import DataError, TrainConfig, VAEConfig, load_dataset
from vaelab.data import from_torch
from vaelab.data.torch_data import TorchRows
from vaelab.models.vae import VAE
from vaelab.training.checkpoint import Checkpoint, read_latest

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:posterior collapse"),  # 2 epochs of a 2-d latent: expected
]


def tensors(digits, split: str = "train", labels: bool = True) -> TensorDataset:
    s = getattr(digits, split)
    return TensorDataset(s.x, s.y) if labels else TensorDataset(s.x)


def pair(digits, labels: bool = True) -> tuple[TensorDataset, TensorDataset]:
    return tensors(digits, "train", labels), tensors(digits, "test", labels)


class Items:
    """A map-style dataset over a list of items, as a user's own torch Dataset would be."""

    def __init__(self, items: list, classes: list[str] | None = None) -> None:
        self.items = items
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def fit(data, epochs: int = 2, seed: int = 0, **kw) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """A tiny VAE trained on ``data`` -> (history without wall times, final weights)."""
    torch.manual_seed(seed)
    fields = {"input_shape": (1, 8, 8), "latent_dim": 2, "hidden": (32,)} | kw.pop("model", {})
    model = VAE(VAEConfig(**fields))
    cfg = TrainConfig(epochs=epochs, batch_size=64, seed=seed, device="cpu", **kw.pop("train", {}))
    history = vaelab.train(model, data, cfg, progress=False, **kw)
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history], model.state_dict()


def test_tensor_dataset_of_the_digits_trains_bitwise_like_load_dataset(digits):
    """Same storage (float32, same rows and labels) -> the same run, bit for bit."""
    data = from_torch(*pair(digits))
    assert not data.meta["streamed"] and data.classes == digits.classes
    assert torch.equal(data.train.x, digits.train.x) and torch.equal(data.test.y, digits.test.y)
    ref_history, ref_weights = fit(digits)
    for given in (data, pair(digits)):
        history, weights = fit(given)
        assert history == ref_history
        assert same_weights(weights, ref_weights)
    history, _ = fit(tensors(digits), test=tensors(digits, "test"))
    assert history == ref_history


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_torch_data_trains_like_gathered(digits, monkeypatch, workers):
    """A torch Dataset too big for memory streams batch by batch in the epoch's seeded order: on
    CPU the same history and weights as the gathered data, with and without DataLoader workers."""
    ref_history, ref_weights = fit(digits, train={"holdout": 0.1})
    data = from_torch(*pair(digits), stream=True, num_workers=workers)
    assert data.meta["streamed"] and isinstance(data.train.x, TorchRows)
    history, weights = fit(data, train={"holdout": 0.1})
    assert history == ref_history
    assert same_weights(weights, ref_weights)
    assert (data.train.x._loader is not None) == (workers > 0)  # workers read the epochs ahead
    monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "64k")  # 1,797 x 256 bytes of float32 do not fit
    assert from_torch(*pair(digits)).meta["streamed"]
    history, _ = fit(pair(digits), train={"holdout": 0.1})
    assert history == ref_history


def test_items_x_only_flat_grey_uint8_and_bool(digits):
    x_only = from_torch(*pair(digits, labels=False))  # TensorDataset(x) items are 1-tuples
    assert not x_only.has_labels and x_only.classes is None and x_only.shape == (1, 8, 8)
    bare = from_torch(Items(list(digits.train.x.numpy())), Items(list(digits.test.x.numpy())))
    assert torch.equal(bare.train.x, digits.train.x) and bare.train.y is None

    flat = from_torch(*(TensorDataset(s.x.reshape(len(s), 64), s.y) for s in (digits.train, digits.test)))
    assert flat.shape == (1, 1, 64) and torch.equal(
        flat.train.x.reshape(-1, 64), digits.train.x.reshape(-1, 64)
    )
    grey = from_torch(*(TensorDataset(s.x[:, 0], s.y) for s in (digits.train, digits.test)))
    assert grey.shape == (1, 8, 8) and torch.equal(grey.train.x, digits.train.x)

    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 3, 4, 5), dtype=np.uint8)
    labels = [int(v) for v in np.arange(20) % 3]
    items = Items([(torch.from_numpy(p), k) for p, k in zip(pixels, labels, strict=True)], ["a", "b", "c"])
    u8 = from_torch(items, items)
    assert u8.train.x.dtype == torch.uint8 and torch.equal(u8.train.x, torch.from_numpy(pixels))
    assert u8.shape == (3, 4, 5) and u8.classes == ["a", "b", "c"]
    assert u8.train.y.tolist() == labels and u8.train.y.dtype == torch.int64
    masks = Items([np.arange(6).reshape(2, 3) > 2] * 4)
    b = from_torch(masks, masks)
    assert b.train.x.dtype == torch.uint8 and set(b.train.x.unique().tolist()) == {0, 255}
    f64 = Items([np.full((1, 2, 2), 0.25)] * 3)
    assert from_torch(f64, f64).train.x.dtype == torch.float32


def test_options_binarize_like_load_dataset(digits):
    static = from_torch(*pair(digits), binarize="static")
    ref = load_dataset("digits", binarize="static")
    assert torch.equal(static.train.x, ref.train.x) and torch.equal(static.test.x, ref.test.x)
    streamed = from_torch(*pair(digits), binarize="static", stream=True)
    assert torch.equal(streamed.train.batch(slice(0, 100)), ref.train.batch(slice(0, 100)))
    assert from_torch(*pair(digits), binarize="dynamic").train.binarize == "dynamic"


def test_labeled_torch_data_trains_a_cvae(digits):
    history, _ = fit(pair(digits), model={"n_classes": 10})
    assert len(history) == 2 and all(np.isfinite(r["test_neg_elbo"]) for r in history)
    with pytest.raises(DataError, match="CVAE"):
        fit(pair(digits, labels=False), model={"n_classes": 10})
    with pytest.raises(DataError, match=r"labels outside 0\.\.4"):
        fit(pair(digits), model={"n_classes": 5})


def bad_cases(digits):
    x = digits.train.x
    good = [(x[i], int(digits.train.y[i])) for i in range(40)]

    def with_item(i: int, item) -> Items:
        items = list(good)
        items[i] = item
        return Items(items)

    nan, inf = x[17].clone(), x[17].clone()
    nan[0, 2, 3], inf[0, 1, 1] = float("nan"), float("inf")
    return {
        "train item 17 has shape (1, 8, 9), item 0 had (1, 8, 8)": with_item(17, (torch.zeros(1, 8, 9), 1)),
        "train item 17 has a NaN value at x[0, 2, 3]": with_item(17, (nan, 1)),
        "train item 17 has a inf value at x[0, 1, 1]": with_item(17, (inf, 1)),
        "train item 17 has label -1; labels must be integers >= 0": with_item(17, (x[17], -1)),
        "train item 17 has label 2.0; labels must be integers >= 0": with_item(17, (x[17], 2.0)),
        "train item 17 has label True": with_item(17, (x[17], True)),
        "train item 17 has label tensor(2.5000)": with_item(17, (x[17], torch.tensor(2.5))),
        "train item 17 has 3 parts; items must be x or (x, y)": with_item(17, (x[17], 1, 2)),
        "train item 17 has no label, item 0 had one": with_item(17, (x[17],)),
        "train item 17 is uint8, item 0 was float32": with_item(17, (x[17].to(torch.uint8), 1)),
        "train item 17: x has dtype <U1; expected numbers": with_item(17, (np.array(["a"]), 1)),
        "train item 17: x has shape (1, 1, 8, 8); expected (C, H, W), (H, W) or (D,)": with_item(
            17, (x[17][None], 1)
        ),
        "train: the dataset is empty": Items([]),
    }


def test_bad_items_give_one_line_errors_naming_the_item(digits):
    test = tensors(digits, "test")
    for needle, train in bad_cases(digits).items():
        with pytest.raises(DataError) as e:
            from_torch(train, test, name="mine")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("'mine' "), msg
        assert needle in msg, (needle, msg)


def test_bad_datasets_give_one_line_errors(digits):
    train, test = pair(digits)

    class Stream(IterableDataset):
        def __iter__(self):
            yield from train

    odd = TensorDataset(torch.zeros(5, 1, 8, 9), torch.zeros(5, dtype=torch.int64))
    twice = TensorDataset(digits.train.x * 2, digits.train.y)
    cases = [
        (lambda: from_torch(Stream(), test), "an IterableDataset cannot be indexed"),
        (lambda: from_torch(train, odd), "test items have shape (1, 8, 9), train items (1, 8, 8)"),
        (
            lambda: from_torch(train, tensors(digits, "test", False)),
            "train items have labels (x, y) but test",
        ),
        (lambda: from_torch(twice, test, likelihood="bernoulli"), "outside [0, 1]"),
        (lambda: from_torch(twice, test, binarize="static"), "needs values in [0, 1]"),
        (lambda: from_torch(train, test, binarize="sometimes"), "must be one of none, dynamic, static"),
        (lambda: from_torch(train, test, num_workers=-1), "num_workers must be >= 0"),
        (
            lambda: from_torch(train, test, classes=["a", "b"]),
            "classes has 2 names but the labels go up to 9",
        ),
        (lambda: fit(train), "pass test="),
        (lambda: fit(digits, test=test), "a vaelab Dataset holds its own test split"),
        (lambda: fit((train, test, test)), "(train, test)"),
        (
            lambda: fit(pair(digits), model={"input_shape": (1, 1, 64)}),
            "but the model's input_shape is (1, 1, 64)",
        ),
        (lambda: fit((twice, test), model={"likelihood": "bernoulli"}), "outside [0, 1]"),
    ]
    for call, needle in cases:
        with pytest.raises(DataError) as e:
            call()
        assert "\n" not in str(e.value) and needle in str(e.value), (needle, str(e.value))
    assert from_torch(twice, test, rescale="minmax").meta["range"] == (0.0, 1.0)


@pytest.mark.parametrize("binarize", ["none", "static", "dynamic"])
def test_a_split_is_a_torch_dataset_for_a_dataloader(binarize):
    data = load_dataset("digits", binarize=binarize)
    split = data.fixed_train() if binarize == "dynamic" else data.train  # fixed pixels: comparable
    xs, ys = zip(*DataLoader(split, batch_size=100), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (1500, 1, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x, split.batch(slice(None))) and torch.equal(y, split.y)
    first = split[0]
    assert isinstance(first, tuple) and torch.equal(first[0], x[0]) and torch.equal(split[-1][0], x[-1])
    with pytest.raises(IndexError):
        split[len(split)]
    if binarize == "dynamic":  # the split itself draws fresh pixels on every read
        torch.manual_seed(0)
        a = data.train[5][0]
        assert set(a.unique().tolist()) <= {0.0, 1.0}
    # x only when unlabeled, and a split goes back in through from_torch unchanged
    bare = data.train.__class__(data.train.x, None)
    assert isinstance(bare[0], torch.Tensor)
    back = from_torch(split, data.test)
    assert torch.equal(back.train.x, split.batch(slice(None))) and torch.equal(back.train.y, split.y)


def test_a_streamed_split_in_a_dataloader_with_workers(digits):
    data = from_torch(*pair(digits), stream=True)
    x, y = next(iter(DataLoader(data.test, batch_size=50, num_workers=1)))
    assert torch.equal(x, digits.test.x[:50]) and torch.equal(y, digits.test.y[:50])


@pytest.mark.parametrize("stream", [False, True])
def test_resume_a_torch_dataset_run_bitwise(digits, tmp_path, stream):
    ref_history, ref_weights = fit(pair(digits), epochs=4)
    out = tmp_path / "run"
    fit(from_torch(*pair(digits), stream=stream), epochs=2, run_dir=out)
    resume = Checkpoint.from_blobs(read_latest(out))
    data = from_torch(*pair(digits), stream=stream)
    history, weights = fit(data, epochs=4, run_dir=out, resume=resume)
    assert history == ref_history
    assert same_weights(weights, ref_weights)


@pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")
def test_a_run_trained_on_a_torch_dataset_names_no_source_it_did_not_train_on(tmp_path):
    import json

    from datagen import assert_one_line_error, run_cli

    digits = load_dataset("digits")
    pair = tuple(TensorDataset(s.batch(slice(None), binarize=False)) for s in (digits.train, digits.test))
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)))
    vaelab.train(model, pair, TrainConfig(epochs=1, device="cpu"), progress=False, run_dir=tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["train"]["data"] == "torch:TensorDataset"
    result = run_cli(["evaluate", str(tmp_path / "run"), "--no-save"])
    assert_one_line_error(result, "trained on a torch Dataset (TensorDataset)", "pass --data SOURCE")
    rc, out, _ = run_cli(["evaluate", str(tmp_path / "run"), "--data", "digits", "--importance-samples", "5"])
    assert rc == 0 and "nll" in out.lower()
