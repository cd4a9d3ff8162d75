"""Resume: bitwise-identical continuation on CPU, metrics repair, graceful stop, CLI rules."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from resume_helpers import cli, metrics, one_thread, same_weights, train_argv, weights  # noqa: F401

from vaelab import VAE, TrainConfig, VAEConfig, load, load_dataset
from vaelab.training.checkpoint import Checkpoint, list_checkpoints, read_latest
from vaelab.training.lock import RunLock
from vaelab.training.loop import TrainingStopped, train
from vaelab.training.signals import GracefulStop

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-epoch run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert cli(*train_argv(out, 4)) == 0
    torch.set_num_threads(before)
    return out


def test_resume_after_epoch_k_is_bitwise_identical(reference, tmp_path):
    out = tmp_path / "run"
    assert cli(*train_argv(out, 2)) == 0
    assert cli("train", "--resume", str(out), "--epochs", "4") == 0
    assert same_weights(weights(out), weights(reference))
    assert metrics(out) == metrics(reference)
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 4
    assert load(out).config.latent_dim == 2


def test_resume_drops_metrics_past_the_checkpoint(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    # A crash after epoch 4's metrics line but before its checkpoint, mid-way through another line:
    shutil.rmtree(out / "checkpoints" / "epoch-000004")
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 5, "train_n')
    assert cli("train", "--resume", str(out)) == 0
    assert metrics(out) == metrics(reference)
    assert same_weights(weights(out), weights(reference))


def test_sigint_stops_after_the_epoch_and_resumes_exactly(reference, tmp_path):
    data = load_dataset("digits")
    cfg = TrainConfig(epochs=4, batch_size=64, seed=0, device="cpu")
    model_cfg = VAEConfig(input_shape=data.shape, latent_dim=2, hidden=(16,))
    out = tmp_path / "run"
    torch.manual_seed(0)
    model = VAE(model_cfg)

    def interrupt(rec: dict) -> None:
        if rec["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    with pytest.raises(TrainingStopped) as stopped:
        train(model, data, cfg, on_epoch=interrupt, progress=False, run_dir=out)
    assert (stopped.value.epoch, stopped.value.signum) == (2, signal.SIGINT)
    assert list_checkpoints(out)[0].name == "epoch-000002"
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored

    torch.manual_seed(123)  # the resumed model's init must not matter
    resumed = VAE(model_cfg)
    ck = Checkpoint.from_blobs(read_latest(out))
    history = train(resumed, data, cfg, progress=False, run_dir=out, resume=ck)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert same_weights(resumed.state_dict(), weights(reference))


def test_second_ctrl_c_raises_at_once_and_sigterm_does_not_escalate():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored


def test_resume_flag_rules(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "metrics.jsonl").read_text()
    assert cli("train", "--resume", str(out), "--lr", "0.5") == 2
    assert "--lr cannot be used with --resume" in capsys.readouterr().err
    assert cli("train", "--resume", str(out), "--epochs", "3") == 2
    assert "below the 4 epochs" in capsys.readouterr().err
    assert cli("train", "--resume", str(out)) == 0  # already complete: nothing retrained
    assert (out / "metrics.jsonl").read_text() == before
    assert cli("train", "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data and --out are required" in err


def test_resume_refuses_a_run_without_checkpoints(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints")
    assert cli("train", "--resume", str(out)) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_unknown_config_version_is_a_clear_error(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    doc = json.loads((out / "config.json").read_text())
    doc["version"] = 7
    (out / "config.json").write_text(json.dumps(doc))
    assert cli("train", "--resume", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config version 7" in err


def test_a_run_dir_in_training_is_locked(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    with RunLock() as lock:
        lock.acquire(out)
        assert cli("train", "--resume", str(out)) == 2
        assert "is being trained by another process" in capsys.readouterr().err
        assert cli(*train_argv(out, 1, "--force")) == 2
    assert (out / "checkpoints" / "epoch-000004").is_dir()  # nothing was touched


def test_force_starts_over_without_old_checkpoints(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    assert cli(*train_argv(out, 1, "--checkpoint-every", "5", "--force")) == 0
    assert [p.name for p in list_checkpoints(out)] == ["epoch-000001", "epoch-000000"]
    assert len(metrics(out)) == 1
