"""`vaelab evaluate` end to end, in-process: flags, JSON contents, errors, reproducibility."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vaelab.cli import main


@pytest.fixture
def run_dir(trained_run):
    """conftest's run: 3 epochs on digits, 2-d latent."""
    return trained_run


def _evaluate(run_dir, *extra: str) -> int:
    return main(["evaluate", str(run_dir), "--data", "digits", "--no-progress", *extra])


def test_json_has_every_metric(run_dir, tmp_path, capsys):
    path = tmp_path / "e.json"
    assert _evaluate(run_dir, "--importance-samples", "100", "--json", str(path)) == 0
    r = json.loads(path.read_text())
    for key in ("nll", "nll_std_err", "importance_samples", "bits_per_dim", "neg_elbo_k", "nll_seconds"):
        assert key in r
    for key in ("kl_per_dim", "active_units", "posterior_mean_variance", "probe_accuracy", "knn_accuracy"):
        assert key in r
    assert r["importance_samples"] == 100 and r["n"] == 297 and r["split"] == "test"
    assert len(r["kl_per_dim"]) == 2 and r["latent_dim"] == 2
    assert r["nll"] <= r["neg_elbo_k"] and r["nll"] < r["neg_elbo"]
    assert 0 < r["nll_std_err"] < 1
    out = capsys.readouterr().out
    assert "NLL" in out and "active units" in out and "probe" in out
    assert "not binary" in out  # digits are grey: the Bernoulli number is a cross-entropy


def test_reproducible_and_never_overwrites_silently(run_dir, tmp_path, capsys):
    path = tmp_path / "e.json"
    assert _evaluate(run_dir, "--importance-samples", "20", "--seed", "3", "--json", str(path)) == 0
    first = json.loads(path.read_text())
    assert _evaluate(run_dir, "--importance-samples", "20", "--seed", "3", "--json", str(path)) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and "Traceback" not in err
    args = ("--importance-samples", "20", "--seed", "3", "--chunk", "7", "--json", str(path), "--force")
    assert _evaluate(run_dir, *args) == 0
    again = json.loads(path.read_text())
    for key in ("nll", "nll_std_err", "neg_elbo", "kl_per_dim", "probe_accuracy", "knn_accuracy"):
        assert again[key] == pytest.approx(first[key], rel=1e-6)


def test_zero_samples_skips_the_likelihood_and_no_probes(run_dir, tmp_path):
    path = tmp_path / "e.json"
    assert _evaluate(run_dir, "--importance-samples", "0", "--no-probes", "--json", str(path)) == 0
    r = json.loads(path.read_text())
    assert "nll" not in r and "probe_accuracy" not in r
    assert "active_units" in r and "neg_elbo" in r


@pytest.mark.parametrize(
    "bad", [["--chunk", "0"], ["--importance-samples", "-1"], ["--importance-samples", "x"]]
)
def test_bad_flags_are_one_line_errors(run_dir, capsys, bad):
    with pytest.raises(SystemExit) as exc:
        _evaluate(run_dir, *bad)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_train_split_and_limit(run_dir, tmp_path, capsys):
    """--split train measures the training split (the generalization gap); --limit its first N rows."""
    from vaelab.data.sources import load_digits
    from vaelab.evaluation.elbo import evaluate_elbo
    from vaelab.models.vae import load

    path = tmp_path / "train.json"
    assert _evaluate(run_dir, "--split", "train", "--limit", "40", "--json", str(path)) == 0
    r = json.loads(path.read_text())
    assert r["split"] == "train" and r["n"] == 40 and "probe_accuracy" not in r and "nll" in r
    assert "digits train (n=40)" in capsys.readouterr().out
    train = load_digits().train.head(40)  # the same rows, straight from the library
    want = evaluate_elbo(load(run_dir), train, seed=0)["neg_elbo"]
    assert r["neg_elbo"] == pytest.approx(want, rel=1e-6)
    assert _evaluate(run_dir, "--limit", "40", "--json", str(tmp_path / "test.json")) == 0
    held_out = json.loads((tmp_path / "test.json").read_text())
    assert held_out["split"] == "test" and held_out["n"] == 40 and "probe_accuracy" in held_out
    assert held_out["neg_elbo"] != r["neg_elbo"]


