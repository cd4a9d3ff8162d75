"""Every figure kind: the right size, tiles where they belong, and errors for impossible requests."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.models.vae import load
from vaelab.training.run import read_metrics
from vaelab.viz.charts import curves_figure
from vaelab.viz.figures import as_tiles, grid_layout, image_grid
from vaelab.viz.plots import KINDS, make_figure, manifold_dims


@pytest.fixture(scope="module")
def run2(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def run3(trained_run_3d):
    return trained_run_3d


def grid_box(image, n: int, nrow: int, tile: tuple[int, int] = (8, 8), **kw) -> np.ndarray:
    """The bottom-right region where `annotate` pastes an n-tile grid, checking that it fits."""
    w, h = grid_layout(n, *tile, nrow, **kw).size
    assert image.width >= w and image.height >= h
    return np.asarray(image)[image.height - h :, image.width - w :]


def test_samples_grid_is_the_seeded_samples(run2) -> None:
    model = load(run2)
    img = make_figure("samples", model, n=12, seed=3, temperature=0.5)
    gen = torch.Generator().manual_seed(3)
    want = image_grid(model.sample(12, generator=gen, temperature=0.5), 8)
    assert img.width == want.width  # no row labels: as wide as the grid, plus a title strip on top
    assert img.height > want.height
    assert np.array_equal(grid_box(img, 12, 8)[..., 0], np.asarray(want))


def test_recon_rows_pair_data_with_reconstructions(run2, digits) -> None:
    model = load(run2)
    img = make_figure("recon", model, digits, n=10)
    box = grid_box(img, 2 * 16, 8)  # 10 pairs padded to 2 rows of 8 -> 4 rows
    x = digits.test.batch(slice(0, 10))
    assert np.array_equal(box[2 : 2 + 56, 2 : 2 + 56, 0], np.asarray(image_grid(x[:1], 1, pad=0)))


@pytest.mark.parametrize("method,rows", [("both", 3), ("linear", 2)])
def test_interp_size(run2, digits, method: str, rows: int) -> None:
    img = make_figure("interp", load(run2), digits, chains=2, points=3, steps=4, method=method)
    grid_box(img, 2 * rows * 7, 7)  # (3 - 1) * (4 - 1) + 1 = 7 frames per row
    lay = grid_layout(2 * rows * 7, 8, 8, 7)
    assert img.height - lay.size[1] < 40  # only the title strip above the grid


def test_interp_through_given_indices(run2, digits) -> None:
    img = make_figure("interp", load(run2), digits, indices=[0, 5, 9, 2], steps=3, method="spherical")
    grid_box(img, 2 * 7, 7)
    with pytest.raises(VaelabError, match="indices"):
        make_figure("interp", load(run2), digits, indices=[0, 10_000])


def test_traverse_rows_are_dims_by_kl(run3, digits) -> None:
    img = make_figure("traverse", load(run3), digits, steps=5, span=2.0, index=4)
    box = grid_box(img, 3 * 5, 5)
    assert box.shape[:2] == (3 * 58 + 2, 5 * 58 + 2)
    with pytest.raises(VaelabError, match="index"):
        make_figure("traverse", load(run3), digits, index=10_000)


def test_manifold_size_and_plane(run2, run3, digits) -> None:
    img = make_figure("manifold", load(run2), None, grid=6)
    box = grid_box(img, 36, 6, pad=0, min_tile=28)
    assert box.shape[:2] == (6 * 32, 6 * 32)  # 8 px upscaled by ceil(28 / 8) = 4, no padding
    assert manifold_dims(load(run2), None) == (0, 1)
    d0, d1 = manifold_dims(load(run3), digits.test)
    assert d0 != d1
    with pytest.raises(VaelabError, match="needs data"):
        make_figure("manifold", load(run3), None)


def test_latents_scatter_sizes(run2, run3, digits) -> None:
    assert make_figure("latents", load(run2), digits).size == (420, 330)
    assert make_figure("latents", load(run3), digits, max_points=120).size == (840, 330)


def test_curves_size_and_optional_panels(run2, tmp_path) -> None:
    records = read_metrics(run2)
    assert len(records) == 3
    # Training records kl_per_dim and active_units every epoch: the KL panel is on.
    assert "kl_per_dim" in records[0] and "active_units" in records[0]
    assert make_figure("curves", load(run2), None, str(run2)).size == (4 * 420, 330)
    plain = [{k: v for k, v in r.items() if k not in ("kl_per_dim", "active_units")} for r in records]
    assert curves_figure(plain).size == (3 * 420, 330)
    run = shutil.copytree(run2, tmp_path / "run")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + '{"epoch": 5, "test_neg_el')  # a line cut short by a crash
    assert len(read_metrics(run)) == 3
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(VaelabError, match="metrics"):
        make_figure("curves", load(run), None, str(run))
    json.dumps(records)  # the records are plain JSON values


def test_unknown_kind_and_tile_limit(run2) -> None:
    assert "curves" in KINDS and "pseudo" in KINDS and len(KINDS) == 8
    with pytest.raises(VaelabError, match="unknown figure kind"):
        make_figure("pie", load(run2))
    with pytest.raises(VaelabError, match="limit"):
        make_figure("samples", load(run2), n=100_000)


def test_tiles_of_flat_data_are_square() -> None:
    assert as_tiles(torch.rand(2, 1, 1, 7)).shape == (2, 1, 3, 3)
