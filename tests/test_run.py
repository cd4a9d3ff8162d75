"""`Run` from Python: create, lock, resume, metrics.jsonl; `train`'s callbacks and global-state options;
`eval_mode`; and the run lock between two real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from resume_helpers import cli, one_thread, same_weights, train_argv, weights  # noqa: F401

from vaelab import Callback, Run, TrainConfig, VaelabError, load, train
from vaelab.evaluation.elbo import evaluate_elbo
from vaelab.models.vae import eval_mode
from vaelab.training.checkpoint import list_checkpoints

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning"),
]


def _cfg(epochs: int, **fields) -> TrainConfig:
    return TrainConfig(data="digits", epochs=epochs, batch_size=64, seed=0, device="cpu", **fields)


def _train(make_vae, digits, out, epochs: int, **kwargs) -> list[dict]:
    return train(make_vae(hidden=(16,)), digits, _cfg(epochs), progress=False, run_dir=out, **kwargs)


@pytest.mark.slow
def test_python_training_writes_metrics_that_the_report_reads(make_vae, digits, tmp_path, capsys):
    out = tmp_path / "run"
    history = _train(make_vae, digits, out, 2)
    run = Run.open(out)
    assert run.metrics() == json.loads(json.dumps(history))  # metrics.jsonl: one line per epoch
    assert run.train_config.epochs == 2 and run.model_config.hidden == (16,)
    assert same_weights(weights(out), load(out).state_dict())
    assert cli("plot", str(out), "--kind", "curves", "--out", str(tmp_path / "c.png")) == 0  # the report's
    assert "curves" in capsys.readouterr().out


def test_create_locks_first_and_refuses_a_non_empty_folder(make_vae, digits, tmp_path):
    out = tmp_path / "run"
    _train(make_vae, digits, out, 1)
    with pytest.raises(VaelabError, match=r"'.*run' is not empty; pass force=True") as e:
        Run.create(out)
    assert "\n" not in str(e.value)
    with pytest.raises(VaelabError, match="not empty"):
        _train(make_vae, digits, out, 1)  # a path: a new run needs an empty folder
    with Run.create(out, force=True) as run:
        with pytest.raises(VaelabError, match="being trained by another process"):
            Run.create(out, force=True)  # the lock comes before any look at the folder
        with pytest.raises(VaelabError, match="being trained by another process"):
            Run.resume(out)
        assert list_checkpoints(out)  # nothing cleared until the new run writes
        history = train(make_vae(hidden=(16,)), digits, _cfg(2), progress=False, run_dir=run)
    assert len(Run.open(out).metrics()) == len(history) == 2
    Run.create(out, force=True).close()  # released


def test_a_folder_create_made_goes_away_if_nothing_was_written(tmp_path):
    with Run.create(tmp_path / "new"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()
    with Run.create(tmp_path, force=True):  # an existing folder stays
        pass
    assert tmp_path.is_dir()


def test_resume_from_python_is_bitwise_and_rewinds_the_metrics(make_vae, digits, tmp_path):
    ref = tmp_path / "ref"
    _train(make_vae, digits, ref, 3)
    out = tmp_path / "run"
    _train(make_vae, digits, out, 2)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "written after the checkpoint": true}\n')
    with Run.resume(out, {"epochs": 3}) as run:
        assert run.checkpoint.epoch == 2 and run.train_config.epochs == 3
        torch.manual_seed(123)  # the resumed model's init must not matter
        history = train(make_vae(seed=7, hidden=(16,)), digits, run.train_config, progress=False, run_dir=run)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert same_weights(weights(out), weights(ref))
    drop = ("seconds",)
    strip = [{k: v for k, v in r.items() if k not in drop} for r in Run.open(out).metrics()]
    assert strip == [{k: v for k, v in r.items() if k not in drop} for r in Run.open(ref).metrics()]
    assert Run.open(out).train_config.epochs == 3
    with pytest.raises(VaelabError, match="below the 3 epochs"):
        Run.resume(out, {"epochs": 2})
    Run.resume(out).close()  # the failed resume released its lock


def test_a_read_only_run_cannot_be_trained_into(make_vae, digits, tmp_path):
    out = tmp_path / "run"
    _train(make_vae, digits, out, 1)
    with pytest.raises(VaelabError, match="opened to read"):
        _train(make_vae, digits, Run.open(out), 1)


def test_load_data_rebuilds_the_runs_splits(make_vae, digits, tmp_path):
    out = tmp_path / "run"
    train(make_vae(hidden=(16,)), digits, _cfg(1, holdout=0.2), progress=False, run_dir=out)
    run = Run.open(out)
    assert run.data_source() == "digits"
    assert len(run.load_data().test) == len(digits.test)
    assert len(run.load_data(split="holdout").test) == 300
    train_rows = run.load_data(split="train")
    assert (len(train_rows.test), train_rows.test_split) == (1200, "train")


class _Extra(Callback):
    """Adds a key to every record, and stops after epoch 2."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, history: list[dict]) -> None:
        self.calls.append(f"start {len(history)}")

    def on_epoch_end(self, record: dict) -> None:
        record["mine"] = record["epoch"] * 10
        self.calls.append(f"epoch {record['epoch']}")
        self.stop = record["epoch"] == 2

    def on_train_end(self, history: list[dict]) -> None:
        self.calls.append(f"end {len(history)}")


