"""The explorer's HTTP API: correct answers, bounded requests, 4xx for bad input, no path escapes."""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
import torch
from datagen import serving
from PIL import Image

from vaelab.models.vae import load
from vaelab.viz.explore import MAX_VECTORS
from vaelab.viz.server import MAX_BODY, make_server


@pytest.fixture(scope="module")
def server(trained_run_3d, digits):
    run = trained_run_3d
    with serving(make_server(load(run), digits, run, port=0)) as srv:
        yield srv


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One raw request (http.client sends the path exactly as given) -> (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    try:
        headers = dict(headers or {})
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        if body is not None and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def post(srv, path: str, obj) -> tuple[int, dict]:
    status, _, body = request(
        srv, "POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"}
    )
    return status, json.loads(body)


def unpack(images: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(images["data"]), np.uint8).reshape(images["shape"])


def test_page_and_assets(server) -> None:
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/static/explore.js"' in body and b"http" not in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for path, ctype in [("/static/explore.js", "text/javascript"), ("/static/explore.css", "text/css")]:
        status, headers, body = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and len(body) > 500


def test_info_ranks_dims_by_kl(server) -> None:
    status, _, body = request(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and info["latent_dim"] == 3 and sorted(info["dims"]) == [0, 1, 2]
    assert info["kl"] == sorted(info["kl"], reverse=True)
    assert len(info["points"]) == info["n_examples"] == 297 and len(info["labels"]) == 297
    assert set(info["centroids"]) == {str(i) for i in range(10)}


def test_decode_matches_the_model(server) -> None:
    z = [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]]
    status, doc = post(server, "/api/decode", {"z": z})
    assert status == 200
    got = unpack(doc["images"])
    assert got.shape == (2, 8, 8, 1)
    with torch.no_grad():
        mean = server.explorer.model.decode(torch.tensor(z)).mean
    want = (mean.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, want)
    assert not np.array_equal(got[0], got[1])


def test_interpolate_and_examples(server) -> None:
    status, doc = post(server, "/api/interpolate", {"a": 3, "b": 7, "steps": 5, "method": "spherical"})
    assert status == 200 and unpack(doc["images"]).shape == (5, 8, 8, 1)
    mu = server.explorer.mu
    assert np.allclose(doc["z"][0], mu[3].tolist(), atol=1e-4)
    assert np.allclose(doc["z"][-1], mu[7].tolist(), atol=1e-4)
    status, _, body = request(server, "GET", "/api/examples?label=4&offset=0&limit=5")
    page = json.loads(body)
    assert status == 200 and page["labels"] == [4] * 5 and unpack(page["images"]).shape == (5, 8, 8, 1)
    assert page["total"] == int((server.explorer.labels == 4).sum())


def test_image_png_is_bounded(server) -> None:
    status, headers, body = request(server, "GET", "/api/image.png?z=0.1,0.2,-0.3&scale=4")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(body)).size == (32, 32)
    for query in [
        "z=0.1,0.2&scale=4",
        "z=a,b,c",
        "z=0,0,0&scale=0",
        "z=0,0,0&scale=1000",
        "z=nan,0,0",
        "z=0,0,0&scale=4&scale=5",
        "z=0,0,0&scale=%C2%B2",
        "z=" + "1," * 5000,
    ]:
        status, _, _ = request(server, "GET", "/api/image.png?" + query)
        assert 400 <= status < 500, query


BAD_DECODES = [
    {"z": [[0.0, 0.0]]},  # wrong latent length
    {"z": [[0.0, 0.0, 0.0, 0.0]]},
    {"z": [[0.0, "1", 0.0]]},
    {"z": [[0.0, True, 0.0]]},
    {"z": [[0.0, 1e6, 0.0]]},  # outside the bounded range
    {"z": [0.0, 0.0, 0.0]},  # not a list of vectors
    {"z": []},
    {"z": None},
    {},
]


