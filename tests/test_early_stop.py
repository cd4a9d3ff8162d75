"""The holdout and early stopping: which rows, what is kept, when training stops, resume, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from datagen import assert_one_line_error, run_cli
from resume_helpers import cli, metrics, one_thread, same_weights, train_argv, weights  # noqa: F401

from vaelab import VAE, TrainConfig, VAEConfig, load_dataset
from vaelab.config import EARLY_STOP_HOLDOUT
from vaelab.data.dataset import seeded_split
from vaelab.errors import VaelabError
from vaelab.evaluation.elbo import evaluate_elbo
from vaelab.training.checkpoint import Checkpoint, list_checkpoints, read_latest
from vaelab.training.distributed import context
from vaelab.training.early_stop import HOLDOUT_SEED, BestEpoch, carve_holdout, holdout_metrics
from vaelab.training.loop import EVAL_SEED, train

pytestmark = pytest.mark.usefixtures("one_thread")


# --- which rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("binarize", ["static", "dynamic"])
def test_the_holdout_is_a_fixed_part_of_the_training_rows_with_their_pixels(
    tmp_path, monkeypatch, streamed, binarize
):
    a = np.random.default_rng(0).random((50, 1, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=a, y=np.arange(50) % 5)
    np.save(tmp_path / "a.npy", a)
    source = tmp_path / ("a.npy" if streamed else "a.npz")
    if streamed:
        monkeypatch.setenv("VAELAB_MEMORY_LIMIT", "1k")
    data = load_dataset(str(source), binarize=binarize, rescale="minmax")
    assert data.meta["streamed"] == streamed
    full = data.fixed_train()  # the training rows' pixels as evaluation draws them
    rest, hold = carve_holdout(data, 0.25)
    n = len(data.train)
    assert (len(rest.train), len(hold)) == (n - round(n / 4), round(n / 4))
    keep, held = seeded_split(n, n - round(n / 4), HOLDOUT_SEED)
    assert not set(keep) & set(held)
    # Each part's rows are the training split's rows at those positions, pixels and labels included.
    torch.testing.assert_close(hold.batch(slice(None)), full.batch(torch.from_numpy(held)))
    torch.testing.assert_close(rest.fixed_train().batch(slice(None)), full.batch(torch.from_numpy(keep)))
    if data.train.y is not None:
        assert hold.y.tolist() == data.train.y[held].tolist()
    assert hold.binarize != "dynamic"  # scored on the same pixels every epoch
    torch.testing.assert_close(hold.batch(slice(2, 7)), hold.batch(slice(2, 7)))
    assert rest.test is data.test  # the test split is not touched
    assert carve_holdout(data, 0.0) == (data, None)


def test_the_holdout_is_the_same_for_every_seed_and_too_small_is_an_error(digits):
    a = carve_holdout(digits, 0.1)[1]
    b = carve_holdout(dataclasses.replace(digits), 0.1)[1]
    assert torch.equal(a.batch(slice(None)), b.batch(slice(None)))
    with pytest.raises(VaelabError, match="1500 training examples"):
        carve_holdout(digits, 1e-5)


# --- what is kept and when it stops ---------------------------------------------------------------


def test_best_epoch_counts_patience_after_the_warmup():
    best = BestEpoch(TrainConfig(holdout=0.1, early_stop=2, kl_warmup=5))
    model = VAE(VAEConfig(latent_dim=2, hidden=(4,)))
    for epoch, value in enumerate([9.0, 8.0, 8.5, 8.4, 8.6, 8.7, 8.9], start=1):
        record = {"val_neg_elbo": value}
        best.update(epoch, record, model)
        assert record["best_epoch"] == min(epoch, 2)
        assert best.should_stop(epoch) == (epoch >= 7)  # 2 epochs after the warm-up's last (5)
    record = {"val_neg_elbo": float("nan")}
    best.update(8, record, model)
    assert (best.epoch, best.value, record["best_epoch"]) == (2, 8.0, 2)
    history = [{"epoch": e, "val_neg_elbo": v} for e, v in enumerate([3.0, 1.0, 2.0], start=1)]
    again = BestEpoch.resumed(TrainConfig(holdout=0.1, early_stop=1), history, model.state_dict())
    assert (again.epoch, again.value, again.should_stop(3)) == (2, 1.0, True)
    with pytest.raises(VaelabError, match=r"without TrainConfig\.holdout"):
        BestEpoch.resumed(TrainConfig(holdout=0.1), history, None)
    assert BestEpoch(TrainConfig(objective="iwae", k=2, holdout=0.1)).key == "val_neg_iwae"


def test_lr_drops_count_from_the_best_epoch_and_from_each_drop():
    cfg = TrainConfig(holdout=0.1, lr_drop=2)
    best = BestEpoch(cfg)
    model = VAE(VAEConfig(latent_dim=2, hidden=(4,)))
    values = [5.0, 4.0, 4.5, 4.6, 4.7, 4.8, 3.9, 4.0, 4.1]
    drops = []
    for epoch, value in enumerate(values, start=1):
        best.update(epoch, {"val_neg_elbo": value}, model)
        if best.lr_drop_due(epoch):
            drops.append(epoch)
    assert drops == [4, 6, 9]  # 2 after the best (2), 2 after that drop, 2 after the new best (7)
    history = [{"epoch": e, "val_neg_elbo": v} for e, v in enumerate(values[:6], start=1)]
    again = BestEpoch.resumed(cfg, history, model.state_dict())  # replays the drops
    assert (again.epoch, again.dropped, again.lr_drop_due(7)) == (2, 6, False)


def test_early_stop_needs_a_holdout():
    # Left unset, the holdout follows early stopping; set to 0 it is an error naming the fields.
    assert TrainConfig(early_stop=3).holdout == TrainConfig(lr_drop=3).holdout == EARLY_STOP_HOLDOUT
    assert TrainConfig().holdout == 0.0 and TrainConfig(holdout=0.2, early_stop=3).holdout == 0.2
    with pytest.raises(VaelabError, match=r"TrainConfig\.early_stop needs holdout > 0"):
        TrainConfig(early_stop=3, holdout=0.0)
    with pytest.raises(VaelabError, match=r"TrainConfig\.lr_drop needs holdout > 0"):
        TrainConfig(lr_drop=3, holdout=0.0)
    for bad in ({"holdout": 1.0}, {"holdout": -0.1}, {"early_stop": -1}, {"lr_drop_factor": 1.0}):
        with pytest.raises(VaelabError):
            TrainConfig(**bad)


def test_training_never_sees_the_holdout_and_ends_with_the_best_epoch(digits, make_vae):
    cfg = TrainConfig(epochs=6, batch_size=64, seed=0, device="cpu", holdout=0.2)
    model = make_vae(hidden=(16,))
    history = train(model, digits, cfg, progress=False)
    # The same training on a dataset that never had those rows: the same weights at every step.
    rest, hold = carve_holdout(digits, 0.2)
    plain = make_vae(hidden=(16,))
    last = train(plain, rest, dataclasses.replace(cfg, holdout=0.0), progress=False)
    assert [r["train_neg_elbo"] for r in history] == [r["train_neg_elbo"] for r in last]
    best = min(history, key=lambda r: r["val_neg_elbo"])
    assert all(
        r["best_epoch"] == min(history[: i + 1], key=lambda r: r["val_neg_elbo"])["epoch"]
        for i, r in enumerate(history)
    )
    # The model is the best epoch's: its holdout score is that epoch's record.
    score = evaluate_elbo(model, hold, seed=EVAL_SEED)["neg_elbo"]
    assert score == pytest.approx(best["val_neg_elbo"], abs=1e-9)
    assert holdout_metrics(model, hold, cfg, 6, EVAL_SEED, context()) == {"val_neg_elbo": score}
    assert all(r["val_neg_elbo"] != r["test_neg_elbo"] for r in history)


def test_early_stopping_stops_after_patience_epochs_without_a_better_score(digits, make_vae):
    # A wide net, a high lr and a patience of 1: the holdout score soon gets worse once.
    cfg = TrainConfig(epochs=200, batch_size=64, lr=1e-2, seed=0, device="cpu", holdout=0.2, early_stop=1)
    model = make_vae(latent_dim=8, hidden=(256,))
    history = train(model, digits, cfg, progress=False)
    last = history[-1]
    assert last["epoch"] < 200 and last["epoch"] - last["best_epoch"] == 1
    assert all(r["epoch"] - r["best_epoch"] < 1 for r in history[:-1])


@pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")
def test_iwae_runs_are_chosen_on_the_holdout_iwae(digits, make_vae):
    cfg = TrainConfig(epochs=2, batch_size=64, seed=0, device="cpu", holdout=0.2, objective="iwae", k=3)
    history = train(make_vae(hidden=(16,)), digits, cfg, progress=False)
    assert all(r["val_neg_iwae"] <= r["val_neg_elbo"] + 0.5 for r in history)
    best = min(history, key=lambda r: r["val_neg_iwae"])
    assert history[-1]["best_epoch"] == best["epoch"]


def test_lr_drop_lowers_the_lr_after_epochs_without_a_better_holdout_score(digits, make_vae):
    cfg = TrainConfig(
        epochs=40, batch_size=64, lr=1e-2, seed=0, device="cpu", holdout=0.2, lr_drop=2, lr_drop_factor=0.5
    )
    model = make_vae(latent_dim=8, hidden=(256,))
    history = train(model, digits, cfg, progress=False)
    # The drops, recomputed from the recorded holdout scores alone.
    lr, best, since, expected = 1e-2, float("inf"), 0, []
    for rec in history:
        expected.append(lr)
        since = 0 if rec["val_neg_elbo"] < best else since + 1
        best = min(best, rec["val_neg_elbo"])
        if since >= 2:
            lr, since = lr * 0.5, 0
    assert [r["lr"] for r in history] == pytest.approx(expected, rel=1e-12)
    assert min(expected) < 1e-2  # it did drop


# --- on disk: checkpoints, resume, the CLI ---------------------------------------------------------


STOPPING = ("--hidden", "256", "--latent-dim", "8", "--lr", "1e-2", "--holdout", "0.2")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A CLI run that stops early (patience 3), uninterrupted."""
    out = tmp_path_factory.mktemp("es") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    result = run_cli(train_argv(out, 200, *STOPPING, "--early-stop", "3"))
    torch.set_num_threads(before)
    assert result[0] == 0, result
    return out, result[1]


