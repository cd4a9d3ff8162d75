"""Latent-space geometry shared by the figures and the explorer: interpolation paths, Gaussian
quantile grids, traversals, and ranking latent dimensions by how much information they carry (KL, or activity
under a prior without a per-dim KL).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.vae import VAE

METHODS = ("linear", "spherical")


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation: z0, z1 (D,), t (T,) in [0, 1] -> (T, D)."""
    t = t.to(z0.dtype).unsqueeze(1)
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation (Shoemake; White 2016 for generative models): z0, z1 (D,), t (T,) -> (T, D).

    Follows the great circle between the two directions. Under a N(0, I) prior, linear midpoints
    are shorter than typical draws (||z|| ~ sqrt(D)); slerp keeps the norm when ||z0|| = ||z1||.
    Falls back to `lerp` when the vectors are (anti)parallel or zero, where the arc is undefined.
    """
    t = t.to(z0.dtype).unsqueeze(1)
    n0, n1 = z0.norm(), z1.norm()
    if n0 < eps or n1 < eps:
        return lerp(z0, z1, t.squeeze(1))
    cos = torch.clamp((z0 @ z1) / (n0 * n1), -1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if so < 1e-4:
        return lerp(z0, z1, t.squeeze(1))
    return (torch.sin((1 - t) * omega) / so) * z0 + (torch.sin(t * omega) / so) * z1


def path_through(points: Tensor, steps: int, method: str = "linear") -> Tensor:
    """A path through P >= 2 latent points (P, D), ``steps`` >= 2 per segment, anchors shared
    -> ((P - 1) * (steps - 1) + 1, D). The points sit at indices 0, steps - 1, 2 * (steps - 1), ..."""
    if method not in METHODS:
        raise VaelabError(f"interpolation method must be one of {', '.join(METHODS)}; got {method!r}")
    if points.shape[0] < 2 or steps < 2:
        raise VaelabError("an interpolation needs at least 2 points and 2 steps")
    fn = lerp if method == "linear" else slerp
    t = torch.linspace(0, 1, steps, dtype=points.dtype, device=points.device)
    segments = [fn(points[i], points[i + 1], t)[(1 if i else 0) :] for i in range(points.shape[0] - 1)]
    return torch.cat(segments)


def gaussian_quantiles(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """n values of the N(0, 1) inverse CDF at the cell midpoints p = (i + 0.5) / n -> (n,), ascending.

    As in Kingma & Welling's manifold figures: a uniform grid on the unit square pushed through the
    inverse Gaussian CDF, so the grid covers the prior evenly by probability mass.
    """
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.special.ndtri(p).to(dtype)


def manifold_latents(n: int, latent_dim: int, dims: tuple[int, int] = (0, 1)) -> Tensor:
    """z for an n x n manifold grid -> (n * n, latent_dim), row-major with the first row at the top.

    ``dims[0]`` increases left to right, ``dims[1]`` bottom to top; other dims are 0 (the prior mean).
    """
    q = gaussian_quantiles(n)
    gy, gx = torch.meshgrid(q.flip(0), q, indexing="ij")  # (n, n): top row = largest y
    z = torch.zeros(n * n, latent_dim)
    z[:, dims[0]] = gx.reshape(-1)
    z[:, dims[1]] = gy.reshape(-1)
    return z


def traversal_latents(base: Tensor, dims: list[int], values: Tensor) -> Tensor:
    """Sweep each of ``dims`` over ``values`` (V,) with the other coordinates of ``base`` (D,) fixed
    -> (len(dims) * V, D), one row of V per dim."""
    z = base.repeat(len(dims) * len(values), 1)
    for r, d in enumerate(dims):
        z[r * len(values) : (r + 1) * len(values), d] = values.to(z.dtype)
    return z


def decode_class(model: VAE, label: int | None) -> int | None:
    """The class a conditional model decodes free latents as (grids, the explorer): ``label``,
    default 0. None for an unconditional model, for which giving a label is an error."""
    n_cls = model.config.n_classes
    if not n_cls:
        if label is not None:
            raise VaelabError(
                "{a.label} applies to conditional runs ({m.n_classes}) only", m=type(model.config)
            )
        return None
    if not 0 <= (label or 0) < n_cls:
        raise VaelabError(
            "{a.label} must be in 0..{top} for this conditional model, got {v}", top=n_cls - 1, v=label
        )
    return label or 0


def split_labels(model: VAE, split: Split, rows: slice | Tensor | list[int]) -> Tensor | None:
    """The labels (M,) of ``rows`` of ``split`` on the model's device for a conditional model, whose
    encoder and decoder read them; None for an unconditional one."""
    if not model.config.n_classes:
        return None
    if split.y is None:
        raise VaelabError(
            "this is a conditional VAE ({m.n_classes}): it needs labelled data", m=type(model.config)
        )
    return split.y[torch.as_tensor(rows) if isinstance(rows, list) else rows].to(model.device)


@torch.no_grad()
def encode_means(model: VAE, split: Split, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Posterior means and per-dim KL of every example -> (mu (N, D), kl (N, D)), float32 on the CPU
    (kl zeros where the prior has no per-dim KL). A conditional model encodes each example with its
    own label."""
    mus, kls = [], []
    for start in range(0, len(split), batch_size):
        rows = slice(start, start + batch_size)
        q = model.encode(split.batch(rows).to(model.device), split_labels(model, split, rows))
        mus.append(q.mean.float().cpu())
        # Priors without a per-dim KL rank dims by activity (`rank_dims`): zeros stand in
        kl = model.prior.kl_per_dim(q) if model.prior.per_dim_kl else torch.zeros_like(q.mean)
        kls.append(kl.float().cpu())
    if not mus:
        raise VaelabError("the split is empty: nothing to encode")
    return torch.cat(mus), torch.cat(kls)


