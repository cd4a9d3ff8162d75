"""``vaelab train --init-from RUN_DIR``: a new run that starts from another run's weights.

The model (architecture, likelihood, prior) is RUN_DIR's; the training settings are this command's
flags, so a user can fine-tune with another objective, lr or KL weight (e.g. IWAE after an ELBO run)
without touching RUN_DIR. The data defaults to RUN_DIR's source and options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.errors import VaelabError

# Flags that shape the model: with --init-from the model is RUN_DIR's, so they cannot be given.
MODEL_FLAGS = (
    "latent_dim",
    "hidden",
    "likelihood",
    "arch",
    "channels",
    "gated",
    "conditional",
    "prior",
    "pseudo_inputs",
    "mixture_components",
    "top_latent_dim",
)


def check_flags(args: argparse.Namespace) -> None:
    """One-line error for a model flag next to --init-from."""
    if args.out is not None and Path(args.out).resolve() == Path(args.init_from).resolve():
        raise VaelabError(f"--out '{args.out}' is the --init-from run: write the new run somewhere else")
    parser = args.train_parser
    for dest in MODEL_FLAGS:
        if getattr(args, dest) != parser.get_default(dest):
            raise VaelabError(
                f"--{dest.replace('_', '-')} cannot be used with --init-from: the model comes from "
                f"'{Path(args.init_from) / 'config.json'}'"
            )


def load_source(args: argparse.Namespace):
    """--init-from RUN_DIR -> (its model on the CPU, the data SOURCE: --data or RUN_DIR's own)."""
    from vaelab.io import load

    from ._common import run_data_source

    check_flags(args)
    model = load(args.init_from)  # config.json + model.safetensors, with one-line errors
    return model, run_data_source(args.init_from, args.data)


def load_data(args: argparse.Namespace, model, options: dict):
    """The training data for a run started from ``model``: RUN_DIR's data options when it is RUN_DIR's
    source, overridden by the flags given; it must fit the model (shape, likelihood, a CVAE's labels)."""
    from ._common import load_data_for

    return load_data_for(model, args.data, args.init_from, options)
