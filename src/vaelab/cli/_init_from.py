"""``vaelab train --init-from RUN_DIR``: a new run that starts from another run's weights.

The model (architecture, likelihood, prior) is RUN_DIR's; the training settings are this command's
flags, so a user can fine-tune with another objective, lr or KL weight (e.g. IWAE after an ELBO run)
without touching RUN_DIR. The data defaults to RUN_DIR's source and options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.errors import VaelabError

from . import _flags


def check_flags(args: argparse.Namespace) -> None:
    """One-line error for a model flag next to --init-from."""
    if args.out is not None and Path(args.out).resolve() == Path(args.init_from).resolve():
        raise VaelabError(f"--out '{args.out}' is the --init-from run: write the new run somewhere else")
    for dest in _flags.model_flags_given(args):  # the VAEConfig flags: the model is RUN_DIR's
        raise VaelabError(
            f"{_flags.spelled(args, dest)} cannot be used with --init-from: the model comes from "
            f"'{Path(args.init_from) / 'config.json'}'"
        )


def load_source(args: argparse.Namespace):
    """--init-from RUN_DIR -> (that `Run`, its model on the CPU, the data SOURCE: --data or RUN_DIR's own)."""
    from vaelab.training.run import Run

    source = Run.open(args.init_from)
    model = source.load_model()  # config.json + model.safetensors, with one-line errors
    return source, model, source.data_source(args.data)


def load_data(args: argparse.Namespace, source, options: dict):
    """The training data for a run started from the `Run` ``source``: its data options when it is its
    source, overridden by the flags given; it must fit the model (shape, likelihood, a CVAE's labels)."""
    return source.load_data(args.data, options)
