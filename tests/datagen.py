"""Small generated data files for the data tests (IDX, images, arrays, tables) and a CLI runner."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
from pathlib import Path

import numpy as np

IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An array as IDX bytes, written independently of vaelab's reader."""
    head = bytes([0, 0, IDX_CODES[arr.dtype.name], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def images(n: int, h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def labels(n: int, k: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=n).astype(np.uint8)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``vaelab ARGV`` in-process -> (exit code, stdout, stderr)."""
    from vaelab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(result: tuple[int, str, str], *needles: str) -> str:
    """Exit code 2, a single stderr line, no traceback, mentioning every needle."""
    rc, _, err = result
    assert rc == 2, result
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@contextlib.contextmanager
def serving(server):
    """Run an `http.server` server (e.g. `vaelab.viz.server.make_server`'s) on a thread while inside."""
    import threading

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
