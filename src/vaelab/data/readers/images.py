"""A folder of images (PNG, JPEG, BMP, WebP, TIFF, GIF), any size, grey or colour.

``folder/*.png`` gives unlabelled images; ``folder/<class>/**/*.png`` gives one label per
subfolder (classes in sorted order). Channels are kept: the dataset is 3 x H x W when any image
has colour (grey ones are repeated), else 1 x H x W; alpha is dropped; 16-bit images are scaled
to 8 bits; JPEG EXIF rotations are applied. All images must share one size unless
``--image-size`` is given: ``S`` scales the shorter side to S and centre-crops S x S, ``HxW``
resizes to exactly H x W. Pixels are stored as uint8.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from vaelab.data.types import DataOptions, RawData
from vaelab.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, UnidentifiedImageError)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.is_file()


def scan(folder: Path, source: str) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """-> (image paths, labels or None, class names or None), in sorted order."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    top = [p for p in entries if _is_image(p)]
    subdirs = [p for p in entries if p.is_dir()]
    if top and subdirs:
        raise DataError(
            f"'{source}': images at the top level and in subfolders; put all images in one folder, "
            "or each class in its own subfolder"
        )
    if not subdirs:
        if not top:
            raise DataError(f"'{source}': no images (PNG or JPEG) in this folder")
        return top, None, None
    files: list[Path] = []
    labels: list[int] = []
    for k, sub in enumerate(subdirs):
        found = sorted(p for p in sub.rglob("*") if _is_image(p) and not _hidden(p, sub))
        if not found:
            raise DataError(f"'{sub}': class folder without images (PNG or JPEG)")
        files += found
        labels += [k] * len(found)
    return files, labels, [p.name for p in subdirs]


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def _probe(p: Path) -> tuple[int, int, str]:
    """(height, width, mode) from the header, without decoding the pixels."""
    try:
        if p.stat().st_size == 0:
            raise DataError(f"'{p}': cannot read image (zero bytes)")
        with Image.open(p) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: rotated 90 degrees
                w, h = h, w
            return h, w, im.mode
    except _PIL_ERRORS as e:
        raise DataError(f"'{p}': cannot read image ({e})") from None


def _to_8bit(im: Image.Image, channels: int) -> Image.Image:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey -> 8-bit
        a = np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8
        im = Image.fromarray(a.astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    return im.convert("L" if channels == 1 else "RGB")


def _resize(im: Image.Image, size: tuple[int, ...]) -> Image.Image:
    """(S,): shorter side to S, centre crop S x S. (H, W): exactly H x W. Antialiased bilinear."""
    if len(size) == 2:
        return im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    s = size[0]
    w0, h0 = im.size
    scale = s / min(w0, h0)
    w, h = max(s, round(w0 * scale)), max(s, round(h0 * scale))
    im = im.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def _decode(p: Path, channels: int, size: tuple[int, ...] | None) -> np.ndarray:
    """One image -> (C, H, W) uint8."""
    try:
        with Image.open(p) as f:
            im = _to_8bit(ImageOps.exif_transpose(f), channels)
            if size is not None:
                im = _resize(im, size)
            a = np.asarray(im, dtype=np.uint8)
    except _PIL_ERRORS as e:
        raise DataError(f"'{p}': cannot decode image ({e})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def read_image_folder(folder: Path, source: str, opts: DataOptions, limit: int) -> RawData:
    files, labels, classes = scan(folder, source)
    probes = [_probe(p) for p in files]
    channels = 3 if any(mode not in GREY_MODES for _, _, mode in probes) else 1
    size = opts.image_size
    if size is None:
        h, w, _ = probes[0]
        for p, (hi, wi, _) in zip(files, probes, strict=True):
            if (hi, wi) != (h, w):
                raise DataError(
                    "'{s}': images of different sizes ('{p0}' is {w}x{h}, '{p}' is {wi}x{hi}); pass "
                    "{f.image_size} to resize them",
                    f=DataOptions, s=source, p0=files[0], w=w, h=h, p=p, wi=wi, hi=hi,
                )
    else:
        h, w = (size[0], size[0]) if len(size) == 1 else size
    nbytes = len(files) * channels * h * w
    if nbytes > limit:
        raise DataError(
            "'{s}': {n:,} images of {c}x{h}x{w} take {b:,} bytes, over the memory limit ({lim:,}); pass a "
            "smaller {f.image_size}, or save them as one .npy to stream it",
            f=DataOptions, s=source, n=len(files), c=channels, h=h, w=w, b=nbytes, lim=limit,
        )
    x = np.empty((len(files), channels, h, w), dtype=np.uint8)
    resize = size if size is not None else None

    def work(i: int) -> None:
        a = _decode(files[i], channels, resize)
        if a.shape[1:] != (h, w):  # the header lied about the size
            raise DataError(f"'{files[i]}': decoded to {a.shape[2]}x{a.shape[1]}, expected {w}x{h}")
        x[i] = a

    workers = max(1, min(8, os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(
            total=len(files), desc=f"reading {source}", unit="img", leave=False, file=sys.stderr, disable=None
        ) as bar,
    ):
        for _ in pool.map(work, range(len(files))):  # Pillow decodes without the GIL
            bar.update()
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    return RawData(
        source,
        x,
        y,
        classes=classes,
        accepts=("val_fraction", "split_seed", "image_size"),
        meta={"format": "images", "files": len(files)},
    )
