"""Hostile inputs for the fuzz tests and `benchmarks/fuzz_hostile.py`, and a crash-proof way to run them.

Three groups of cases, each a ``vaelab`` command line (or an HTTP request) built around one bad input:

- ``data``: SOURCE files that are random bytes, valid files truncated, extended or with bytes
  overwritten, compression bombs, and special files (FIFOs, devices), given to ``vaelab train``;
- ``run``: a trained run directory with a tampered ``config.json``, ``model.safetensors``, checkpoint
  ``state.json`` or ``optimizer.pt``, given to ``sample``, ``evaluate`` and ``train --resume``;
- ``http``: raw requests to ``vaelab explore``'s server.

`Worker` runs command lines in a child process, so that a crash (a segfault, an abort) or a hang is
counted, not fatal: the child is restarted and the next case goes on.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MiB = 1 << 20
TINY = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--batch-size", "64", "--no-progress"]


@dataclass
class Outcome:
    """What one case did: the exit code (negative: killed by that signal), whether a traceback was
    printed or an exception escaped, whether it hung, its last stderr line, the worker's peak RSS."""

    rc: int | None
    traceback: bool = False
    hung: bool = False
    message: str = ""
    peak_rss: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc in (0, 2) and not self.traceback and not self.hung


# --- running cases -----------------------------------------------------------------------------------