def test_the_run_dir_holds_the_best_epoch_and_the_checkpoint_the_last(stopped):
    out, stdout = stopped
    history = metrics(out)
    last, best = history[-1]["epoch"], history[-1]["best_epoch"]
    assert last < 200 and f"stopped early at epoch {last}: the model is epoch {best}'s" in stdout
    plan = (
        "holding out 300 of 1500 training examples; stopping after 3 epochs without a better score; keeping"
    )
    assert last - best == 3 and plan in stdout
    ck = Checkpoint.from_blobs(read_latest(out))
    assert ck.epoch == last and same_weights(ck.best, weights(out))
    assert not same_weights(ck.model, weights(out))
    train_cfg = json.loads((out / "config.json").read_text())["train"]
    assert (train_cfg["holdout"], train_cfg["early_stop"]) == (0.2, 3)


def test_resuming_a_stopped_run_is_bitwise_identical(stopped, tmp_path):
    ref, _ = stopped
    history = metrics(ref)
    cut = history[-1]["best_epoch"] + 1  # a checkpoint whose best weights are not its current ones
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    assert cli(*train_argv(tmp_path / "part", cut, *STOPPING, "--early-stop", "3")) == 0
    assert not same_weights(
        Checkpoint.from_blobs(read_latest(tmp_path / "part")).model, weights(tmp_path / "part")
    )
    assert cli("train", "--resume", str(tmp_path / "part"), "--epochs", "200") == 0
    assert metrics(tmp_path / "part") == history
    assert same_weights(weights(tmp_path / "part"), weights(ref))
    # Resuming a run that already stopped trains nothing more; a longer patience goes on.
    assert cli("train", "--resume", str(out), "--epochs", "200") == 0
    assert metrics(out) == history
    assert (
        cli("train", "--resume", str(out), "--epochs", str(history[-1]["epoch"] + 2), "--early-stop", "5")
        == 0
    )
    assert len(metrics(out)) == len(history) + 2 and metrics(out)[: len(history)] == history
    longer = str(history[-1]["epoch"] + 9)
    assert cli("train", "--resume", str(out), "--epochs", longer, "--early-stop", "0") == 0
    assert len(metrics(out)) == len(history) + 9  # 0 turns it off


