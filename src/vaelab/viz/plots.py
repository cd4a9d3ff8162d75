"""The figures of a run, one function per kind: what `vaelab plot` writes and `vaelab report` embeds.

Image figures (samples, recon, interp, traverse, manifold) are Pillow grids; the charts (curves,
latents) are in `charts.py`. Every function returns a PIL image; data-driven ones use the held-out
split, so they show what the model does on examples it never trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vaelab.data.dataset import Dataset, Split
from vaelab.errors import VaelabError
from vaelab.models.vae import VAE
from vaelab.training.run import read_metrics
from vaelab.viz.charts import curves_figure, latents_figure
from vaelab.viz.figures import labelled_grid, recon_grid
from vaelab.viz.latent import (
    METHODS,
    decode_class,
    decode_mean,
    encode_means,
    gaussian_quantiles,
    manifold_latents,
    path_through,
    rank_dims,
    split_labels,
    traversal_latents,
)

KINDS = ("samples", "recon", "interp", "traverse", "manifold", "latents", "curves", "pseudo")
MAX_TILES = 4096  # bound on any grid, so a typo in a flag cannot ask for a gigapixel PNG


def _check_tiles(n: int, what: str) -> None:
    if n > MAX_TILES:
        raise VaelabError(f"{what} would draw {n} images; the limit is {MAX_TILES}")


def samples_figure(model: VAE, n: int = 64, seed: int = 0, temperature: float = 1.0) -> Any:
    """n decoded draws z ~ N(0, T^2 I) (pixel means), seeded -> a near-square grid; a conditional
    model's labels cycle through its classes, one class per column."""
    _check_tiles(n, "samples")
    gen = torch.Generator(device=model.device).manual_seed(seed)
    n_cls = model.config.n_classes
    y = torch.arange(n, device=model.device) % n_cls if n_cls else None
    x = model.sample(n, generator=gen, mean=True, temperature=temperature, y=y)
    nrow = n_cls or (min(n, 8) if n <= 64 else None)
    title = f"{n} samples from the prior, temperature {temperature:g}, seed {seed}"
    if n_cls:
        title += f", one class per column (0..{n_cls - 1})"
    return labelled_grid(x, nrow, title=title)


def recon_figure(model: VAE, split: Split, n: int = 32, per_row: int = 8) -> Any:
    """The first n held-out examples (rows 'data') above their reconstructions (rows 'recon')."""
    _check_tiles(2 * n, "recon")
    x = split.batch(slice(0, n)).to(model.device)
    if len(x) == 0:
        raise VaelabError("the split is empty: nothing to reconstruct")
    per_row = min(per_row, len(x))
    recon = model.reconstruct(x, split_labels(model, split, slice(0, n)))
    grid = recon_grid(x.cpu(), recon.cpu(), per_row)
    rows = grid.shape[0] // per_row
    labels = ["data" if r % 2 == 0 else "recon" for r in range(rows)]
    title = f"reconstructions of {len(x)} held-out examples (posterior mean decoded)"
    return labelled_grid(grid, per_row, title=title, row_labels=labels)


