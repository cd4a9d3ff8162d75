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
    load_data_for,
    load_run,
    nonneg_int,
    positive_int,
    run_data_source,
    trained_split,
)

KEPT_SECTIONS = ("train", "world_size")  # config.json sections the new run keeps from RUN_DIR


def cmd_fit_prior(args: argparse.Namespace) -> int:
    """Fit a Gaussian mixture prior to the model in RUN_DIR and write the model with it to --out.

    The mixture (M diagonal components, EM) is fitted to draws z ~ q(z|x) of the training examples the
    run trained on: an estimate of the aggregate posterior, the best prior for the trained encoder and
    decoder. For a hierarchical VAE it replaces p(z2). The encoder and decoder are not changed, and
    RUN_DIR is left as it is: --out is a new run directory that sample, evaluate, report and explore
    read like any other, and `vaelab evaluate` on both says what the prior gained."""
    from vaelab.evaluation.prior_fit import fit_mixture_prior
    from vaelab.io import CONFIG_FILE, read_config, save_model

    run_dir, out = Path(args.run_dir), Path(args.out)
    model = load_run(args.run_dir, args.device)  # first: a missing or broken RUN_DIR is the error to show
    _check_out(run_dir, out, args.force)
    source = run_data_source(args.run_dir, args.data)
    data = load_data_for(model, source, args.run_dir, data_options(args))
    split = trained_split(args.run_dir, source, data, "train")
    print(f"fitting a {args.components}-component mixture to {len(split) * args.draws} draws of q(z|x) ...")
    new, stats = fit_mixture_prior(model, split, args.components, args.draws, args.seed)
    doc = read_config(run_dir)
    extra = {k: doc[k] for k in KEPT_SECTIONS if k in doc}
    extra["prior_fit"] = {"from": str(run_dir.resolve()), "data": source, "seed": args.seed, **stats}
    if args.force:
        _clear_run(out)
    save_model(new, out, extra)
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


def _check_out(run_dir: Path, out: Path, force: bool) -> None:
    """--out must be a new run directory: never RUN_DIR, never a non-empty one without --force."""
    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out '{out}' exists and is not a directory")
    if out.resolve() == run_dir.resolve():
        raise VaelabError(f"--out '{out}' is RUN_DIR: write the model with the fitted prior somewhere else")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise VaelabError(f"--out '{out}' is not empty; pass --force to overwrite the run in it")


def _clear_run(out: Path) -> None:
    """--force: remove the run files of what was in --out, so nothing stale describes the new model."""
    import shutil

    from vaelab.io import CONFIG_FILE
    from vaelab.training.checkpoint import checkpoint_dir
    from vaelab.viz.charts import METRICS_FILE

    (out / CONFIG_FILE).unlink(missing_ok=True)  # first: a half-cleared dir is no longer a run
    (out / METRICS_FILE).unlink(missing_ok=True)
    if checkpoint_dir(out).is_dir():
        shutil.rmtree(checkpoint_dir(out))


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