@pytest.mark.parametrize("body", BAD_DECODES)
def test_bad_decode_requests_get_400(server, body) -> None:
    status, doc = post(server, "/api/decode", body)
    assert status == 400 and doc["error"]


def test_decode_limits(server) -> None:
    status, _ = post(server, "/api/decode", {"z": [[0.0, 0.0, 0.0]] * (MAX_VECTORS + 1)})
    assert status == 413
    json_ct = {"Content-Type": "application/json"}
    cases = [
        (b'{"z": [[NaN, 0, 0]]}', json_ct, 400),
        (b'{"z": [[Infinity, 0, 0]]}', json_ct, 400),
        (b"not json", json_ct, 400),
        (b"[1, 2]", json_ct, 400),
        (b"[" * 100_000, json_ct, 400),
        (b'{"z": [[0, 0, 0]]}', {"Content-Type": "text/plain"}, 415),
        (b"", {"Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)}, 413),
        (b"", {"Content-Type": "application/json", "Content-Length": "-5"}, 411),
    ]
    for body, headers, want in cases:
        status, _, _ = request(server, "POST", "/api/decode", body, headers)
        assert status == want, body[:30]


@pytest.mark.parametrize(
    "body",
    [
        {"a": 0, "b": 10_000},
        {"a": -1, "b": 2},
        {"a": 0.5, "b": 2},
        {"a": 0, "b": 1, "steps": 1},
        {"a": 0, "b": 1, "steps": 10_000},
        {"a": 0, "b": 1, "method": "cubic"},
    ],
)
def test_bad_interpolations_get_400(server, body) -> None:
    status, doc = post(server, "/api/interpolate", body)
    assert status == 400 and doc["error"]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=100000", "offset=-1", "label=four", "offset=1e3", "limit=5&limit=6", "bogus"]
)
def test_bad_example_pages_get_400(server, query: str) -> None:
    status, _, _ = request(server, "GET", "/api/examples?" + query)
    assert status == 400


ESCAPES = [
    "/static/../../etc/passwd",
    "/static/../../../../../../etc/passwd",
    "/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%252e%252e/%252e%252e/etc/passwd",
    "/static/..%5c..%5cetc%5cpasswd",
    "/static/..\\..\\etc\\passwd",
    "//etc/passwd",
    "/static//etc/passwd",
    "/static/explore.js/../../../etc/passwd",
    "/static/explore.js%00.html",
    "/static/report.css",  # shipped, but not part of the explorer
    "/static/",
    "/static",
    "/config.json",
    "/model.safetensors",
    "/metrics.jsonl",
    "/../config.json",
    "/%2e%2e/model.safetensors",
    "/api/../config.json",
    "/api/info/../../config.json",
    "/..;/etc/passwd",
    "/%00",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_path_escapes_get_404(server, path: str) -> None:
    status, _, body = request(server, "GET", path)
    assert status == 404, path
    assert b"root:" not in body and b"safetensors" not in body and b"latent_dim" not in body


def test_methods_and_hosts(server) -> None:
    assert request(server, "GET", "/api/decode")[0] == 405
    assert request(server, "POST", "/api/info", b"{}", {"Content-Type": "application/json"})[0] == 405
    assert request(server, "PUT", "/api/decode", b"{}")[0] == 405
    assert request(server, "DELETE", "/")[0] == 405
    assert request(server, "GET", "/", headers={"Host": "evil.example:80"})[0] == 403
    assert (
        request(server, "GET", "/api/info", headers={"Host": f"localhost:{server.server_address[1]}"})[0]
        == 200
    )
    assert request(server, "GET", "/" + "a" * 10_000)[0] == 414


def test_explore_cli_refuses_a_busy_port(trained_run, capsys) -> None:
    import socket

    from vaelab.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["explore", str(trained_run), "--port", str(port)]) == 2
    assert "cannot listen" in capsys.readouterr().err
