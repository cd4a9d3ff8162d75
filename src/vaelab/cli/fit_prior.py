"""``vaelab fit-prior``: a trained model with a Gaussian mixture prior fitted to its aggregate posterior."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.config import MIXTURE_COMPONENTS
from vaelab.errors import VaelabError

from ._common import (
    RUN_SOURCE_HELP,
    add_command,
    add_data_flags,
    add_device_flag,
    data_options,
    nonneg_int,
    open_run,
    positive_int,
)

KEPT_SECTIONS = ("train", "world_size")  # config.json sections the new run keeps from RUN_DIR


def cmd_fit_prior(args: argparse.Namespace) -> int:
    """Fit a Gaussian mixture prior to the model in RUN_DIR and write the model with it to --out.

    The mixture (M diagonal components, EM) is fitted to draws z ~ q(z|x) of the training examples the
    run trained on: an estimate of the aggregate posterior, the best prior for the trained encoder and
    decoder. For a hierarchical VAE it replaces p(z2). The encoder and decoder are not changed, and
    RUN_DIR is left as it is: --out is a new run directory that sample, evaluate, report and explore
    read like any other, and `vaelab evaluate` on both says what the prior gained."""
    from vaelab.card import write_card
    from vaelab.evaluation.prior_fit import fit_mixture_prior
    from vaelab.io import CONFIG_FILE

    run_dir, out = Path(args.run_dir), Path(args.out)
    # First: a missing or broken RUN_DIR is the error to show.
    run, model = open_run(args.run_dir, args.device)
    with _check_out(run_dir, out, args.force) as new_run:
        source = run.data_source(args.data)
        split = run.load_data(source, data_options(args), split="train").test  # the rows it trained on
        draws = len(split) * args.draws
        print(f"fitting a {args.components}-component mixture to {draws} draws of q(z|x) ...")
        new, stats = fit_mixture_prior(model, split, args.components, args.draws, args.seed)
        doc = run.config
        extra = {k: doc[k] for k in KEPT_SECTIONS if k in doc}
        extra["prior_fit"] = {"from": str(run_dir.resolve()), "data": source, "seed": args.seed, **stats}
        new_run.clear()  # what a --force'd old run left: nothing stale describes the new model
        new_run.save_model(new, extra)
        write_card(out)  # the model card: both commands, no metrics until `vaelab evaluate`
    latent = "z2" if model.config.top_latent_dim else "z"
    print(
        f"mean log-density of the {stats['n']} draws of {latent}: {stats['log_density_old_prior']:.3f} nats "
        f"under the {model.config.prior} prior, {stats['log_density_mixture']:.3f} under the fitted mixture "
        f"({stats['seconds']:.1f}s{'' if stats['converged'] else ', EM did not converge in 200 steps'})"
    )
    print(
        f"wrote {out / CONFIG_FILE} and its weights; `vaelab evaluate` on {out} and {run_dir} compares them"
    )
    return 0


def _check_out(run_dir: Path, out: Path, force: bool):
    """--out must be a new run directory: never RUN_DIR, never a non-empty one without --force
    -> the new `Run`, locked."""
    from vaelab.training.run import Run

    if out.resolve() == run_dir.resolve():
        raise VaelabError(f"--out '{out}' is RUN_DIR: write the model with the fitted prior somewhere else")
    return Run.create(out, force)


def register(sub) -> None:
    p = add_command(sub, "fit-prior", cmd_fit_prior)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="the new RUN_DIR for the model with the fitted prior")
    p.add_argument(
        "--components",
        type=positive_int,
        default=MIXTURE_COMPONENTS,
        metavar="M",
        help=f"Gaussian components (default {MIXTURE_COMPONENTS})",
    )
    p.add_argument(
        "--draws", type=positive_int, default=1, help="draws of z per training example (default 1)"
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="seeds the draws and the EM initialisation")
    p.add_argument("--data", help=RUN_SOURCE_HELP)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    add_device_flag(p)
    add_data_flags(p)
