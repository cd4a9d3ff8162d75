"""``vaelab explore``'s HTTP side: a small local web app (stdlib server, plain JS) over an `Explorer`.

`make_server` wraps the explorer in a `ThreadingHTTPServer`. The server reads config.json and
model.safetensors once at start and then serves only its own static files (from memory) and
the JSON/PNG API: no request path ever reaches the file system. Request bodies are bounded too,
and bad input gets a 4xx with a JSON ``error``.
"""

from __future__ import annotations

import json
import socket
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from vaelab.data.dataset import Dataset
from vaelab.models.vae import VAE
from vaelab.viz.explore import ApiError, Explorer

MAX_BODY = 256 * 1024  # bytes of JSON per request
BODY_TIMEOUT = 2.0  # seconds a request's body may stall once its headers are in
STATIC = {  # URL path -> (file in vaelab/viz/static, content type); nothing else is ever served
    "/": ("explore.html", "text/html; charset=utf-8"),
    "/static/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/static/explore.css": ("explore.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def static_file(name: str) -> bytes:
    return resources.files("vaelab.viz").joinpath("static").joinpath(name).read_bytes()


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
        bound, port = self.server.host_port
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
        raw = self._read_body(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # also integers past Python's digit limit
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        return body

    def _read_body(self, length: int) -> bytes:
        """Exactly ``length`` bytes of body. A client sends its body right after the headers, so a
        body that stalls for BODY_TIMEOUT or ends early is a bad request, not a reason to wait."""
        self.connection.settimeout(BODY_TIMEOUT)
        try:
            raw = self.rfile.read(length)
        except OSError:  # TimeoutError included
            raw = b""
        finally:
            self.connection.settimeout(self.timeout)
        if len(raw) < length:
            self.close_connection = True
            raise ApiError(400, f"body shorter than its Content-Length ({len(raw)} of {length} bytes)")
        return raw

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

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is routine: say nothing. Anything else that escaped the
        handler (it answers every request it can parse itself) is one line, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        print(f"vaelab explore: request from {client_address[0]} failed: {error!r}"[:300], file=sys.stderr)

    @property
    def host_port(self) -> tuple[str, int]:
        """The bound host and port (an AF_INET or AF_INET6 address starts with them)."""
        host, port = self.server_address[:2]
        return cast(str, host), cast(int, port)

    @property
    def url(self) -> str:
        host, port = self.host_port
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
