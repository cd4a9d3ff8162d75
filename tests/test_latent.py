"""Latent-space geometry, checked against independent computations."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaelab.errors import VaelabError
from vaelab.viz.latent import (
    gaussian_quantiles,
    kl_ranking,
    lerp,
    manifold_latents,
    path_through,
    slerp,
    traversal_latents,
)


def test_lerp_endpoints_and_midpoint() -> None:
    z0, z1 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 2.0, -0.5])
    path = lerp(z0, z1, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(path, torch.stack([z0, (z0 + z1) / 2, z1]))


def test_slerp_is_a_rotation_in_the_plane_of_the_two_vectors() -> None:
    # Independent construction: z0 = r e1, z1 = r (cos w e1 + sin w e2); slerp(t) = r (cos tw e1 + sin tw e2).
    r, w = 2.5, 1.9
    e1, e2 = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    e1[1], e2[3] = 1.0, 1.0
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    got = slerp(r * e1, r * (math.cos(w) * e1 + math.sin(w) * e2), t)
    want = r * (torch.cos(t * w)[:, None] * e1 + torch.sin(t * w)[:, None] * e2)
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(got.norm(dim=1), torch.full((9,), r, dtype=torch.float64))


def test_slerp_keeps_typical_norm_where_lerp_shrinks_it() -> None:
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 64, generator=gen, dtype=torch.float64)
    z1 = z1 * z0.norm() / z1.norm()
    mid = torch.tensor([0.5], dtype=torch.float64)
    assert slerp(z0, z1, mid).norm() == pytest.approx(z0.norm().item(), rel=1e-9)
    assert lerp(z0, z1, mid).norm() < 0.85 * z0.norm()  # near-orthogonal draws: ~1/sqrt(2)


def test_slerp_falls_back_to_lerp_for_parallel_or_zero_vectors() -> None:
    t = torch.linspace(0, 1, 5)
    z = torch.tensor([1.0, 2.0])
    assert torch.allclose(slerp(z, 3 * z, t), lerp(z, 3 * z, t))
    assert torch.allclose(slerp(torch.zeros(2), z, t), lerp(torch.zeros(2), z, t))
    assert torch.isfinite(slerp(z, -z, t)).all()


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_path_through_shares_anchors(method: str) -> None:
    pts = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.5]])
    path = path_through(pts, steps=4, method=method)
    assert path.shape == (2 * 3 + 1, 2)
    assert torch.allclose(path[[0, 3, 6]], pts, atol=1e-6)


def test_path_through_rejects_bad_input() -> None:
    with pytest.raises(VaelabError):
        path_through(torch.zeros(2, 3), 4, "cubic")
    with pytest.raises(VaelabError):
        path_through(torch.zeros(1, 3), 4)


def test_gaussian_quantiles_match_statistics_inv_cdf() -> None:
    n = 7
    want = [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]
    assert gaussian_quantiles(n, torch.float64).tolist() == pytest.approx(want, abs=1e-9)


def test_manifold_latents_layout() -> None:
    z = manifold_latents(3, 4, dims=(2, 0)).view(3, 3, 4)
    q = gaussian_quantiles(3)
    assert torch.equal(z[0, 0, [2, 0]], torch.stack([q[0], q[-1]]))  # top left: min x, max y
    assert torch.equal(z[2, 2, [2, 0]], torch.stack([q[-1], q[0]]))  # bottom right: max x, min y
    assert (z[..., [1, 3]] == 0).all()


def test_traversal_sweeps_one_dim_per_row() -> None:
    base = torch.tensor([0.5, -1.0, 2.0])
    values = torch.tensor([-1.0, 0.0, 1.0])
    z = traversal_latents(base, [2, 0], values).view(2, 3, 3)
    assert torch.equal(z[0, :, 2], values) and torch.equal(z[1, :, 0], values)
    assert (z[0, :, :2] == base[:2]).all() and (z[1, :, 1:] == base[1:]).all()


def test_kl_ranking_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(50, 4, generator=gen) * torch.tensor([0.1, 2.0, 0.0, 1.0])
    logvar = torch.randn(50, 4, generator=gen) * 0.2
    from vaelab.models.distributions import DiagonalGaussian

    order, kl = kl_ranking(DiagonalGaussian(mu, logvar).kl_per_dim())
    ref = kl_divergence(Normal(mu.double(), (0.5 * logvar.double()).exp()), Normal(0.0, 1.0)).mean(0)
    assert order == torch.argsort(ref, descending=True).tolist()
    assert kl == pytest.approx(ref[order].tolist(), rel=1e-5)
