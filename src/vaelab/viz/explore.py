"""``vaelab explore``'s state and API: a trained run's latent space as plain dicts.

`Explorer` holds the model and the held-out examples and answers the page's calls (info, decode,
interpolate, examples, a PNG) with JSON-ready dicts; `explore_server` serves it over HTTP.
Every request is bounded: number of latent vectors, their length and values, interpolation steps,
page sizes and image sizes. Bad input raises `ApiError`: a 4xx status with a one-line message.
"""

from __future__ import annotations

import base64
import math
import re
import threading
from typing import Any

import numpy as np
import torch

from vaelab.data.dataset import Dataset
from vaelab.models.vae import VAE
from vaelab.viz.figures import as_tiles, image_grid, png_bytes
from vaelab.viz.latent import METHODS, decode_class, decode_mean, encode_means, path_through, rank_dims

MAX_VECTORS = 256  # latent vectors per decode call
Z_LIMIT = 10.0  # |z_i| bound: the prior puts ~0 mass beyond; keeps the decoder in sane territory
MAX_STEPS = 64  # interpolation frames
MAX_PAGE = 200  # examples per page
MAX_SCALE = 32  # PNG upscaling factor
MAX_SIDE = 2048  # px, either side of a PNG
MAX_POINTS = 2000  # latent means sent for the scatter
SLIDERS = 8  # top dims by KL that get a slider


