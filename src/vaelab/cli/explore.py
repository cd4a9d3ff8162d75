"""``vaelab explore``: the latent-space explorer in the browser."""

from __future__ import annotations

import argparse

from vaelab.errors import VaelabError

from ._common import (
    add_command,
    add_data_flags,
    add_device_flag,
    data_options,
    nonneg_int,
    open_run,
)


def port_number(text: str) -> int:
    value = nonneg_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535 (0 = any free port), got {value}")
    return value


def cmd_explore(args: argparse.Namespace) -> int:
    """Explore a run's latent space in the browser, served on http://127.0.0.1:PORT/.

    Drag a point in a latent plane or move sliders for the top dims by KL and watch the decoded
    image; pick two held-out examples to interpolate between; filter by label. A conditional run
    has a class picker, starting at --label, and shows the point as every class. Ctrl-C stops it."""
    from vaelab.viz.server import make_server

    run, model = open_run(args.run_dir, args.device)
    data = run.load_data(args.data, data_options(args))
    try:
        server = make_server(model, data, args.run_dir, args.host, args.port, args.verbose, args.label)
    except OSError as e:
        raise VaelabError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if not server.loopback:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the explorer")
    if model.config.n_classes:
        print(f"conditional VAE: decoding as class {args.label or 0} (--label) until the page picks one")
    print(f"exploring {args.run_dir} at {server.url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    p = add_command(sub, "explore", cmd_explore)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--port", type=port_number, default=8765, help="TCP port (default 8765; 0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)")
    p.add_argument("--data", help="SOURCE of the examples (default: the run's training source)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument("--label", type=nonneg_int, help="conditional runs: the class to start with (default 0)")
    add_device_flag(p)
    add_data_flags(p)
