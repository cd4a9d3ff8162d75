"""``vaelab report``: one offline HTML file with every figure, the metrics and the config."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import pytest
from PIL import Image

from vaelab.cli import main
from vaelab.viz.plots import KINDS
from vaelab.viz.report import fmt

IMG = re.compile(
    r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"[^>]*data-kind="(\w+)"'
)


@pytest.fixture(scope="module")
def report(trained_run_3d, tmp_path_factory):
    """A run with evaluate.json and extra per-epoch fields, and its report.html text."""
    run = shutil.copytree(trained_run_3d, tmp_path_factory.mktemp("report") / "run")
    assert main(["evaluate", str(run), "--data", "digits", "--json", str(run / "evaluate.json")]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    extra = [json.dumps(dict(json.loads(x), kl_per_dim=[0.5, 0.25, 0.125], active_units=2)) for x in lines]
    (run / "metrics.jsonl").write_text("\n".join(extra) + "\n")
    assert main(["report", str(run)]) == 0
    return run, (run / "report.html").read_text(encoding="utf-8")


def test_report_embeds_every_figure_as_a_png_data_uri(report) -> None:
    _, html = report
    found = {}
    for data, w, h, kind in IMG.findall(html):
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "PNG"
            assert img.size == (int(w), int(h))
        found[kind] = img.size
    assert set(found) == set(KINDS) - {"pseudo"}  # a normal-prior run: no pseudo-inputs, no section
    assert "fig-pseudo" not in html
    assert found["latents"] == (840, 330) and found["curves"] == (4 * 420, 330)  # 3-d latent; kl_per_dim


def test_report_has_the_metrics_evaluation_and_config(report) -> None:
    run, html = report
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in records:
        for key in ("train_neg_elbo", "test_neg_elbo", "recon", "kl"):
            assert f"<td>{fmt(rec[key])}</td>" in html
    assert "active units" in html and "KL per latent dim" in html
    evaluation = json.loads((run / "evaluate.json").read_text())
    for key in ("neg_elbo", "recon", "kl"):
        assert f"<th>{key}</th><td>{fmt(evaluation[key])}</td>" in html
    assert f"{evaluation['neg_elbo']:.3f} nats" in html  # the summary card
    assert "&quot;latent_dim&quot;: 3" in html  # config.json, escaped in <pre>


def test_report_is_self_contained(report) -> None:
    _, html = report
    lowered = html.lower()
    for needle in ("http://", "https://", "//cdn", "<script", "<link", "@import", "url("):
        assert needle not in lowered
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs and all(h.startswith("#") for h in hrefs)  # in-page navigation only


def test_report_without_evaluate_or_metrics(trained_run, tmp_path) -> None:
    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "metrics.jsonl").unlink()
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    assert "No evaluate.json" in html and "No metrics.jsonl" in html
    assert {k for *_, k in IMG.findall(html)} == set(KINDS) - {"curves", "pseudo"}


def test_report_never_overwrites_silently(trained_run, tmp_path, capsys) -> None:
    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "report.html").write_text("mine")
    assert main(["report", str(run)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (run / "report.html").read_text() == "mine"
    assert main(["report", str(run), "--force"]) == 0
    assert (run / "report.html").read_text().startswith("<!doctype html>")