def test_a_damaged_best_file_fails_its_checksum(stopped, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(stopped[0], out)
    newest, older = list_checkpoints(out)
    (newest / "best.safetensors").write_bytes(b"garbage")
    assert Checkpoint.from_blobs(read_latest(out)).epoch == int(older.name.split("-")[1])
    assert "best.safetensors fails its checksum" in capsys.readouterr().err


def test_cli_errors_name_the_flag(tmp_path):
    plain = tmp_path / "plain"
    assert cli(*train_argv(plain, 1)) == 0
    assert_one_line_error(
        run_cli(["train", "--resume", str(plain), "--early-stop", "3"]), "--early-stop", "--holdout"
    )
    for flag, value in (("--holdout", "0"), ("--holdout", "1"), ("--early-stop", "-1")):
        assert_one_line_error(run_cli(train_argv(tmp_path / "x", 1, flag, value)), flag)
    assert_one_line_error(run_cli(train_argv(tmp_path / "y", 1, "--holdout", "0.0001")), "--holdout", "1500")
    assert_one_line_error(
        run_cli(["train", "--resume", str(plain), "--holdout", "0.2"]),
        "--holdout cannot be used with --resume",
    )


def test_early_stop_alone_holds_out_a_tenth(tmp_path):
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(train_argv(out, 2, "--early-stop", "4"))
    assert rc == 0 and "holding out 150 of 1500" in stdout
    assert json.loads((out / "config.json").read_text())["train"]["holdout"] == 0.1
    assert "best_epoch" in metrics(out)[-1]


def test_evaluate_splits_of_a_holdout_run(stopped, tmp_path):
    out, _ = stopped
    history = metrics(out)
    best = history[history[-1]["best_epoch"] - 1]
    report = tmp_path / "h.json"
    argv = ["evaluate", str(out), "--importance-samples", "0", "--seed", str(EVAL_SEED), "--json"]
    assert run_cli([*argv, str(report), "--split", "holdout"])[0] == 0
    r = json.loads(report.read_text())
    # The kept model scores on the held-out rows exactly what training recorded for its epoch.
    assert (r["split"], r["n"]) == ("holdout", 300)
    assert r["neg_elbo"] == pytest.approx(best["val_neg_elbo"], abs=1e-9)
    assert run_cli([*argv, str(report), "--split", "train", "--force"])[0] == 0
    assert json.loads(report.read_text())["n"] == 1200  # only the rows it trained on
    plain = tmp_path / "plain"
    assert cli(*train_argv(plain, 1)) == 0
    assert_one_line_error(run_cli(["evaluate", str(plain), "--split", "holdout"]), "without --holdout")
    assert_one_line_error(
        run_cli(["evaluate", str(out), "--split", "holdout", "--probes"]), "--probes", "--split test only"
    )


@pytest.mark.slow
def test_resuming_right_after_an_lr_drop_is_bitwise_identical(tmp_path):
    flags = (*STOPPING, "--lr-drop", "2", "--lr-drop-factor", "0.5", "--early-stop", "6")
    ref = tmp_path / "ref"
    rc, _, err = run_cli(train_argv(ref, 60, *flags))
    assert rc == 0 and "vaelab: no better holdout score since epoch" in err
    history = metrics(ref)
    first = next(r["epoch"] for r, q in zip(history[1:], history, strict=False) if r["lr"] < q["lr"]) - 1
    part = tmp_path / "part"  # its last checkpoint holds the lowered lr; its history does not show it yet
    assert cli(*train_argv(part, first, *flags)) == 0
    assert cli("train", "--resume", str(part), "--epochs", "60") == 0
    assert metrics(part) == history
    assert same_weights(weights(part), weights(ref))


@pytest.mark.slow
def test_the_report_says_which_epoch_the_model_is(stopped, tmp_path):
    out = tmp_path / "report.html"
    assert cli("report", str(stopped[0]), "--out", str(out)) == 0
    html = out.read_text()
    best = metrics(stopped[0])[-1]["best_epoch"]
    assert f"epoch {best} (best on the holdout)" in html and "holdout −ELBO" in html
