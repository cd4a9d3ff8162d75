"""Pictures: image grids as PNG (Pillow only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .io import atomic_write_bytes

MIN_TILE = 56  # small images (8x8 digits) are upscaled so a grid is readable


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one PIL image with ``nrow`` tiles per row, upscaled if tiny.

    C is 1 (grey) or 3 (RGB); flat data (1, 1, D) is shown as a near-square grey tile.
    """
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    if h == 1 and c == 1:  # flat vectors: lay out as a square-ish tile
        side = math.ceil(math.sqrt(w))
        x = torch.nn.functional.pad(x.flatten(1), (0, side * side - w)).view(n, 1, side, side)
        h = w = side
    if c not in (1, 3):
        x, c = x[:, :1], 1
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    scale = max(1, math.ceil(MIN_TILE / max(h, w)))
    th, tw = h * scale, w * scale
    canvas = np.ones((ncol * (th + pad) + pad, nrow * (tw + pad) + pad, c), dtype=np.float32)
    tiles = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (th + pad), pad + col * (tw + pad)
        canvas[top : top + th, left : left + tw] = tiles[i]
    arr = (canvas * 255).round().astype(np.uint8)
    return Image.fromarray(arr[..., 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save atomically as PNG."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


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
