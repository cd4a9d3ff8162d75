"""Hostile HTTP at the explorer: bodies that lie about their length and JSON numbers past Python's
digit limit get a 400 at once, never a 500 or a wait for the socket timeout."""

from __future__ import annotations

import json
import time

import pytest
from datagen import serving
from hostile import raw_http

from vaelab.models.vae import load
from vaelab.viz.server import BODY_TIMEOUT, make_server


@pytest.fixture(scope="module")
def server(trained_run, digits):
    with serving(make_server(load(trained_run), digits, trained_run, port=0)) as srv:
        yield srv


def raw_exchange(srv, payload: bytes, half_close: bool = False) -> tuple[int, dict, float]:
    """Send raw bytes, read one response -> (status, JSON body, seconds until the answer)."""
    t0 = time.perf_counter()
    status, body = raw_http(srv.server_address[1], payload, timeout=30, half_close=half_close)
    return status, json.loads(body), time.perf_counter() - t0


def _post(srv, body: bytes, length: int) -> bytes:
    port = srv.server_address[1]
    return (
        f"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("digits_", [4301, 20000])
def test_a_number_past_the_digit_limit_is_a_400(server, digits_) -> None:
    body = b'{"z": [[' + b"9" * digits_ + b', 0]]}'
    status, reply, _ = raw_exchange(server, _post(server, body, len(body)))
    assert status == 400 and "JSON" in reply["error"]


def test_a_body_shorter_than_its_length_is_a_400_without_waiting(server) -> None:
    body = b'{"z": [[0, 0]]}'
    status, reply, seconds = raw_exchange(server, _post(server, body, len(body) + 50))
    assert status == 400 and "shorter than its Content-Length" in reply["error"]
    assert seconds < BODY_TIMEOUT + 10  # not the 30 s socket timeout
    status, reply, _ = raw_exchange(server, _post(server, body, len(body) + 50), half_close=True)
    assert status == 400 and "shorter" in reply["error"]


def test_the_server_still_answers_after_hostile_requests(server) -> None:
    body = b'{"z": [[0.5, -0.5]]}'
    status, reply, _ = raw_exchange(server, _post(server, body, len(body)))
    assert status == 200 and "images" in json.dumps(reply)
