"""``vaelab evaluate``: honest numbers on the held-out split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    SOURCE_HELP,
    add_command,
    add_data_flags,
    add_device_flag,
    check_writable,
    data_options,
    load_data_for,
    load_run,
    nonneg_int,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the model on the test split of SOURCE: -ELBO, recon and KL in nats per example."""
    from ..evaluate import evaluate_elbo
    from ..io import atomic_write_json

    model = load_run(args.run_dir, args.device)
    if args.json:
        check_writable(Path(args.json), args.force, "--json")
    data = load_data_for(model, args.data, args.run_dir, data_options(args))
    result = evaluate_elbo(model, data.test, seed=args.seed)
    result.update(split=data.test_split, data=args.data, seed=args.seed)
    print(
        f"{data.name} {data.test_split} (n={result['n']}): -ELBO {result['neg_elbo']:.3f} nats "
        f"(recon {result['recon']:.3f} + KL {result['kl']:.3f})"
    )
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "evaluate", cmd_evaluate)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", required=True, help=SOURCE_HELP)
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite --json")
    add_device_flag(p)
    add_data_flags(p)