def test_callbacks_add_to_the_metrics_and_may_stop(make_vae, digits, tmp_path):
    out, cb, seen = tmp_path / "run", _Extra(), []
    history = _train(make_vae, digits, out, 5, callbacks=[cb], on_epoch=lambda r: seen.append(r["epoch"]))
    assert cb.calls == ["start 0", "epoch 1", "epoch 2", "end 2"]
    assert seen == [1, 2]
    assert [r["mine"] for r in Run.open(out).metrics()] == [10, 20] == [r["mine"] for r in history]
    assert list_checkpoints(out)[0].name == "epoch-000002"  # a stop is checkpointed


def test_global_state_options(make_vae, digits):
    before = torch.get_num_threads()
    cfg = _cfg(1, threads=before + 1)
    train(make_vae(hidden=(16,)), digits, cfg, progress=False, set_threads=False)
    assert torch.get_num_threads() == before

    def weights_after(caller_seed: int, seed_rng: bool) -> dict:
        model = make_vae(hidden=(16,))
        torch.manual_seed(caller_seed)
        train(model, digits, _cfg(1), progress=False, seed_rng=seed_rng)
        return model.state_dict()

    assert same_weights(weights_after(1, True), weights_after(2, True))  # config.seed decides
    assert not same_weights(weights_after(1, False), weights_after(2, False))  # the caller's RNG does


def test_eval_mode_puts_the_mode_back(tiny_model, digits):
    tiny_model.train()
    with pytest.raises(RuntimeError), eval_mode(tiny_model):
        assert not tiny_model.training
        raise RuntimeError
    assert tiny_model.training
    evaluate_elbo(tiny_model, digits.test)
    assert tiny_model.training
    tiny_model.eval()
    evaluate_elbo(tiny_model, digits.test)
    assert not tiny_model.training


HOLD = textwrap.dedent(
    """
    import sys
    from vaelab.training.lock import RunLock

    lock = RunLock()
    lock.acquire(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # held until the test closes stdin, or kills this process
    """
)


@pytest.mark.slow
def test_a_second_process_on_the_same_run_gets_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(*train_argv(out, 1)) == 0
    capsys.readouterr()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ((), ("--force",)):
            assert cli(*train_argv(out, 1, *extra)) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "is being trained by another process" in err, err
        assert cli("train", "--resume", str(out)) == 2
        assert "is being trained by another process" in capsys.readouterr().err
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before  # the first run is untouched
    finally:
        holder.send_signal(signal.SIGKILL)  # the OS releases the lock of a killed process
        holder.wait()
    assert cli(*train_argv(out, 1, "--force")) == 0


def test_the_lock_is_a_file_in_the_run(tmp_path):
    with Run.create(tmp_path / "run") as run:
        assert (Path(run.path) / ".lock").is_file()


def test_a_forced_new_run_drops_what_described_the_old_one(trained_run, tmp_path):
    import shutil

    from vaelab.config import RUN_TOML
    from vaelab.io import EVALUATE_FILE
    from vaelab.training.run import Run

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    (old / EVALUATE_FILE).write_text('{"nll": 1.0}')
    (old / RUN_TOML).write_text("epochs = 3\n")
    (old / "notes.txt").write_text("mine")
    with Run.create(old, force=True) as run:
        run.clear()
    gone = ("config.json", "metrics.jsonl", EVALUATE_FILE, RUN_TOML)
    assert not any((old / name).exists() for name in gone)
    assert (old / "notes.txt").read_text() == "mine"  # not a run file: kept
