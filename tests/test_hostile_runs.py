"""Tampered run directories: every bad config.json or weights file is one clean line, and nothing
is allocated for a model that could never fit."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from datagen import assert_one_line_error, run_cli
from hostile import refresh_checksums
from safetensors.torch import load_file, save_file

from vaelab import VAE, VAEConfig, load
from vaelab.errors import VaelabError
from vaelab.io import save_model
from vaelab.models.vae import MAX_LAYERS, parameter_count


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    save_model(VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))), tmp_path / "run")
    return tmp_path / "run"


def _edit_config(run, edit) -> None:
    doc = json.loads((run / "config.json").read_text())
    edit(doc["model"])
    (run / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # past the parser's recursion limit
        '{"format": "vaelab-run", "version": ' + "9" * 5000 + "}",  # past the int digit limit
        '{"format": "vaelab-run"',
        "\udcff",
    ],
    ids=["deep", "huge-int", "truncated", "not-utf8"],
)
def test_hostile_config_json_is_one_line(run, text, tmp_path):
    (run / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(VaelabError, match=r"config\.json"):
        load(run)
    out = tmp_path / "s.png"
    assert_one_line_error(run_cli(["sample", str(run), "--out", str(out)]), "config.json")
    assert not out.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("latent_dim", 10**9),
        ("hidden", [10**8, 10**8]),
        ("input_shape", [3, 10**5, 10**5]),
        ("n_classes", 10**10),
        ("hidden", [4] * (MAX_LAYERS + 1)),
    ],
)
def test_a_config_too_big_to_fit_is_refused_before_allocating(run, field, value):
    _edit_config(run, lambda m: m.update({field: value}))
    t0 = time.perf_counter()
    with pytest.raises(VaelabError, match="VAEConfig"):
        load(run)
    assert time.perf_counter() - t0 < 10  # counted on the meta device, never allocated
    assert_one_line_error(run_cli(["sample", str(run), "--out", str(run / "s.png")]), "VAEConfig")


def test_parameter_count_matches_the_built_model():
    cfg = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16, 8), prior="vamp", pseudo_inputs=7)
    assert parameter_count(cfg) == sum(p.numel() for p in VAE(cfg).parameters())


def test_non_finite_weights_are_refused_at_load(run, tmp_path):
    weights = load_file(str(run / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(run / "model.safetensors"), metadata={"format": "vaelab-run"})
    with pytest.raises(VaelabError, match="non-finite weights"):
        load(run)
    out = tmp_path / "s.png"
    assert_one_line_error(run_cli(["sample", str(run), "--out", str(out)]), "non-finite")
    assert not out.exists()


# --- tampered checkpoints: checksums recomputed, as an attacker would --------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "2", "--hidden", "8"]
    rc, _, err = run_cli([*argv, "--latent-dim", "2", "--checkpoint-every", "1", "--no-progress"])
    assert rc == 0, err
    return run


def _tampered(trained, tmp_path, edit) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = sorted((run / "checkpoints").glob("epoch-*"))[-1]
    edit(ckpt)
    refresh_checksums(ckpt)
    return run


def _edit_state(edit):
    def apply(ckpt: Path) -> None:
        doc = json.loads((ckpt / "state.json").read_text())
        edit(doc)
        (ckpt / "state.json").write_text(json.dumps(doc))

    return apply


def _edit_optimizer(edit):
    def apply(ckpt: Path) -> None:
        state = torch.load(ckpt / "optimizer.pt", weights_only=True)
        edit(state)
        torch.save(state, ckpt / "optimizer.pt")

    return apply


def _first_moments(state) -> dict:
    return next(iter(state["state"].values()))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_edit_optimizer(lambda s: _first_moments(s).update(exp_avg=torch.zeros(10**4))), "exp_avg"),
        (_edit_optimizer(lambda s: _first_moments(s).update(exp_avg_sq=torch.zeros(2, 3))), "exp_avg_sq"),
        (_edit_optimizer(lambda s: _first_moments(s)["exp_avg"].fill_(float("nan"))), "NaN"),
        (
            _edit_optimizer(
                lambda s: _first_moments(s).update(exp_avg=_first_moments(s)["exp_avg"].double())
            ),
            "dtype",
        ),
        (_edit_optimizer(lambda s: s["param_groups"][0].update(lr=float("inf"))), "lr"),
        (_edit_optimizer(lambda s: s["state"].update({999: {}})), "unknown parameter"),
        (_edit_state(lambda d: d.update(epoch=-3)), "epoch"),
        (_edit_state(lambda d: d.update(epoch=7)), "history"),
        (_edit_state(lambda d: d["history"].append({"epoch": 3, "lr": "junk" * 100})), "history"),
        (_edit_state(lambda d: d["history"][0].update(test_neg_elbo=[[[1]]])), "history record 1"),
        (_edit_state(lambda d: d["rng"][0].update(torch="AAAA")), "torch RNG state"),
        (_edit_state(lambda d: d["rng"][0]["numpy"].update(key=[1, 2, 3])), "numpy RNG state"),
        (_edit_state(lambda d: d["rng"][0]["numpy"].update(key=[2**40] * 624)), "unreadable"),
        (
            _edit_state(lambda d: d["rng"][0].update(python=[3, [1] * 625 + [10**6], None])),
            "Python RNG state",
        ),
        (_edit_state(lambda d: d["data_order"].update(state="AAAA")), "data-order"),
    ],
    ids=[
        "moment-too-long",
        "moment-wrong-shape",
        "moment-nan",
        "moment-dtype",
        "lr-inf",
        "unknown-param",
        "negative-epoch",
        "epoch-beyond-history",
        "junk-history",
        "nested-history",
        "torch-rng",
        "numpy-rng",
        "numpy-rng-overflow",
        "python-rng",
        "data-order",
    ],
)
def test_a_tampered_checkpoint_is_one_line_and_changes_nothing(trained, tmp_path, edit, needle):
    run = _tampered(trained, tmp_path, edit)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    line = assert_one_line_error(run_cli(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]))
    assert needle in line, line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"format": "vaelab-checkpoint", "epoch": ' + "9" * 5000 + "}"],
    ids=["deep", "huge-int"],
)
def test_an_unparsable_state_json_skips_to_an_older_checkpoint(trained, tmp_path, text):
    run = _tampered(trained, tmp_path, lambda ck: (ck / "state.json").write_text(text))
    rc, _, err = run_cli(["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    assert rc == 0 and "Traceback" not in err, err
    assert "skipping damaged checkpoint" in err


def test_hostile_metrics_and_evaluate_files_are_skipped_by_the_report(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": ' + "9" * 5000 + "}\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    (run / "evaluate.json").write_text("[" * 100_000 + "]" * 100_000)
    rc, _, err = run_cli(["report", str(run)])
    assert rc == 0 and "Traceback" not in err, err
    html = (run / "report.html").read_text()
    assert "No evaluate.json" in html
