"""Charts drawn with matplotlib's Agg canvas (no pyplot, no global state): loss curves per epoch
and scatter plots of the latent codes. Each function returns a PIL image of a fixed size."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from vaelab.data.dataset import Dataset
from vaelab.errors import VaelabError
from vaelab.io import METRICS_FILE
from vaelab.models.vae import VAE
from vaelab.viz.latent import encode_means

DPI = 100
PANEL = (4.2, 3.3)  # inches per panel: 420 x 330 px at DPI
TRAIN_C, TEST_C, HOLDOUT_C = "#3b6fb6", "#d2691e", "#2e8b57"

# (panel title, [(metrics key, legend label, colour)]): drawn when any of the keys is present.
CURVE_PANELS = [
    (
        "−ELBO (nats / example)",
        [
            ("train_neg_elbo", "train", TRAIN_C),
            ("test_neg_elbo", "test", TEST_C),
            ("val_neg_elbo", "holdout", HOLDOUT_C),
        ],
    ),
    ("reconstruction (nats)", [("train_recon", "train", TRAIN_C), ("recon", "test", TEST_C)]),
    ("KL to the prior (nats)", [("train_kl", "train", TRAIN_C), ("kl", "test", TEST_C)]),
]


def _new_figure(panels: int, rows: int = 1) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL[0] * panels, PANEL[1] * rows), dpi=DPI, layout="constrained")
    return fig


def render(fig: Any) -> Image.Image:
    """Rasterise a matplotlib Figure with Agg -> RGB image of figsize * dpi pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return Image.open(buf).convert("RGB")


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def curves_figure(records: list[dict[str, Any]]) -> Image.Image:
    """Train and test -ELBO, reconstruction and KL per epoch, one panel each; a fourth panel shows
    the test KL of each latent dim (``kl_per_dim``) or ``active_units`` when the records have them.
    With a holdout (``best_epoch``), a dotted line marks the epoch the model was kept from.
    Size: (420 * panels) x 330 px."""
    if not records:
        raise VaelabError(f"no per-epoch metrics to plot ({METRICS_FILE} is missing or empty)")
    epochs = np.array([_number(r.get("epoch", i + 1)) for i, r in enumerate(records)])
    marker = "o" if len(records) <= 30 else None
    panels = [(t, s) for t, s in CURVE_PANELS if any(k in r for r in records for k, _, _ in s)]
    per_dim = [r.get("kl_per_dim") for r in records]
    has_dims = any(isinstance(v, list) and v for v in per_dim)
    has_active = any("active_units" in r for r in records)
    best = _number(records[-1].get("best_epoch"))
    fig = _new_figure(len(panels) + (has_dims or has_active))
    axes = fig.subplots(1, len(panels) + (has_dims or has_active), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels, strict=False):
        for key, label, colour in series:
            y = np.array([_number(r.get(key)) for r in records])
            if np.isfinite(y).any():
                ax.plot(epochs, y, label=label, color=colour, marker=marker, ms=3, lw=1.6)
        if best > 0:
            ax.axvline(best, color=HOLDOUT_C, ls=":", lw=1.2, label=f"kept (epoch {best:g})")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    if has_dims:
        _kl_per_dim_panel(axes[-1], epochs, per_dim, records, marker)
    elif has_active:
        y = np.array([_number(r.get("active_units")) for r in records])
        axes[-1].plot(epochs, y, color="#6a3d9a", marker=marker, ms=3, lw=1.6)
        axes[-1].set_title("active latent units", fontsize=11)
        axes[-1].set_xlabel("epoch")
        axes[-1].grid(alpha=0.3)
    return render(fig)


def _kl_per_dim_panel(ax: Any, epochs: np.ndarray, per_dim: list, records: list, marker: Any) -> None:
    width = max(len(v) for v in per_dim if isinstance(v, list))
    kl = np.full((len(per_dim), width), np.nan)
    for i, v in enumerate(per_dim):
        if isinstance(v, list):
            kl[i, : len(v)] = [_number(x) for x in v]
    last = kl[np.isfinite(kl).any(1)][-1]
    top = np.argsort(-np.nan_to_num(last, nan=-1.0), kind="stable")[:8]
    for d in top:
        ax.plot(epochs, kl[:, d], lw=1.3, marker=marker, ms=2, label=f"z{d}")
    active = next((r["active_units"] for r in reversed(records) if "active_units" in r), None)
    suffix = f", {active} active" if active is not None else ""
    ax.set_title(f"KL per latent dim (top {len(top)}{suffix})", fontsize=11)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, ncol=2)


def _scatter(
    ax: Any, xy: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, legend: bool = True
) -> None:
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=7, alpha=0.7, color=TRAIN_C, linewidths=0)
        return
    values = np.unique(labels)
    cmap = _colours(len(values))
    for i, v in enumerate(values):
        m = labels == v
        name = classes[v] if classes and 0 <= v < len(classes) else str(v)
        ax.scatter(xy[m, 0], xy[m, 1], s=7, alpha=0.75, color=cmap[i], linewidths=0, label=name)
    if legend and len(values) <= 20:
        ax.legend(frameon=False, fontsize=8, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def latents_figure(model: VAE, data: Dataset, max_points: int = 2000, seed: int = 0) -> Image.Image:
    """Posterior means of held-out examples, coloured by label: the plane itself for a 2-D latent
    (420 x 330 px), else PCA and t-SNE (scikit-learn) side by side (840 x 330 px)."""
    split = data.test
    mu, _ = encode_means(model, split)
    labels = None if split.y is None else split.y.cpu().numpy()
    if len(mu) > max_points:  # t-SNE is quadratic-ish: a seeded subsample keeps it quick
        keep = torch.randperm(len(mu), generator=torch.Generator().manual_seed(seed))[:max_points]
        mu = mu[keep]
        labels = None if labels is None else labels[keep.numpy()]
    z = mu.double().numpy()
    n = len(z)
    k = z.shape[1]
    if k <= 2:
        fig = _new_figure(1)
        ax = fig.subplots()
        xy = z if k == 2 else np.stack([z[:, 0], np.zeros(n)], 1)
        for r in (1.0, 2.0):  # the prior's 1 and 2 sigma circles
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(r * np.cos(t), r * np.sin(t), color="#999", lw=0.8, ls="--")
        _scatter(ax, xy, labels, data.classes)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("z0")
        ax.set_ylabel("z1" if k == 2 else "")
        ax.set_title(f"posterior means, {n} held-out examples", fontsize=11)
        return render(fig)
    if n < 4:
        raise VaelabError(f"a PCA/t-SNE scatter needs at least 4 examples, got {n}")
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    pca = PCA(n_components=2, random_state=seed).fit(z)
    tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, (n - 1) / 3), random_state=seed)
    fig = _new_figure(2)
    ax1, ax2 = fig.subplots(1, 2)
    ev = pca.explained_variance_ratio_ * 100
    _scatter(ax1, pca.transform(z), labels, data.classes, legend=False)
    ax1.set_title(f"PCA of {k}-d posterior means ({n} held-out)", fontsize=11)
    ax1.set_xlabel(f"PC1 ({ev[0]:.0f}% var)")
    ax1.set_ylabel(f"PC2 ({ev[1]:.0f}% var)")
    _scatter(ax2, tsne.fit_transform(z), labels, data.classes)
    ax2.set_title("t-SNE of the same points", fontsize=11)
    ax2.set_xticks([])
    ax2.set_yticks([])
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return render(fig)
