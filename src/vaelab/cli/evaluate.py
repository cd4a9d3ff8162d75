"""``vaelab evaluate``: honest numbers on the held-out split."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vaelab.errors import VaelabError

from ._common import (
    RUN_SOURCE_HELP,
    add_command,
    add_data_flags,
    add_device_flag,
    check_writable,
    data_options,
    nonneg_int,
    open_run,
    positive_int,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the model in RUN_DIR on the test split of SOURCE, in nats per example: the -ELBO, the
    importance-sampled negative log-likelihood (K samples per example), KL per latent unit and active
    units (posterior collapse), and for labelled data a linear probe and 5-NN accuracy on the
    latent means. --split train measures the training examples instead (those the run trained on):
    the difference is the generalization gap; --split holdout, the examples a run trained with
    --holdout set aside. Results are reproducible for a given --seed on the same device."""
    from vaelab.card import CARD_FILE, write_card
    from vaelab.evaluation.elbo import evaluate_model
    from vaelab.files import atomic_write_json
    from vaelab.io import EVALUATE_FILE

    if args.split != "test" and args.probes:
        raise VaelabError("--probes: probes are fit on the training split; they run with --split test only")
    run, model = open_run(args.run_dir, args.device)
    whole = args.split == "test" and args.limit is None and args.subsample is None
    if args.json is None and args.save is not False and whole:  # the run's record, which report shows
        args.json = str(Path(args.run_dir) / EVALUATE_FILE)
    if args.json:
        check_writable(Path(args.json), args.force, "--json")
    source = run.data_source(args.data)
    data = run.load_data(source, data_options(args), split=args.split)  # that split as data.test
    split_name = args.split  # "test" whether the source has its own test set or a held-out one
    if args.limit is not None:
        data = dataclasses.replace(data, test=data.test.head(args.limit))
    if args.subsample is not None:
        data = dataclasses.replace(data, test=data.test.subsample(args.subsample, args.seed))
    r = evaluate_model(
        model,
        data,
        importance_samples=args.importance_samples,
        chunk=args.chunk,
        seed=args.seed,
        probes=args.split == "test" and args.probes is not False,
        progress=args.progress,
    )
    r.update(split=split_name, data=source, seed=args.seed)
    print(
        f"{data.name} {split_name} (n={r['n']}): -ELBO {r['neg_elbo']:.3f} nats "
        f"(recon {r['recon']:.3f} + KL {r['kl']:.3f})"
    )
    if "nll" in r:
        err = "" if r["nll_std_err"] is None else f" ± {r['nll_std_err']:.3f}"
        print(
            f"NLL {r['nll']:.3f}{err} nats ({r['bits_per_dim']:.4f} bits/dim), "
            f"K={r['importance_samples']} importance samples, {r['nll_seconds']:.1f}s"
        )
        if model.config.likelihood == "bernoulli" and not _is_binary(data.test):
            print("note: the data are not binary, so the Bernoulli 'NLL' is a cross-entropy, not -log p(x)")
    # None for the vamp and mixture priors and the hierarchy: their KL does not split over dims
    per_dim = r["kl_per_dim"]
    why = "hierarchical VAE" if model.config.top_latent_dim else f"{model.config.prior} prior"
    kl = f"n/a ({why})" if per_dim is None else " ".join(f"{v:.2f}" for v in per_dim)
    print(f"active units {r['active_units']}/{r['latent_dim']}; KL per dim: {kl}")
    if "probe_accuracy" in r:
        print(f"linear probe accuracy {r['probe_accuracy']:.4f}, 5-NN accuracy {r['knn_accuracy']:.4f}")
    if args.json:
        atomic_write_json(args.json, r)
        print(f"wrote {args.json}")
        stored = Path(args.json).resolve() == (Path(args.run_dir) / EVALUATE_FILE).resolve()
        if stored and write_card(args.run_dir):
            print(f"updated the model card {Path(args.run_dir) / CARD_FILE}")
    return 0


def _is_binary(split) -> bool:
    """Whether the split's first rows, in model units (after any binarization), are all 0 or 1."""
    x = split.batch(slice(0, 1000))
    return bool(((x == 0) | (x == 1)).all())


def register(sub) -> None:
    p = add_command(sub, "evaluate", cmd_evaluate)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help=RUN_SOURCE_HELP)
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the results to FILE (default: RUN_DIR/evaluate.json when the whole test split is "
        "evaluated, which vaelab report shows; other splits and subsets write no file unless given one)",
    )
    p.add_argument(
        "--save",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--no-save: do not write RUN_DIR/evaluate.json",
    )
    p.add_argument(
        "--importance-samples",
        type=nonneg_int,
        default=1000,
        metavar="K",
        help="samples per example for the NLL (default 1000; the usual paper protocol is 5000; 0 skips it)",
    )
    p.add_argument(
        "--chunk",
        type=positive_int,
        default=None,
        metavar="M",
        help="most (example, sample) pairs decoded at once: bounds memory, never changes the result "
        "(default 65536 on CUDA, 4096 otherwise)",
    )
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument(
        "--split",
        choices=("test", "train", "holdout"),
        default="test",
        help="the held-out split (default); the training examples the run trained on (compare the two "
        "for the generalization gap); or those a --holdout run set aside",
    )
    few = p.add_mutually_exclusive_group()
    few.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="only the split's first N examples: a quick look (the benchmark protocol uses all)",
    )
    few.add_argument(
        "--subsample",
        type=positive_int,
        metavar="N",
        help="N examples of the split drawn at random (seeded by --seed): a fair sample, unlike --limit",
    )
    p.add_argument(
        "--probes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="linear-probe and 5-NN accuracy on the latent means (labelled data; default: on, "
        "with --split test only)",
    )
    p.add_argument("--force", action="store_true", help="overwrite --json")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    add_device_flag(p)
    add_data_flags(p)
