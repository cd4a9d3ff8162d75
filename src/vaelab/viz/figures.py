"""Pictures: image grids as PNG (Pillow only), with optional row/column labels and a title."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from vaelab.files import atomic_write_bytes

MIN_TILE = 56  # small images (8x8 digits) are upscaled so a grid is readable
INK = (40, 40, 48)  # label text
MUTED = (110, 110, 120)  # column labels, subtitles
MARGIN = 6  # px around label text


@dataclass(frozen=True)
class GridLayout:
    """Where tiles sit in an `image_grid`: ncols x nrows tiles of th x tw px, ``pad`` px apart."""

    ncols: int
    nrows: int
    th: int
    tw: int
    pad: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in px."""
        return (self.ncols * (self.tw + self.pad) + self.pad, self.nrows * (self.th + self.pad) + self.pad)

    def row_centre(self, r: int) -> int:
        return self.pad + r * (self.th + self.pad) + self.th // 2

    def col_centre(self, c: int) -> int:
        return self.pad + c * (self.tw + self.pad) + self.tw // 2


def grid_layout(
    n: int, h: int, w: int, nrow: int | None = None, pad: int = 2, min_tile: int = MIN_TILE
) -> GridLayout:
    """The layout of n tiles of h x w px, ``nrow`` per row (default near-square), upscaled to ``min_tile``."""
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    scale = max(1, math.ceil(min_tile / max(h, w)))
    return GridLayout(nrow, math.ceil(n / nrow), h * scale, w * scale, pad)


def as_tiles(images: Tensor) -> Tensor:
    """(N, C, H, W) -> float (N, C', H', W') in [0, 1] on the CPU with C' in {1, 3}.

    Flat data (N, 1, 1, D) becomes near-square grey tiles; other channel counts show channel 0.
    """
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    if h == 1 and c == 1:  # flat vectors: lay out as a square-ish tile
        side = math.ceil(math.sqrt(w))
        x = torch.nn.functional.pad(x.flatten(1), (0, side * side - w)).view(n, 1, side, side)
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    return x


def image_grid(
    images: Tensor, nrow: int | None = None, pad: int = 2, min_tile: int = MIN_TILE
) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one PIL image with ``nrow`` tiles per row, upscaled if tiny.

    C is 1 (grey) or 3 (RGB); flat data (1, 1, D) is shown as a near-square grey tile.
    The size is ``grid_layout(N, H, W, nrow, pad, min_tile).size``.
    """
    x = as_tiles(images)
    n, c, h, w = x.shape
    lay = grid_layout(n, h, w, nrow, pad, min_tile)
    scale = lay.th // h
    width, height = lay.size
    canvas = np.ones((height, width, c), dtype=np.float32)
    tiles = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, lay.ncols)
        top, left = pad + r * (lay.th + pad), pad + col * (lay.tw + pad)
        canvas[top : top + lay.th, left : left + lay.tw] = tiles[i]
    arr = (canvas * 255).round().astype(np.uint8)
    return Image.fromarray(arr[..., 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (a bitmap fallback where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def text_size(text: str, size: int) -> tuple[int, int]:
    left, top, right, bottom = font(size).getbbox(text)
    return int(right - left), int(bottom - top)


def wrap_text(text: str, size: int, width: int) -> list[str]:
    """Split ``text`` at spaces into lines at most ``width`` px wide at ``size`` (a single word wider
    than that gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_size(f"{lines[-1]} {word}", size)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def annotate(
    grid: Image.Image,
    layout: GridLayout,
    title: str | None = None,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    label_size: int = 12,
    title_size: int = 14,
) -> Image.Image:
    """Add a title strip, row labels on the left and column labels on top of ``grid`` -> RGB image.

    Width = label column + grid width (or the title's longest word); height = title strip + column-label
    strip + grid height. The title wraps onto as many lines as the width needs. A label may be ''
    (nothing drawn); labels wider than their cell are not truncated, so keep them short.
    """
    row_labels = row_labels or []
    col_labels = col_labels or []
    left = max((text_size(t, label_size)[0] for t in row_labels if t), default=0)
    left = left + 2 * MARGIN if left else 0
    lines = wrap_text(title, title_size, grid.width + left - 2 * MARGIN) if title else []
    line_h = text_size("Ag", title_size)[1] + MARGIN // 2
    title_h = len(lines) * line_h + 2 * MARGIN if lines else 0
    widest = max((text_size(t, title_size)[0] + 2 * MARGIN for t in lines), default=0)
    cols_h = text_size("Ag", label_size)[1] + MARGIN if any(col_labels) else 0
    top = title_h + cols_h
    out = Image.new("RGB", (max(grid.width + left, widest), grid.height + top), "white")
    out.paste(grid.convert("RGB"), (left, top))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * line_h), line, fill=INK, font=font(title_size), anchor="lt")
    for c, label in enumerate(col_labels):
        if label:
            x = left + layout.col_centre(c)
            draw.text((x, top - 2), label, fill=MUTED, font=font(label_size), anchor="ms")
    for r, label in enumerate(row_labels):
        if label:
            y = top + layout.row_centre(r)
            draw.text((left - MARGIN, y), label, fill=INK, font=font(label_size), anchor="rm")
    return out


def labelled_grid(
    images: Tensor,
    nrow: int | None = None,
    title: str | None = None,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    pad: int = 2,
    min_tile: int = MIN_TILE,
) -> Image.Image:
    """`image_grid` + `annotate`: a grid of (N, C, H, W) images with a title and labels."""
    x = as_tiles(images)
    lay = grid_layout(x.shape[0], x.shape[2], x.shape[3], nrow, pad, min_tile)
    return annotate(image_grid(x, nrow, pad, min_tile), lay, title, row_labels, col_labels)


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save atomically as PNG."""
    atomic_write_bytes(path, png_bytes(image))


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> None:
    """`image_grid` then `save_png`."""
    save_png(image_grid(images, nrow), path)


def recon_grid(originals: Tensor, recons: Tensor, per_row: int = 8) -> Tensor:
    """Interleave rows: originals above their reconstructions -> (2N, C, H, W) for ``nrow=per_row``."""
    n = originals.shape[0]
    missing = -n % per_row
    if missing:  # pad the last row with white tiles so pairs stay aligned
        blank = torch.ones(missing, *originals.shape[1:], dtype=originals.dtype)
        originals = torch.cat([originals.cpu(), blank])
        recons = torch.cat([recons.cpu(), blank])
    rows = []
    for start in range(0, originals.shape[0], per_row):
        rows += [originals[start : start + per_row], recons[start : start + per_row]]
    return torch.cat(rows)