def _serve(conn) -> None:  # the child: run command lines until told to stop
    import resource
    import signal
    import sys
    import traceback

    from vaelab.cli import main

    def alarm(_signum, _frame):
        raise TimeoutError("case timed out")

    signal.signal(signal.SIGALRM, alarm)
    while True:
        job = conn.recv()
        if job is None:
            return
        argv, timeout = job
        out, err = io.StringIO(), io.StringIO()
        escaped, hung = False, False
        signal.alarm(timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except TimeoutError:
            rc, hung = None, True
        except BaseException:
            rc, escaped = 1, True
            err.write(traceback.format_exc())
        finally:
            signal.alarm(0)
        text = err.getvalue()
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tb = escaped or "Traceback (most recent call last)" in text
        conn.send(Outcome(rc, tb, hung, lines[-1][:300] if lines else "", peak))
        sys.stdout.flush()


class Worker:
    """A child process that runs ``vaelab`` command lines in-process, one at a time; restarted after
    a crash or a hang."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # spawn copies the parent's environment at start
        try:
            parent, child = self.ctx.Pipe()
            self.proc = self.ctx.Process(target=_serve, args=(child,), daemon=True)
            self.proc.start()
            self.conn = parent
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run(self, argv: list[str], timeout: int = 60) -> Outcome:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((argv, timeout))
        if self.conn.poll(timeout + 30):
            with contextlib.suppress(EOFError, OSError):
                return self.conn.recv()
        hung = self.proc.is_alive()
        self.close(kill=True)
        code = None if hung else self.proc.exitcode
        return Outcome(code, hung=hung, message="worker hung" if hung else f"worker died ({code})")

    def close(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if not kill and self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.proc = None


# --- data files --------------------------------------------------------------------------------------


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _idx(a: np.ndarray) -> bytes:
    head = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + b"".join(struct.pack(">I", s) for s in a.shape)
    return head + a.astype(np.uint8).tobytes()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def valid_files(rng: np.random.Generator) -> dict[str, bytes]:
    """One small valid file per format (file name -> bytes): what the mutations start from."""
    x = rng.integers(0, 256, (40, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 3, 40)
    csv = "label," + ",".join(f"p{i}" for i in range(16)) + "\n"
    csv += "\n".join(
        f"{y[i]}," + ",".join(map(str, x[i, 0, :16] if x.ndim == 4 else x[i].ravel()[:16])) for i in range(40)
    )
    return {
        "a.npy": _npy(x.astype(np.float32) / 255),
        "a.npz": _npz({"x": x, "y": y}),
        "a.csv": csv.encode(),
        "a-images-idx3-ubyte": _idx(x),
        "a-images-idx3-ubyte.gz": gzip.compress(_idx(x), mtime=0),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Truncate, extend, overwrite or insert bytes: reaches deeper into parsers than noise does."""
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0 and b:
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:
        return bytes(b + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    if kind == 2 and b:
        for _ in range(rng.randrange(1, 9)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    at = rng.randrange(len(b) + 1)
    return bytes(b[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16))) + b[at:])


def gzip_idx_bomb(path: Path, claimed: tuple[int, ...], payload: int) -> Path:
    head = struct.pack(">BBBB", 0, 0, 0x08, len(claimed)) + b"".join(struct.pack(">I", s) for s in claimed)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(head)
        for _ in range(payload // MiB):
            f.write(bytes(MiB))
    return path


def npz_bomb(path: Path, rows: int) -> Path:
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z,
        z.open("x.npy", "w", force_zip64=True) as f,
    ):
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (rows, 1024)}
        )
        f.write(header.getvalue())
        for _ in range(rows * 1024 * 4 // MiB):
            f.write(bytes(MiB))
    return path


def data_cases(folder: Path, n: int, seed: int = 0) -> Iterator[tuple[str, list[str]]]:
    """``n`` (label, argv) pairs of ``vaelab train`` on hostile SOURCE files written into ``folder``."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    seeds = valid_files(nrng)
    out = folder / "out"
    special: list[tuple[str, str]] = [("device", "/dev/null"), ("device", "/dev/zero")]
    if hasattr(os, "mkfifo"):
        fifo = folder / "fifo.csv"
        os.mkfifo(fifo)
        special.append(("fifo", str(fifo)))
        d = folder / "imgs-with-fifo"
        (d / "cls").mkdir(parents=True)
        os.mkfifo(d / "cls" / "a.png")
        special.append(("fifo-in-folder", str(d)))
    loop = folder / "loop.npy"
    with contextlib.suppress(OSError):
        loop.symlink_to(loop)
        special.append(("symlink-loop", str(loop)))
    special.append(
        ("gzip-idx-bomb", str(gzip_idx_bomb(folder / "b-images-idx3-ubyte.gz", (40000, 256, 256), 96 * MiB)))
    )
    special.append(("npz-bomb", str(npz_bomb(folder / "bomb.npz", 32768))))
    for i in range(n):
        if i < len(special):
            label, path = special[i]
        else:
            name = rng.choice(sorted(seeds))
            data = mutate(seeds[name], rng) if rng.random() < 0.8 else rng.randbytes(rng.randrange(1, 2048))
            target = folder / f"c{i}-{name}"
            if rng.random() < 0.1:  # an image folder holding a broken PNG
                target = folder / f"c{i}-imgs"
                (target / "k").mkdir(parents=True)
                (target / "k" / "x.png").write_bytes(data)
            else:
                target.write_bytes(data)
            label, path = f"mutated {name}", str(target)
        yield label, ["train", "--data", path, "--out", str(out), "--force", *TINY]


# --- run directories ---------------------------------------------------------------------------------


def make_base_run(folder: Path, worker: Worker) -> Path:
    run = folder / "base"
    argv = ["train", "--data", "digits", "--out", str(run), *TINY, "--epochs", "2", "--checkpoint-every", "1"]
    result = worker.run(argv, timeout=300)
    if result.rc != 0:
        raise RuntimeError(f"could not train the base run: {result.message}")
    return run


def _json_value(rng: random.Random) -> object:
    return rng.choice(
        [
            -1,
            0,
            10**9,
            10**18,
            2**63,
            -(10**12),
            1e308,
            float("nan"),
            "x" * rng.randrange(1, 50),
            None,
            True,
            [],
            {},
            [10**8] * 3,
            [1] * 200,
            {"a": 1},
            "NaN",
            "-Infinity",
        ]
    )


def _tamper_json(text: str, rng: random.Random) -> str:
    if rng.random() < 0.15:
        return mutate(text.encode(), rng).decode("utf-8", "replace")
    if rng.random() < 0.05:
        return "[" * 200_000 + "]" * 200_000
    if rng.random() < 0.05:
        return text.replace("1", "9" * 5000, 1)
    doc = json.loads(text)
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((*path, k))
                walk(v, (*path, k))
        elif isinstance(node, list):
            for j, v in enumerate(node[:5]):
                paths.append((*path, j))
                walk(v, (*path, j))

    walk(doc, ())
    for _ in range(rng.randrange(1, 3)):
        path = rng.choice(paths)
        with contextlib.suppress(IndexError, KeyError, TypeError):  # an earlier edit may have cut the path
            node = doc
            for k in path[:-1]:
                node = node[k]
            if rng.random() < 0.2 and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = _json_value(rng)
    return json.dumps(doc, allow_nan=True)


def _tamper_optimizer(path: Path, rng: random.Random) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    moments = [
        t for s in state.get("state", {}).values() for t in s.values() if torch.is_tensor(t) and t.dim()
    ]
    if moments and rng.random() < 0.7:
        t = rng.choice(moments)
        with contextlib.suppress(Exception):
            t.set_(torch.zeros(rng.choice([(1,), (10**4,), (t.numel() + 7,), (2, 3)])))
    elif moments:
        rng.choice(moments).fill_(float(rng.choice(["nan", "inf", "-inf"])))
    torch.save(state, path)


def run_cases(base: Path, folder: Path, n: int, seed: int = 0) -> Iterator[tuple[str, list[str]]]:
    """``n`` (label, argv) pairs of commands on a tampered copy of the run ``base``."""
    rng = random.Random(seed)
    for i in range(n):
        run = folder / f"r{i}"
        shutil.copytree(base, run)
        ckpts = sorted((run / "checkpoints").glob("*/"))
        target = rng.choice(
            ["config", "weights", "state", "optimizer", "ckpt-weights"] if ckpts else ["config", "weights"]
        )
        if target == "config":
            p = run / "config.json"
            p.write_text(_tamper_json(p.read_text(), rng))
        elif target == "weights":
            p = run / "model.safetensors"
            p.write_bytes(mutate(p.read_bytes(), rng))
        else:
            ck = rng.choice(ckpts)
            files = {"state": "state.json", "optimizer": "optimizer.pt", "ckpt-weights": "model.safetensors"}
            p = ck / files[target]
            if not p.exists():
                p = rng.choice([f for f in ck.iterdir() if f.is_file()])
            if p.suffix == ".json":
                p.write_text(_tamper_json(p.read_text(), rng))
            elif p.suffix == ".pt" and rng.random() < 0.6:
                try:
                    _tamper_optimizer(p, rng)
                except Exception:
                    p.write_bytes(mutate(p.read_bytes(), rng))
            else:
                p.write_bytes(mutate(p.read_bytes(), rng))
            refresh_checksums(ck)
        command = rng.choice(["sample", "evaluate", "resume"])
        if command == "sample":
            argv = ["sample", str(run), "-n", "4", "--out", str(run / "s.png")]
        elif command == "evaluate":
            argv = ["evaluate", str(run), "--importance-samples", "4", "--no-probes"]
        else:
            argv = ["train", "--resume", str(run), "--epochs", "3", "--no-progress"]
        yield f"{target} -> {command}", argv


def refresh_checksums(ckpt: Path) -> None:
    """Recompute a checkpoint's recorded checksums, as an attacker would, so the content checks run."""
    import hashlib

    state = ckpt / "state.json"
    try:
        doc = json.loads(state.read_text())
    except Exception:
        return
    sums = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(sums, dict):
        return
    for name in list(sums):
        f = ckpt / name
        if f.is_file():
            sums[name] = hashlib.sha256(f.read_bytes()).hexdigest()
    with contextlib.suppress(ValueError):
        state.write_text(json.dumps(doc))


# --- HTTP --------------------------------------------------------------------------------------------


def raw_http(
    port: int, payload: bytes, timeout: float = 15.0, half_close: bool = True
) -> tuple[int | None, bytes]:
    """Send raw bytes to 127.0.0.1:``port`` and read one response -> (status, body); status None when
    no answer came in time, 0 when the server closed the connection without one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            data = b""
            while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(v) for k, v in _headers(head) if k == "content-length" and v.isdigit()), 0)
            while len(body) < length and (chunk := s.recv(65536)):
                body += chunk
    except OSError:  # TimeoutError included
        return None, b""
    parts = head.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


def _headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)]


def http_requests(port: int, n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` (label, raw request bytes) for the explorer on ``port``."""
    rng = random.Random(seed)
    host = f"Host: 127.0.0.1:{port}\r\n"

    def post(path: str, body: bytes, length: int | None = None) -> bytes:
        n_bytes = len(body) if length is None else length
        head = f"POST {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        return f"{head}Content-Length: {n_bytes}\r\n\r\n".encode() + body

    bodies = [
        b'{"z": [[' + b"9" * 5000 + b"]]}",
        b'{"z": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"z": [[1e400, 0]]}',
        b'{"z": [["a", null]]}',
        b'{"a": 0, "b": 1, "steps": 10000000}',
        b'{"a": -1, "b": 1e9}',
        b"\xff\xfe",
        b"[]",
    ]
    for _ in range(n):
        kind = rng.randrange(5)
        if kind == 0:
            yield "random bytes", rng.randbytes(rng.randrange(1, 512))
        elif kind == 1:
            body = rng.choice(bodies)
            yield "hostile JSON", post(rng.choice(["/api/decode", "/api/interpolate"]), body)
        elif kind == 2:
            body = b'{"z": [[0, 0]]}'
            yield "short body", post("/api/decode", body, len(body) + rng.randrange(1, 100))
        elif kind == 3:
            path = rng.choice(
                ["/api/examples?page=", "/api/image.png?index=", "/../../etc/passwd?", "/static/"]
            )
            junk = rng.choice(["9" * 5000, "-1", "%00", "a" * 9000, "1&page=2&page=3", "\u00ff"])
            yield "hostile GET", f"GET {path}{junk} HTTP/1.1\r\n{host}\r\n".encode("utf-8", "replace")
        else:
            valid = post("/api/decode", b'{"z": [[0.1, -0.2]]}')
            yield "mutated request", mutate(valid, rng)