class ApiError(Exception):
    """A client error: HTTP ``status`` (4xx) with a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be in {lo}..{hi}, got {value}")
    return value


def _query_int(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    if name not in query:
        return default
    text = query[name]
    if not re.fullmatch(r"-?[0-9]{1,12}", text):
        raise ApiError(400, f"{name} must be an integer")
    return _int(int(text), name, lo, hi)


def pixels(images: torch.Tensor) -> dict[str, Any]:
    """(N, C, H, W) in [0, 1] -> {"shape": [N, H, W, C], "data": base64 of uint8 NHWC}, C in {1, 3}."""
    x = as_tiles(images)
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return {"shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


class Explorer:
    """The app's state and API, independent of HTTP. Model calls are serialised by a lock."""

    def __init__(self, model: VAE, data: Dataset, run_name: str = "run", label: int | None = None) -> None:
        self.model = model.eval()
        self.label = decode_class(model, label)  # a CVAE decodes typed-in latents as this class
        self.run_name = run_name
        self.split = data.test
        self.classes = data.classes
        self.lock = threading.Lock()
        self.dim = model.config.latent_dim
        mu, kl = encode_means(model, self.split)
        self.mu = mu  # (N, D) posterior means of the held-out examples
        self.order, self.kl, self.score_name = rank_dims(model, mu, kl)  # KL, or activity for vamp
        self.labels = None if self.split.y is None else self.split.y.cpu().long()

    # -- queries ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out: dims ranked by KL, scatter points, labels."""
        n = len(self.mu)
        keep = torch.arange(n)
        if n > MAX_POINTS:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:MAX_POINTS].sort().values
        labels = None
        centroids = None
        if self.labels is not None:
            labels = self.labels[keep].tolist()
            centroids = {
                str(v): [round(float(c), 4) for c in self.mu[self.labels == v].mean(0)]
                for v in sorted(set(self.labels.tolist()))
            }
        c, h, w = self.model.config.input_shape
        return {
            "run": self.run_name,
            "latent_dim": self.dim,
            "input_shape": [c, h, w],
            "likelihood": self.model.config.likelihood,
            "dims": self.order,
            "kl": [round(v, 4) for v in self.kl],  # the ranking score, named by "score"
            "score": self.score_name,
            "sliders": self.order[:SLIDERS],
            "n_examples": n,
            "points": [[round(float(v), 3) for v in row] for row in self.mu[keep]],
            "labels": labels,
            "classes": self.classes,
            "centroids": centroids,
            "decode_label": self.label,  # a CVAE's class when the page names none; null otherwise
            "n_classes": self.model.config.n_classes,  # 0 unless conditional
            "limits": {
                "z": Z_LIMIT,
                "vectors": MAX_VECTORS,
                "steps": MAX_STEPS,
                "page": MAX_PAGE,
                "scale": MAX_SCALE,
                "side": MAX_SIDE,
            },
        }

    def _latents(self, raw: Any) -> torch.Tensor:
        """Validate a list of latent vectors -> (N, D) float32."""
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "z must be a non-empty list of latent vectors")
        if len(raw) > MAX_VECTORS:
            raise ApiError(413, f"at most {MAX_VECTORS} latent vectors per request, got {len(raw)}")
        for row in raw:
            if not isinstance(row, list) or len(row) != self.dim:
                raise ApiError(400, f"each latent vector must be a list of {self.dim} numbers")
            for v in row:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise ApiError(400, "latent values must be finite numbers")
                if abs(v) > Z_LIMIT:
                    raise ApiError(400, f"latent values must lie in [-{Z_LIMIT:g}, {Z_LIMIT:g}]")
        return torch.tensor(raw, dtype=torch.float32)

    def _class(self, value: Any) -> int | None:
        """A request's class for a CVAE: the server's ``label`` when absent, else 0..C-1."""
        if value is None:
            return self.label
        if self.label is None:
            raise ApiError(400, "label applies to conditional runs only")
        return _int(value, "label", 0, self.model.config.n_classes - 1)

    def _decode(self, z: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        """z (N, D) -> pixel means; a CVAE's y is labels or class weights (N, ...), or one class."""
        y = self.label if y is None else y
        if isinstance(y, int):
            y = torch.full((len(z),), y, dtype=torch.long)
        with self.lock:
            return decode_mean(self.model, z, y)

    def decode(self, body: dict[str, Any]) -> dict[str, Any]:
        """{"z": [[D floats], ...], "label": C or [C per vector] (conditional runs, optional)}
        -> decoded pixel means."""
        z = self._latents(body.get("z"))
        raw = body.get("label")
        if not isinstance(raw, list):
            return {"images": pixels(self._decode(z, self._class(raw)))}
        if len(raw) != len(z):  # one class per vector: e.g. one point as every class
            raise ApiError(400, f"label must be one class or a list of {len(z)}, one per latent vector")
        if self.label is None:
            raise ApiError(400, "label applies to conditional runs only")
        top = self.model.config.n_classes - 1
        y = torch.tensor([_int(v, "label", 0, top) for v in raw], dtype=torch.long)
        return {"images": pixels(self._decode(z, y))}

    def _index(self, value: Any, name: str) -> int:
        return _int(value, name, 0, len(self.split) - 1)

    def interpolate(self, body: dict[str, Any]) -> dict[str, Any]:
        """{"a": i, "b": j, "steps": n, "method": "linear"|"spherical"} -> path z and its images."""
        a, b = self._index(body.get("a"), "a"), self._index(body.get("b"), "b")
        steps = _int(body.get("steps", 10), "steps", 2, MAX_STEPS)
        method = body.get("method", "linear")
        if method not in METHODS:
            raise ApiError(400, f"method must be one of {', '.join(METHODS)}")
        z = path_through(self.mu[[a, b]], steps, method)
        soft = None  # a CVAE's path also moves from a's one-hot label to b's
        if self.label is not None:
            assert self.labels is not None  # a CVAE's held-out split has labels
            onehot = self.model.one_hot(self.labels[[a, b]])
            assert onehot is not None  # a CVAE
            soft = path_through(onehot.cpu(), steps, "linear")
        z_out = [[round(float(v), 4) for v in row] for row in z]
        return {"z": z_out, "images": pixels(self._decode(z, soft))}

    def examples(self, query: dict[str, str]) -> dict[str, Any]:
        """?label=L&offset=O&limit=K -> a page of held-out examples (pixels, labels, posterior means)."""
        idx = torch.arange(len(self.split))
        if "label" in query:
            if self.labels is None:
                raise ApiError(400, "this run's data has no labels")
            label = _query_int(query, "label", 0, -(2**31), 2**31)
            idx = idx[self.labels == label]
        offset = _query_int(query, "offset", 0, 0, 10**9)
        limit = _query_int(query, "limit", 48, 1, MAX_PAGE)
        page = idx[offset : offset + limit]
        labels = None if self.labels is None else self.labels[page].tolist()
        return {
            "total": len(idx),
            "offset": offset,
            "index": page.tolist(),
            "labels": labels,
            "z": [[round(float(v), 4) for v in self.mu[i]] for i in page],
            "images": pixels(self.split.batch(page)) if len(page) else None,
        }

    def image_png(self, query: dict[str, str]) -> bytes:
        """?z=v1,v2,...&scale=S&label=C -> the decoded image as a PNG, S times larger (nearest
        neighbour); ``label`` only for conditional runs."""
        text = query.get("z", "")
        if len(text) > 32 * self.dim + 64:
            raise ApiError(414, "z is too long")
        try:
            row = [float(t) for t in text.split(",")]
        except ValueError:
            raise ApiError(400, "z must be comma-separated numbers") from None
        z = self._latents([row])
        _, h, w = self.model.config.input_shape
        side = max(h, w) if h > 1 else math.ceil(math.sqrt(w))
        scale = _query_int(query, "scale", 8, 1, MAX_SCALE)
        if side * scale > MAX_SIDE:
            raise ApiError(400, f"scale {scale} would make an image over {MAX_SIDE} px wide")
        label = None
        if "label" in query:
            label = self._class(_query_int(query, "label", 0, -(2**31), 2**31))
        return png_bytes(image_grid(self._decode(z, label), nrow=1, pad=0, min_tile=side * scale))