def _pick(split: Split, count: int, seed: int) -> list[int]:
    if count > len(split):
        raise VaelabError(f"asked for {count} examples but the split has only {len(split)}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(len(split), generator=gen)[:count].tolist()


def pseudo_figure(model: VAE, n: int | None = None, per_row: int = 8) -> Any:
    """A VampPrior's first n learned pseudo-inputs u_k (rows 'u') above the decoded means of their
    components q(z | u_k) (rows 'decoded'): what each mixture component of the prior generates."""
    from vaelab.models.priors import VampPrior

    vamp = getattr(model.prior, "top", model.prior)  # a hierarchical VAE's VampPrior is over z2
    if not isinstance(vamp, VampPrior):
        raise VaelabError(
            "pseudo-inputs exist only in runs trained with {m.prior:='vamp'}", m=type(model.config)
        )
    k = model.config.pseudo_inputs
    assert k is not None  # VAEConfig resolves it
    n = min(k, n if n else 32)
    _check_tiles(2 * n, "pseudo")
    with torch.no_grad():
        u = vamp.pseudo_inputs[:n]  # (n, C, H, W)
        decoded = model.decode(model.encode(u).mean).mean
    per_row = min(per_row, n)
    grid = recon_grid(u.float().cpu(), decoded.float().cpu(), per_row)
    labels = ["u" if r % 2 == 0 else "decoded" for r in range(grid.shape[0] // per_row)]
    shown = f"the first {n} of {k}" if n < k else f"all {k}"
    title = f"VampPrior: {shown} pseudo-inputs, above their components' decoded means"
    return labelled_grid(grid, per_row, title=title, row_labels=labels)


def interp_figure(
    model: VAE,
    split: Split,
    chains: int = 4,
    points: int = 2,
    steps: int = 10,
    method: str = "both",
    seed: int = 0,
    indices: list[int] | None = None,
) -> Any:
    """Interpolations between encoded examples: each chain passes through ``points`` held-out
    examples (seeded choice, or ``indices``), ``steps`` images per segment. Per chain: a 'data' row
    with the originals above their anchors, then one row per method (linear, spherical). A
    conditional model encodes each example with its label and decodes the path with the one-hot
    labels interpolated linearly alongside z."""
    methods = list(METHODS) if method == "both" else [method]
    if any(m not in METHODS for m in methods):
        raise VaelabError("{a.method} must be linear, spherical or both; got {v!r}", v=method)
    if indices:
        bad = [i for i in indices if not 0 <= i < len(split)]
        if bad or len(indices) < 2:
            raise VaelabError(
                "{a.indices} needs >= 2 indices in 0..{top}; got {v}", top=len(split) - 1, v=indices
            )
        groups = [list(indices)]
    else:
        if points < 2:
            raise VaelabError("an interpolation needs at least 2 points")
        picked = _pick(split, chains * points, seed)
        groups = [picked[c * points : (c + 1) * points] for c in range(chains)]
    width = (len(groups[0]) - 1) * (steps - 1) + 1
    _check_tiles(width * len(groups) * (1 + len(methods)), "interp")
    tiles, labels = [], []
    for group in groups:
        x = split.batch(torch.tensor(group)).to(model.device)
        y = split_labels(model, split, group)
        with torch.no_grad():
            z = model.encode(x, y).mean.float().cpu()
        onehot = model.one_hot(y)  # None (y is None) for an unconditional model
        soft = None if onehot is None else path_through(onehot.cpu(), steps, "linear")
        data_row = torch.ones(width, *x.shape[1:])
        data_row[:: steps - 1] = x.float().cpu()  # originals above their anchors, white between
        tiles.append(data_row)
        labels.append("data")
        for m in methods:
            tiles.append(decode_mean(model, path_through(z, steps, m), soft))
            labels.append(m)
    title = f"interpolations between held-out examples, {steps} steps per segment"
    return labelled_grid(torch.cat(tiles), width, title=title, row_labels=labels)


def traverse_figure(
    model: VAE,
    split: Split,
    dims: int | None = None,
    steps: int = 11,
    span: float = 3.0,
    index: int = 0,
) -> Any:
    """Latent traversals around held-out example ``index``: row r sweeps the r-th dim (by KL, or by
    activity for a VampPrior: `rank_dims`) over [-span, span] with the other coordinates fixed at the
    example's posterior mean (and, for a conditional model, its label)."""
    if not 0 <= index < len(split):
        raise VaelabError("{a.index} must be in 0..{top}; got {v}", top=len(split) - 1, v=index)
    k = model.config.latent_dim
    n_dims = min(k, dims if dims else 16)
    _check_tiles(n_dims * steps, "traverse")
    order, score, name = rank_dims(model, *encode_means(model, split))
    y = split_labels(model, split, slice(index, index + 1))
    with torch.no_grad():
        base = model.encode(split.batch(slice(index, index + 1)).to(model.device), y).mean[0].float().cpu()
    values = torch.linspace(-span, span, steps)
    z = traversal_latents(base, order[:n_dims], values)
    x = decode_mean(model, z, None if y is None else y.expand(len(z)))
    rows = [f"z{d}  {name} {score[r]:.2f}" for r, d in enumerate(order[:n_dims])]
    cols = [f"{v:+.1f}" if abs(v) >= 0.05 else "0" for v in values.tolist()]
    shown = f"top {n_dims} of {k} dims" if n_dims < k else f"all {k} dims"
    unit = "nats" if name == "KL" else "variance of the posterior mean"
    title = f"traversals around held-out example {index}: {shown}, ranked by {name} ({unit})"
    return labelled_grid(x, steps, title=title, row_labels=rows, col_labels=cols)


def manifold_dims(model: VAE, split: Split | None) -> tuple[int, int]:
    """The plane to show: (0, 1) for a 2-D latent, else the two top dims of `rank_dims`."""
    if model.config.latent_dim == 1:
        raise VaelabError("a manifold grid needs a latent space of at least 2 dims")
    if model.config.latent_dim == 2:
        return (0, 1)
    if split is None:
        raise VaelabError("ranking latent dims needs data: a split of examples to encode")
    order, _, _ = rank_dims(model, *encode_means(model, split))
    return (order[0], order[1])


def manifold_figure(model: VAE, split: Split | None, grid: int = 20, label: int | None = None) -> Any:
    """Kingma & Welling's learned manifold: decode a grid x grid lattice of Gaussian quantiles in a
    latent plane (other dims at 0); x grows to the right, y upwards. A conditional model decodes
    every tile as class ``label`` (default 0)."""
    if grid < 2:
        raise VaelabError("{a.grid} must be at least 2, got {v}", v=grid)
    label = decode_class(model, label)
    _check_tiles(grid * grid, "manifold")
    dx, dy = manifold_dims(model, split)
    y = None if label is None else torch.full((grid * grid,), label, dtype=torch.long)
    x = decode_mean(model, manifold_latents(grid, model.config.latent_dim, (dx, dy)), y)
    q = gaussian_quantiles(grid).tolist()
    ends = {0: f"{q[0]:.1f}", grid - 1: f"{q[-1]:.1f}"}
    cols = [ends.get(i, f"z{dx}" if i == grid // 2 else "") for i in range(grid)]
    rows = [ends.get(grid - 1 - i, f"z{dy}" if i == grid // 2 else "") for i in range(grid)]  # top = max y
    rest = ", other dims 0" if model.config.latent_dim > 2 else ""
    title = f"manifold: z{dx} left to right, z{dy} bottom to top (Gaussian quantiles{rest})"
    if label is not None:
        title += f", class {label}"
    return labelled_grid(x, grid, title=title, row_labels=rows, col_labels=cols, pad=0, min_tile=28)


def needs_data(kind: str, model: VAE) -> bool:
    """Whether figure ``kind`` uses examples from a data source."""
    if kind == "manifold":
        return model.config.latent_dim > 2
    return kind in ("recon", "interp", "traverse", "latents")


def make_figure(
    kind: str,
    model: VAE,
    data: Dataset | None = None,
    run_dir: str | None = None,
    **options: Any,
) -> Any:
    """Figure ``kind`` (one of `KINDS`) for ``model``; ``options`` go to that kind's function.

    ``data`` is needed where `needs_data` says so; ``run_dir`` (for metrics.jsonl) for 'curves'.
    """
    if kind not in KINDS:
        raise VaelabError(f"unknown figure kind {kind!r} (known: {', '.join(KINDS)})")
    if data is None and needs_data(kind, model):
        raise VaelabError("figure {k!r} needs data: pass {a.data}", k=kind)
    split = None if data is None else data.test
    if kind == "curves":
        if run_dir is None:
            raise VaelabError("loss curves need a run directory with metrics.jsonl")
        return curves_figure(read_metrics(run_dir), **options)
    if kind == "samples":
        return samples_figure(model, **options)
    if kind == "pseudo":
        return pseudo_figure(model, **options)
    if kind == "latents":
        assert data is not None  # needs_data
        return latents_figure(model, data, **options)
    if kind == "manifold":
        return manifold_figure(model, split, **options)
    fns: dict[str, Callable[..., Any]] = {
        "recon": recon_figure,
        "interp": interp_figure,
        "traverse": traverse_figure,
    }
    return fns[kind](model, split, **options)
