"""``vaelab report``: one self-contained HTML page about a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.errors import VaelabError

from ._common import (
    add_command,
    add_data_flags,
    add_device_flag,
    check_writable,
    data_options,
    open_run,
)


def cmd_report(args: argparse.Namespace) -> int:
    """Write RUN_DIR/report.html: config, metrics and every figure, in one file that works offline.

    Figures are embedded as data URIs; the metrics include evaluate.json's numbers when present.
    Data-driven figures use the held-out split of --data (default: the run's training source)."""
    from vaelab.files import atomic_write_bytes
    from vaelab.viz.report import REPORT_FILE, build_report

    out = Path(args.out) if args.out else Path(args.run_dir) / REPORT_FILE
    if out.suffix.lower() not in (".html", ".htm"):
        raise VaelabError(f"--out '{out}' must end in .html")
    run, model = open_run(args.run_dir, args.device)
    check_writable(out, args.force)
    data = run.load_data(args.data, data_options(args))
    html = build_report(args.run_dir, model, data).encode("utf-8")
    atomic_write_bytes(out, html)
    print(f"wrote {out} ({len(html) / 1024:.0f} KiB); open it in a browser, it needs no network")
    return 0


def register(sub) -> None:
    p = add_command(sub, "report", cmd_report)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help="SOURCE for the data-driven figures (default: the run's training source)")
    p.add_argument("--out", help="FILE.html (default RUN_DIR/report.html)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_device_flag(p)
    add_data_flags(p)
