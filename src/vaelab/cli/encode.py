"""``vaelab encode``: latent features of a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.errors import VaelabError

from ._common import (
    RUN_SOURCE_HELP,
    add_command,
    add_data_flags,
    add_device_flag,
    check_writable,
    data_options,
    open_run,
)


def cmd_encode(args: argparse.Namespace) -> int:
    """Encode SOURCE to latent features: arrays mu, logvar (and labels, split) in .npz or .csv."""
    from vaelab.evaluation.features import encode_dataset, write_features

    run, model = open_run(args.run_dir, args.device)
    out = Path(args.out)
    if out.suffix.lower() not in (".npz", ".csv"):
        raise VaelabError(f"--out '{out}' must end in .npz or .csv")
    check_writable(out, args.force)
    data = run.load_data(args.data, data_options(args))
    feats = encode_dataset(model, data, args.split)
    write_features(feats, out)
    print(f"wrote {len(feats['mu'])} x {feats['mu'].shape[1]} latent means/logvars to {out}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "encode", cmd_encode)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help=RUN_SOURCE_HELP)
    p.add_argument("--out", required=True, help="FILE.npz or FILE.csv")
    p.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="which examples; all keeps a one-file source's row order, and every row has its index",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_device_flag(p)
    add_data_flags(p)
