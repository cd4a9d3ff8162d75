"""TensorBoard logging: `vaelab train --tensorboard DIR` and `TensorBoardLogger` (training/tensorboard.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import assert_one_line_error, run_cli
from resume_helpers import same_weights, weights

import vaelab
from vaelab import VAE, TensorBoardLogger, TrainConfig, VAEConfig, VaelabError, train
from vaelab.training.tensorboard import SAMPLES_TAG, TAGS

pytest.importorskip("tensorboard")  # the test extra installs it; this module is meaningless without it

TINY = ["--data", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "64", "--device", "cpu"]
ALWAYS = {"train_neg_elbo", "train_recon", "train_kl", "lr", "seconds", "test_neg_elbo", "recon", "kl"}


def events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_logged(log_dir: Path, records: list[dict], images: bool = True) -> None:
    """Every scalar of TAGS that the records hold is logged once per epoch with the record's value
    (as the float32 TensorBoard stores), and the sample grid is there."""
    acc = events(log_dir)
    expected = {tag for key, tag in TAGS.items() if key in records[0]}
    assert expected >= {TAGS[k] for k in ALWAYS | {"active_units"}}
    assert set(acc.Tags()["scalars"]) == expected
    for key, tag in TAGS.items():
        if tag not in expected:
            continue
        logged = acc.Scalars(tag)
        assert [e.step for e in logged] == [r["epoch"] for r in records], tag
        assert [np.float32(e.value) for e in logged] == [np.float32(r[key]) for r in records], tag
    assert (SAMPLES_TAG in acc.Tags()["images"]) == images


def test_cli_tensorboard_logs_what_metrics_jsonl_holds(tmp_path):
    out, tb = tmp_path / "run", tmp_path / "tb"
    rc, _, err = run_cli(
        ["train", *TINY, "--out", str(out), "--epochs", "3", "--no-progress", "--tensorboard", str(tb)]
    )
    assert rc == 0, err
    records = metrics(out)
    assert len(records) == 3
    assert_logged(tb, records)
    # The grid of the last epoch: 64 tiles of 8x8 digits (with TensorBoard's 2 px padding), a PNG.
    image = events(tb).Images(SAMPLES_TAG)[-1]
    assert image.step == 3 and image.encoded_image_string.startswith(b"\x89PNG")


def test_python_callback_logs_and_does_not_change_training(tmp_path, digits, make_vae, train_config):
    tb = tmp_path / "tb"
    cfg = train_config(epochs=3)
    plain = make_vae()
    train(plain, digits, cfg, progress=False, run_dir=tmp_path / "plain")
    logged = make_vae()
    with TensorBoardLogger(tb, sample_every=2) as logger:
        history = train(logged, digits, cfg, progress=False, run_dir=tmp_path / "logged", callbacks=[logger])
    assert logger.writer is None  # closed by on_train_end
    assert same_weights(weights(tmp_path / "plain"), weights(tmp_path / "logged"))
    assert history == metrics(tmp_path / "logged")
    assert_logged(tb, history)
    assert [e.step for e in events(tb).Images(SAMPLES_TAG)] == [2, 3]  # every 2 epochs, and the last


def test_the_samples_are_the_same_z_each_epoch_and_a_cvae_has_labels(make_vae):
    model = make_vae(n_classes=10)
    logger = TensorBoardLogger("unused", seed=3)  # nothing is written before training starts
    logger.set_model(model, TrainConfig(epochs=1))
    a, b = logger.samples(), logger.samples()
    assert a.shape == (64, 1, 8, 8) and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert model.training  # the mode it had
    assert not Path("unused").exists()
    flat = make_vae(input_shape=(1, 1, 16))
    logger.set_model(flat, TrainConfig(epochs=1))
    assert logger.samples().shape == (64, 1, 4, 4)  # flat data shows as square tiles


def test_resume_keeps_the_log_continuous(tmp_path):
    out, tb = tmp_path / "run", tmp_path / "tb"
    base = ["train", "--no-progress", "--tensorboard", str(tb)]
    assert run_cli([*base, *TINY, "--out", str(out), "--epochs", "2"])[0] == 0
    rc, _, err = run_cli([*base, "--resume", str(out), "--epochs", "3"])
    assert rc == 0, err
    assert_logged(tb, metrics(out))


def test_sample_every_is_checked():
    with pytest.raises(VaelabError, match="sample_every must be an integer >= 0"):
        TensorBoardLogger("tb", sample_every=-1)


def test_missing_tensorboard_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` then raises ImportError
    out = tmp_path / "run"
    tb = str(tmp_path / "tb")
    result = run_cli(["train", *TINY, "--out", str(out), "--epochs", "1", "--tensorboard", tb])
    line = assert_one_line_error(result, "--tensorboard needs the tensorboard package")
    assert line.endswith('pip install "vaelab[tensorboard]"')
    assert not out.exists() and not (tmp_path / "tb").exists()  # failed before writing anything
    with pytest.raises(VaelabError, match=r"^TensorBoardLogger needs the tensorboard package: pip install"):
        TensorBoardLogger(tmp_path / "tb")


def test_only_rank_0_writes(tmp_path, make_vae, monkeypatch):
    from vaelab.training import distributed

    logger = TensorBoardLogger(tmp_path / "tb")
    monkeypatch.setattr(distributed, "context", lambda: distributed.Context(rank=1, world_size=2))
    logger.set_model(make_vae(), TrainConfig(epochs=1))
    logger.on_train_start([])
    logger.on_epoch_end({"epoch": 1, "lr": 1e-3})
    logger.on_train_end([])
    assert not (tmp_path / "tb").exists()


def test_train_closes_callbacks_when_training_fails(digits, tmp_path, monkeypatch):
    from vaelab.training.engine import Engine

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Engine, "run_epoch", boom)
    logger = TensorBoardLogger(tmp_path / "tb")
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)))
    with pytest.raises(RuntimeError, match="disk on fire"):
        vaelab.train(model, digits, TrainConfig(epochs=2, device="cpu"), progress=False, callbacks=[logger])
    assert logger.writer is None  # closed by train, not left open


@pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")
def test_flat_data_and_an_early_stop_still_get_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rng = np.random.default_rng(0)
    x = rng.random((300, 13)).astype(np.float32)  # 13 features: not a square
    np.save(tmp_path / "t.npy", x)
    data = vaelab.load_dataset(str(tmp_path / "t.npy"))
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=data.shape, latent_dim=2, hidden=(8,)))
    logger = TensorBoardLogger(tmp_path / "tb", sample_every=10)
    config = TrainConfig(epochs=50, device="cpu", holdout=0.2, early_stop=1, lr=0.05)
    history = vaelab.train(model, data, config, progress=False, callbacks=[logger])
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    images = events.Images(SAMPLES_TAG)
    assert images[-1].step == history[-1]["epoch"] < 50  # the early stop's last epoch has a grid
    assert (images[-1].width, images[-1].height) == (32, 32)  # 8 x 8 tiles, 13 values padded to 4 x 4
