"""``RUN_DIR/report.html``: one self-contained page about a run, readable offline.

Figures are embedded as PNG data URIs and the style sheet is inline: the file has no external
links, scripts or fonts, so it can be mailed, archived or opened from a USB stick as is.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from vaelab.data.dataset import Dataset
from vaelab.errors import VaelabError
from vaelab.io import CONFIG_FILE, EVALUATE_FILE, METRICS_FILE, read_config, read_evaluation
from vaelab.models.vae import VAE
from vaelab.training.run import read_metrics
from vaelab.version import __version__
from vaelab.viz.figures import png_bytes
from vaelab.viz.plots import make_figure

REPORT_FILE = "report.html"

TITLES = {
    "curves": ("Training curves", "Per-epoch −ELBO, reconstruction and KL, training and held-out splits."),
    "samples": ("Samples", "Decoder means for z drawn from the prior, seed 0."),
    "recon": ("Reconstructions", "Held-out examples (rows 'data') above the decoded posterior means."),
    "interp": (
        "Interpolations",
        "Paths between encoded held-out examples: linear, and spherical (which keeps ||z|| typical).",
    ),
    "traverse": (
        "Latent traversals",
        "Each row sweeps one latent dim from −3 to 3 with the others fixed; rows ranked by KL (for a "
        "VampPrior, by the variance of the posterior mean). Dims with KL near 0 are unused by the decoder.",
    ),
    "manifold": (
        "Learned manifold",
        "Decoded lattice of Gaussian quantiles in the 2 most informative latent dims (Kingma & Welling).",
    ),
    "latents": ("Latent space", "Posterior means of held-out examples, coloured by label."),
    "pseudo": (
        "VampPrior pseudo-inputs",
        "The learned pseudo-inputs u_k (rows 'u') above the decoded means of the prior's "
        "components q(z|u_k).",
    ),
}
# Per-epoch columns in display order, with headers; any other scalar keys follow as they are.
METRIC_COLUMNS = [
    ("epoch", "epoch"),
    ("train_neg_elbo", "train −ELBO"),
    ("train_recon", "train recon"),
    ("train_kl", "train KL"),
    ("test_neg_elbo", "test −ELBO"),
    ("recon", "test recon"),
    ("kl", "test KL"),
    ("val_neg_elbo", "holdout −ELBO"),
    ("best_epoch", "best epoch"),
    ("seconds", "seconds"),
]


@dataclass
class Figure:
    kind: str
    png: bytes | None  # None when the figure could not be made; ``note`` says why
    size: tuple[int, int] = (0, 0)
    note: str = ""


def make_figures(model: VAE, data: Dataset | None, run_dir: str | Path) -> list[Figure]:
    """Every figure kind with default options. One that cannot be drawn for this run (no
    metrics.jsonl, a 1-d latent for the manifold) becomes a note saying why."""
    figures = []
    for kind in TITLES:  # the report's order: how training went, then what the model does
        if kind == "pseudo" and model.config.prior != "vamp":
            continue  # only a VampPrior has pseudo-inputs: nothing to say for the others
        if kind == "curves" and not read_metrics(run_dir):
            figures.append(Figure(kind, None, note=f"No {METRICS_FILE} in the run directory: no curves."))
            continue
        try:
            image = make_figure(kind, model, data, str(run_dir))
        except VaelabError as e:
            figures.append(Figure(kind, None, note=f"Not drawn: {e}."))
            continue
        figures.append(Figure(kind, png_bytes(image), image.size))
    return figures


def static_text(name: str) -> str:
    """A file shipped in ``vaelab/viz/static/``."""
    return resources.files("vaelab.viz").joinpath("static").joinpath(name).read_text(encoding="utf-8")


def fmt(v: Any) -> str:
    """A table cell: floats to 4 significant decimals, the rest as text."""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    if isinstance(v, list | dict):
        text = json.dumps(v)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(v)


def _flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for k, v in doc.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(fmt(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _metrics_table(records: list[dict[str, Any]]) -> str:
    keys = [k for k, _ in METRIC_COLUMNS if any(k in r for r in records)]
    heads = [h for k, h in METRIC_COLUMNS if k in keys]
    for r in records:  # other scalar fields (such as active_units), in order of appearance
        for k, v in r.items():
            if k not in keys and not isinstance(v, list | dict):
                keys.append(k)
                heads.append(k.replace("_", " "))
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(fmt(r.get(k, '')))}</td>" for k in keys) + "</tr>" for r in records
    )
    table = f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _kl_per_dim_table(records: list[dict[str, Any]]) -> str:
    last = next((r["kl_per_dim"] for r in reversed(records) if isinstance(r.get("kl_per_dim"), list)), None)
    if not last:
        return ""
    head = "".join(f"<th>z{i}</th>" for i in range(len(last)))
    cells = "".join(f"<td>{escape(fmt(v))}</td>" for v in last)
    return (
        "<h3>KL per latent dim, last epoch (nats)</h3>"
        f'<div class="scroll"><table class="metrics"><tr>{head}</tr><tr>{cells}</tr></table></div>'
    )


def _summary(model: VAE, config: dict[str, Any], records: list[dict], evaluation: dict | None) -> str:
    mc = model.config
    cards = [
        ("latent dims", str(mc.latent_dim)),
        ("input", "x".join(str(s) for s in mc.input_shape)),
        ("likelihood", mc.likelihood),
        ("parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
    ]
    cards.append(("prior", _prior_card(mc, config.get("prior_fit"))))
    train = config.get("train") or {}
    if "data" in train:
        cards.append(("data", str(train["data"])))
    if records:
        last = records[-1]
        cards.append(("epochs", str(last.get("epoch", len(records)))))
        if isinstance(last.get("test_neg_elbo"), int | float):
            cards.append(("test −ELBO (last epoch)", f"{last['test_neg_elbo']:.3f} nats"))
        if isinstance(last.get("best_epoch"), int):
            cards.append(("model kept from", f"epoch {last['best_epoch']} (best on the holdout)"))
    if evaluation and isinstance(evaluation.get("neg_elbo"), int | float):
        cards.append(("evaluate −ELBO", f"{evaluation['neg_elbo']:.3f} nats"))
    return "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
        for k, v in cards
    )


def _prior_card(mc, fit: dict | None) -> str:
    """What p(z) is: its kind and size, and for a `vaelab fit-prior` output where it came from."""
    over = " over z2" if mc.top_latent_dim else ""
    if mc.prior == "vamp":
        return f"VampPrior{over}, {mc.pseudo_inputs} pseudo-inputs"
    if mc.prior == "mixture":
        how = (
            f", fitted after training to {Path(str(fit.get('from', '?'))).name}"
            if isinstance(fit, dict)
            else ""
        )
        return f"Gaussian mixture{over}, {mc.mixture_components} components{how}"
    return f"N(0, I){over}"


def render_html(
    run_dir: str | Path,
    model: VAE,
    figures: list[Figure],
    records: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
    config: dict[str, Any],
    data_name: str | None = None,
) -> str:
    """The report page as one HTML string (UTF-8, no external resources)."""
    name = Path(run_dir).resolve().name
    nav = "".join(f'<a href="#fig-{f.kind}">{escape(TITLES[f.kind][0])}</a>' for f in figures)
    nav += '<a href="#metrics">Metrics</a><a href="#config">Config</a>'
    parts = []
    for f in figures:
        title, caption = TITLES[f.kind]
        if f.png is None:
            body = f'<p class="note">{escape(f.note)}</p>'
        else:
            uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
            w, h = f.size
            body = (
                f'<img src="{uri}" width="{w}" height="{h}" alt="{escape(title)}" data-kind="{f.kind}">'
                f"<figcaption>{escape(caption)}</figcaption>"
            )
        parts.append(f'<section id="fig-{f.kind}"><h2>{escape(title)}</h2><figure>{body}</figure></section>')
    if evaluation:
        eval_html = "<h3>Evaluation (" + escape(EVALUATE_FILE) + ")</h3>" + _kv_table(_flatten(evaluation))
    else:
        eval_html = f'<p class="note">No {EVALUATE_FILE}: run <code>vaelab evaluate</code> to add it.</p>'
    if records:
        epochs_html = f"<h3>Per epoch ({escape(METRICS_FILE)})</h3>" + _metrics_table(records)
        epochs_html += _kl_per_dim_table(records)
    else:
        epochs_html = f'<p class="note">No per-epoch metrics ({escape(METRICS_FILE)}).</p>'
    stamp = time.strftime("%Y-%m-%d %H:%M")
    source = f", figures on the held-out split of '{escape(data_name)}'" if data_name else ""
    where = escape(str(Path(run_dir).resolve()))
    sub = f"{where} · generated {stamp} by vaelab {escape(__version__)}{source}"
    metrics = f'<p class="note">All numbers in nats per example.</p>{eval_html}{epochs_html}'
    config_html = escape(json.dumps(config, indent=2))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="vaelab {escape(__version__)}">
<title>vaelab report: {escape(name)}</title>
<style>{static_text("report.css")}</style></head>
<body><header><h1>vaelab report: <span>{escape(name)}</span></h1>
<p class="sub">{sub}</p>
<div class="cards">{_summary(model, config, records, evaluation)}</div>
<nav>{nav}</nav></header>
<main><div class="figs">{"".join(parts)}</div>
<section id="metrics"><h2>Metrics</h2>{metrics}</section>
<section id="config"><h2>Config ({CONFIG_FILE})</h2><pre>{config_html}</pre></section>
</main></body></html>
"""


def build_report(run_dir: str | Path, model: VAE, data: Dataset | None) -> str:
    """Make every figure and render the page for the run in ``run_dir``."""
    config = read_config(run_dir)
    records = read_metrics(run_dir)
    figures = make_figures(model, data, run_dir)
    name = data.name if data is not None else None
    return render_html(run_dir, model, figures, records, read_evaluation(run_dir), config, name)
