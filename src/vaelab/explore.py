"""``vaelab explore``: a small local web app over a trained run (stdlib HTTP server, plain JS).

`Explorer` holds the model and the held-out examples and answers API calls with plain dicts;
`make_server` wraps it in a `ThreadingHTTPServer`. The server reads config.json and
model.safetensors once at start and then serves only its own static files (from memory) and
the JSON/PNG API: no request path ever reaches the file system.

Every request is bounded: body size, number of latent vectors, their length and values,
interpolation steps, page sizes and image sizes. Bad input gets a 4xx with a JSON ``error``.
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import torch

from .data import Dataset
from .figures import as_tiles, image_grid, png_bytes
from .latent import METHODS, decode_class, decode_mean, encode_means, path_through, rank_dims
from .model import VAE

MAX_BODY = 256 * 1024  # bytes of JSON per request
MAX_VECTORS = 256  # latent vectors per decode call
Z_LIMIT = 10.0  # |z_i| bound: the prior puts ~0 mass beyond; keeps the decoder in sane territory
MAX_STEPS = 64  # interpolation frames
MAX_PAGE = 200  # examples per page
MAX_SCALE = 32  # PNG upscaling factor
MAX_SIDE = 2048  # px, either side of a PNG
MAX_POINTS = 2000  # latent means sent for the scatter
SLIDERS = 8  # top dims by KL that get a slider
STATIC = {  # URL path -> (file in vaelab/static, content type); nothing else is ever served
    "/": ("explore.html", "text/html; charset=utf-8"),
    "/static/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/static/explore.css": ("explore.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


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
            soft = path_through(self.model.one_hot(self.labels[[a, b]]).cpu(), steps, "linear")
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


def static_file(name: str) -> bytes:
    return resources.files("vaelab").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the `Explorer` in ``server.explorer``; everything else is a 404."""

    protocol_version = "HTTP/1.1"
    server_version = "vaelab-explore"
    sys_version = ""
    timeout = 30  # seconds per socket read: a stalled client cannot hold a thread forever
    disable_nagle_algorithm = True  # headers and body are separate writes: without this, +40 ms each
    server: ExploreServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, "application/json", extra)

    def _check_host(self) -> None:
        """Refuse foreign Host headers on a loopback server, so a web page cannot reach it
        through DNS rebinding."""
        if not self.server.loopback:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        port = self.server.server_address[1]
        bound = self.server.server_address[0]
        names = ("127.0.0.1", "localhost", "[::1]", f"[{bound}]" if ":" in bound else bound)
        allowed = {f"{h}:{port}" for h in names}
        if host not in allowed:
            raise ApiError(403, "unexpected Host header")

    def _route(self) -> tuple[str, dict[str, str]]:
        if len(self.path) > 8192:
            raise ApiError(414, "URL too long")
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        try:
            raw = parse_qs(parts.query, strict_parsing=bool(parts.query), max_num_fields=8)
        except ValueError:
            raise ApiError(400, "malformed query string") from None
        if any(len(v) > 1 for v in raw.values()):
            raise ApiError(400, "repeated query parameter")
        self._check_host()
        return path, {k: v[0] for k, v in raw.items()}

    def _body(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send a Content-Length, not a chunked body")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            raise ApiError(411, "Content-Length required")
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True  # the unread body would be parsed as the next request
            raise ApiError(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        return body

    def _handle(self, method: str) -> None:
        try:
            path, query = self._route()
            ex = self.server.explorer
            gets = {"/api/info", "/api/examples", "/api/image.png", "/favicon.ico", *STATIC}
            posts = {"/api/decode", "/api/interpolate"}
            if path not in gets | posts:
                raise ApiError(404, "not found")
            if (method == "POST") != (path in posts):
                self.close_connection = True  # a body we did not read may follow
                raise ApiError(405, "method not allowed")
            if path in STATIC:
                name, ctype = STATIC[path]
                self._send(200, self.server.static[name], ctype)
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            elif path == "/api/info":
                self._json(200, self.server.info)
            elif path == "/api/examples":
                self._json(200, ex.examples(query))
            elif path == "/api/image.png":
                self._send(200, ex.image_png(query), "image/png")
            elif path == "/api/decode":
                self._json(200, ex.decode(self._body()))
            else:
                self._json(200, ex.interpolate(self._body()))
        except ApiError as e:
            allow = {"Allow": "GET, HEAD, POST"} if e.status == 405 else None
            self._error(e.status, str(e), allow)
        except Exception:  # a bug, not the client's fault: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._error(500, "internal error (see the server's terminal)")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._error(405, "method not allowed")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class ExploreServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` bound to one `Explorer` and the static files, read once."""

    daemon_threads = True
    block_on_close = False  # browsers keep connections open; do not wait for them on shutdown
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], explorer: Explorer, verbose: bool = False) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.explorer = explorer
        self.verbose = verbose
        self.loopback = address[0] in ("127.0.0.1", "localhost", "::1") or address[0].startswith("127.")
        self.static = {name: static_file(name) for name, _ in STATIC.values()}
        self.info = explorer.info()  # fixed for the server's life: computed once

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
        return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{port}/"


def make_server(
    model: VAE,
    data: Dataset,
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    verbose: bool = False,
    label: int | None = None,
) -> ExploreServer:
    """An explorer server for the run (not yet serving: call ``serve_forever``). Port 0 picks a free port;
    a conditional model decodes as class ``label`` (default 0)."""
    explorer = Explorer(model, data, Path(run_dir).resolve().name, label)
    return ExploreServer((host, port), explorer, verbose)
