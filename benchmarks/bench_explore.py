"""How live is `vaelab explore`? Round-trip latency of the explorer's decode and interpolate calls.

Starts the explorer server in-process on 127.0.0.1 and sends requests over one keep-alive
connection, as the page does while a point is dragged (one request in flight at a time).

    python benchmarks/bench_explore.py [--run RUN_DIR] [--n 500]

Without --run it trains a small digits model first (2-d latent, 20 epochs). Prints p50/p95/max
latency in milliseconds and requests per second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from vaelab.cli import main as vaelab
from vaelab.data.sources import load_dataset
from vaelab.io import load_train_config
from vaelab.models.vae import load
from vaelab.viz.server import make_server


def timed(conn: http.client.HTTPConnection, path: str, body: dict) -> float:
    payload = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", path, payload, {"Content-Type": "application/json"})
    res = conn.getresponse()
    res.read()
    elapsed = time.perf_counter() - t0
    assert res.status == 200, res.status
    return elapsed * 1000


def summary(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return (
        f"{name:<24} n={len(ms):<5} p50 {statistics.median(ms):6.2f} ms  p95 {q[18]:6.2f} ms  "
        f"max {max(ms):6.2f} ms  ({1000 / statistics.mean(ms):6.0f} req/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="RUN_DIR to explore (default: train a small digits run)")
    ap.add_argument("--n", type=int, default=500, help="requests per endpoint")
    args = ap.parse_args()
    run = args.run
    if run is None:
        run = str(Path(tempfile.mkdtemp(prefix="bench-explore-")) / "run")
        vaelab(["train", "--data", "digits", "--out", run, "--epochs", "20", "--latent-dim", "2"])
    tcfg = load_train_config(run)
    model = load(run)
    server = make_server(model, load_dataset(tcfg.data if tcfg else "digits"), run, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    gen = torch.Generator().manual_seed(0)
    d = model.config.latent_dim
    zs = (torch.randn(args.n + 20, d, generator=gen).clamp(-3, 3)).tolist()
    for z in zs[:20]:  # warm-up: first calls pay for lazy initialisation
        timed(conn, "/api/decode", {"z": [z]})
    decode = [timed(conn, "/api/decode", {"z": [z]}) for z in zs[20:]]
    n_ex = server.explorer.mu.shape[0]
    interp = [
        timed(conn, "/api/interpolate", {"a": i % n_ex, "b": (7 * i + 3) % n_ex, "steps": 16})
        for i in range(args.n)
    ]
    print(f"run {run}: latent {d}, input {model.config.input_shape}, torch threads {torch.get_num_threads()}")
    print(summary("decode (1 image)", decode))
    print(summary("interpolate (16 images)", interp))
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
