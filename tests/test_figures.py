"""Pillow grids: sizes, placement of tiles, labels."""

from __future__ import annotations

import numpy as np
import torch

from vaelab.viz.figures import annotate, grid_layout, image_grid, labelled_grid, recon_grid, wrap_text


def test_grid_size_follows_tiles_and_upscaling() -> None:
    x = torch.rand(10, 1, 8, 8)
    img = image_grid(x, nrow=4)
    # 8x8 tiles are upscaled by ceil(56 / 8) = 7 to 56 px; 4 per row, 3 rows, 2 px padding.
    assert img.size == (4 * (56 + 2) + 2, 3 * (56 + 2) + 2)
    assert img.mode == "L"
    assert grid_layout(10, 8, 8, nrow=4).size == img.size


def test_grid_places_each_tile_exactly() -> None:
    x = torch.rand(3, 3, 28, 28)
    img = np.asarray(image_grid(x, nrow=2, pad=2, min_tile=28))
    assert img.shape == (2 * 30 + 2, 2 * 30 + 2, 3)
    tile = img[32:60, 2:30]  # the third tile: second row, first column
    assert np.array_equal(tile, (x[2].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert (img[32:60, 32:60] == 255).all()  # no fourth tile: background


def test_flat_vectors_become_square_tiles() -> None:
    img = image_grid(torch.rand(5, 1, 1, 10), nrow=5, pad=0, min_tile=4)
    assert img.size == (5 * 4, 4)  # 10 values -> 4x4 tiles (zero padded)


def test_annotate_keeps_the_grid_intact_at_the_bottom_right() -> None:
    x = torch.rand(6, 1, 8, 8)
    lay = grid_layout(6, 8, 8, nrow=3)
    grid = image_grid(x, 3)
    out = annotate(grid, lay, title="a title", row_labels=["first", "second"], col_labels=["a", "b", "c"])
    w, h = out.size
    assert w > grid.width and h > grid.height and out.mode == "RGB"
    crop = np.asarray(out)[h - grid.height :, w - grid.width :, 0]
    assert np.array_equal(crop, np.asarray(grid))
    assert (np.asarray(out)[: h - grid.height] < 128).any()  # the title and labels left ink


def test_a_long_title_wraps_instead_of_running_off_the_image() -> None:
    x = torch.rand(4, 1, 8, 8)
    lay = grid_layout(4, 8, 8, nrow=4)
    grid = image_grid(x, 4, min_tile=28)
    short = annotate(grid, lay, title="a")
    title = "traversals around held-out example 0: top 4 of 8 dims, ranked by activity (variance)"
    long = annotate(grid, lay, title=title)
    assert long.width == short.width  # wrapped to the grid's width: no word here is wider than it
    assert long.height > short.height + 20  # several lines
    strip = np.asarray(long)[: long.height - grid.height]
    assert (strip < 128).any() and (strip[:, -3:] == 255).all()  # ink, and none cut at the right edge
    assert wrap_text(title, 14, 10**6) == [title] and len(wrap_text(title, 14, 60)) > 5


def test_labelled_grid_without_labels_is_the_grid() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert np.array_equal(np.asarray(labelled_grid(x, 2))[..., 0], np.asarray(image_grid(x, 2)))


def test_recon_grid_interleaves_rows_and_pads() -> None:
    orig, rec = torch.zeros(5, 1, 2, 2), torch.full((5, 1, 2, 2), 0.5)
    g = recon_grid(orig, rec, per_row=4)
    assert g.shape == (16, 1, 2, 2)
    assert (g[:4] == 0).all() and (g[4:8] == 0.5).all() and (g[9:12] == 1).all() and (g[13:16] == 1).all()