def kl_ranking(kl_per_dim: Tensor) -> tuple[list[int], list[float]]:
    """Per-example KL (N, D) -> (dims sorted by mean KL, high first; their mean KL in nats).

    A dim whose KL stays near 0 is ignored by the decoder (posterior collapse); high-KL dims are
    the ones worth looking at. Ties keep the lower index first.
    """
    mean = kl_per_dim.double().mean(0)
    order = sorted(range(mean.numel()), key=lambda d: (-float(mean[d]), d))
    return order, [float(mean[d]) for d in order]


def rank_dims(model: VAE, mu: Tensor, kl_per_dim: Tensor) -> tuple[list[int], list[float], str]:
    """Latent dims ordered by how much they carry -> (order, score per ranked dim, the score's name).

    mu, kl_per_dim: (N, D) from `encode_means`. With the N(0, I) prior the score is the mean KL per
    dim in nats (`kl_ranking`). Other priors (the VampPrior) have no per-dim KL, and a KL to N(0, I)
    would rank by distance from a prior the model does not use, so the score is each dim's activity
    Var_x(E_q[z_d]): the statistic behind active units, which needs no prior.
    """
    if model.prior.per_dim_kl:
        order, kl = kl_ranking(kl_per_dim)
        return order, kl, "KL"
    var = mu.double().var(0, correction=0) if len(mu) > 1 else torch.zeros(mu.shape[1], dtype=torch.float64)
    order = sorted(range(var.numel()), key=lambda d: (-float(var[d]), d))
    return order, [float(var[d]) for d in order], "activity"


@torch.no_grad()
def decode_mean(model: VAE, z: Tensor, y: Tensor | None = None, batch_size: int = 1024) -> Tensor:
    """Decoder means for z (N, D) -> (N, C, H, W) float32 on the CPU. A conditional model needs y:
    labels (N,), or class weights (N, n_classes) (see `VAE.one_hot`)."""

    def labels(i: int) -> Tensor | None:
        return None if y is None else y[i : i + batch_size].to(model.device)

    out = [
        model.decode(z[i : i + batch_size].to(model.device, torch.float32), labels(i)).mean.float().cpu()
        for i in range(0, z.shape[0], batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, *model.config.input_shape)