def test_the_train_split_gives_the_same_numbers_every_time(run_dir, tmp_path):
    """Dynamic binarization redraws training pixels on every batch; evaluation draws them once."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        argv = ("--split", "train", "--binarize", "dynamic", "--importance-samples", "9", "--json", str(path))
        assert _evaluate(run_dir, *argv) == 0
    timeless = [{k: v for k, v in json.loads(p.read_text()).items() if "seconds" not in k} for p in (a, b)]
    assert timeless[0] == timeless[1] and timeless[0]["n"] == 1500


def test_probes_on_the_train_split_are_refused(run_dir, capsys):
    assert _evaluate(run_dir, "--split", "train", "--probes") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--probes" in err and "--split test" in err


@pytest.mark.parametrize("bad", [["--limit", "0"], ["--split", "val"]])
def test_bad_split_flags(run_dir, capsys, bad):
    with pytest.raises(SystemExit) as exc:
        _evaluate(run_dir, *bad)
    assert exc.value.code == 2 and bad[0] in capsys.readouterr().err


def test_data_defaults_to_the_runs_training_source(run_dir, tmp_path):
    explicit, default = tmp_path / "explicit.json", tmp_path / "default.json"
    assert _evaluate(run_dir, "--importance-samples", "10", "--no-probes", "--json", str(explicit)) == 0
    argv = ["evaluate", str(run_dir), "--no-progress", "--importance-samples", "10", "--no-probes"]
    assert main([*argv, "--json", str(default)]) == 0
    a, b = json.loads(explicit.read_text()), json.loads(default.read_text())
    assert b["data"] == "digits"
    timeless = [{k: v for k, v in r.items() if "seconds" not in k} for r in (a, b)]
    assert timeless[0] == timeless[1]


def test_encode_and_reconstruct_default_to_the_runs_source(run_dir, tmp_path):
    assert main(["encode", str(run_dir), "--out", str(tmp_path / "f.npz")]) == 0
    assert main(["reconstruct", str(run_dir), "-n", "4", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "f.npz").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0


def test_subsample_is_a_seeded_fair_sample(run_dir, tmp_path):
    """--subsample N: N distinct rows drawn at random (by --seed), scored as the library scores them."""
    from vaelab.data.sources import load_digits
    from vaelab.evaluation.elbo import evaluate_elbo
    from vaelab.models.vae import load

    runs = {}
    for seed in (0, 0, 1):
        path = tmp_path / f"s{seed}-{len(runs)}.json"
        argv = ("--split", "train", "--subsample", "300", "--importance-samples", "0", "--seed", str(seed))
        assert _evaluate(run_dir, *argv, "--json", str(path)) == 0
        runs[path] = json.loads(path.read_text())
    a, b, c = runs.values()
    assert a["n"] == 300 and a["neg_elbo"] == b["neg_elbo"] != c["neg_elbo"]
    split = load_digits().train
    rows = np.sort(np.random.default_rng(0).choice(len(split), 300, replace=False))
    want = evaluate_elbo(load(run_dir), split.take(rows), seed=0)["neg_elbo"]
    assert a["neg_elbo"] == pytest.approx(want, rel=1e-6)
    # A fair sample: its mean is within a few standard errors of the whole split's.
    whole = evaluate_elbo(load(run_dir), split, seed=0)["neg_elbo"]
    assert abs(a["neg_elbo"] - whole) < 1.5
    assert split.subsample(len(split)) is split


def test_limit_and_subsample_exclude_each_other(run_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        _evaluate(run_dir, "--limit", "5", "--subsample", "5")
    assert exc.value.code == 2 and "--subsample" in capsys.readouterr().err


def test_evaluate_stores_its_results_in_the_run_for_the_report(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "evaluate.json").unlink(missing_ok=True)
    assert _evaluate(run, "--importance-samples", "10", "--no-probes") == 0
    stored = json.loads((run / "evaluate.json").read_text())
    assert stored["split"] == "test" and stored["importance_samples"] == 10
    # Again: the stored results are not replaced silently.
    assert _evaluate(run, "--importance-samples", "20", "--no-probes") == 2
    assert "evaluate.json" in capsys.readouterr().err
    assert json.loads((run / "evaluate.json").read_text()) == stored
    # Subsets and other splits are not the run's record: no file unless asked for.
    assert _evaluate(run, "--importance-samples", "0", "--limit", "50", "--force") == 0
    assert json.loads((run / "evaluate.json").read_text()) == stored
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Evaluation (evaluate.json)" in html and "No evaluate.json" not in html
