"""Hostile data files: compression bombs, corrupt archives and special files give one clean line.

A small compressed file may claim (or inflate to) far more than memory allows; the readers check the
size a header claims and the size the stream really inflates to against the memory limit before they
hold it. A FIFO or a device given as SOURCE is refused instead of blocking forever.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datagen import assert_one_line_error, idx_bytes, run_cli

from vaelab import load_dataset
from vaelab.data.readers.idx import parse_idx, read_idx
from vaelab.errors import VaelabError

MiB = 1 << 20


def _gzip_idx_claiming(path: Path, shape: tuple[int, ...], payload: int) -> Path:
    """A gzipped uint8 IDX whose header claims ``shape`` but holds ``payload`` zero bytes."""
    head = struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + b"".join(struct.pack(">I", s) for s in shape)
    with gzip.open(path, "wb") as f:
        f.write(head)
        for _ in range(payload // MiB):
            f.write(bytes(MiB))
    return path


def test_gzipped_idx_claiming_more_than_the_memory_limit_is_refused_before_inflating(tmp_path):
    # 64 MiB of zeros compress to ~64 KiB: within deflate's ratio, but over a 16 MiB memory limit.
    path = _gzip_idx_claiming(tmp_path / "big-images-idx3-ubyte.gz", (1024, 256, 256), 64 * MiB)
    assert path.stat().st_size < MiB
    t0 = time.perf_counter()
    with pytest.raises(VaelabError, match="over the memory limit"):
        read_idx(path, limit=16 * MiB)
    assert time.perf_counter() - t0 < 5  # refused from the header: nothing inflated
    with pytest.raises(VaelabError, match="over the memory limit"):
        parse_idx(path.read_bytes(), limit=16 * MiB)
    with pytest.raises(VaelabError, match="over the memory limit"):
        load_dataset(str(path), memory_limit=16 * MiB)


def test_gzipped_idx_within_the_limit_still_reads(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(path, limit=1024)[0], arr)
    np.testing.assert_array_equal(parse_idx(path.read_bytes(), limit=1024), arr)
    with pytest.raises(VaelabError, match="over the memory limit"):
        read_idx(path, limit=23)


def _npz_with_member(path: Path, name: str, raw: bytes) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, raw)
    return path


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npz_zip_bomb_is_refused_under_the_memory_limit(tmp_path):
    bomb = _npz_with_member(tmp_path / "bomb.npz", "x.npy", _npy(np.zeros((4096, 4096), np.float32)))
    assert bomb.stat().st_size < MiB  # 64 MiB of zeros inflate from a few dozen KiB
    with pytest.raises(VaelabError, match="memory limit"):
        load_dataset(str(bomb), memory_limit=8 * MiB)


def test_npz_member_that_inflates_past_its_stated_size_is_refused(tmp_path):
    path = _npz_with_member(tmp_path / "liar.npz", "x.npy", _npy(np.zeros((512, 512), np.float32)))
    raw = bytearray(path.read_bytes())
    # Shrink the uncompressed size stated in both headers (local and central) to 1 KiB.
    real = 512 * 512 * 4 + 128
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = raw.find(sig)
        field = at + (22 if sig == b"PK\x03\x04" else 24)
        stated = struct.unpack("<I", raw[field : field + 4])[0]
        assert abs(stated - real) < 1024
        raw[field : field + 4] = struct.pack("<I", 1024)
    path.write_bytes(bytes(raw))
    with pytest.raises(VaelabError, match=r"corrupt \.npz member"):
        load_dataset(str(path))


def test_npz_with_a_corrupt_deflate_stream_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz_with_member(tmp_path / "bad.npz", "x.npy", _npy(rng.random((64, 16)).astype(np.float32)))
    raw = bytearray(path.read_bytes())
    start = raw.find(b"x.npy") + len(b"x.npy")
    for i in range(start + 8, start + 40):  # inside the first member's deflate data
        raw[i] ^= 0xA5
    path.write_bytes(bytes(raw))
    with pytest.raises(VaelabError, match=r"bad\.npz"):
        load_dataset(str(path))
    assert_one_line_error(run_cli(["train", "--data", str(path), "--out", str(tmp_path / "r")]), "bad.npz")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_as_data_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "vaelab", "train", "--data", str(fifo), "--out", str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "not a regular file or a directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_device_as_data_is_refused(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(VaelabError, match="not a regular file or a directory"):
        load_dataset("/dev/zero")
