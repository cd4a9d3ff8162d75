"""``vaelab sample`` and ``vaelab reconstruct``: pictures from a trained run."""

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
    nonneg_int,
    open_run,
    positive_float,
    positive_int,
)


def cmd_sample(args: argparse.Namespace) -> int:
    """Decode N random z from the prior of the model in RUN_DIR to a PNG grid or a .npy array.

    z ~ N(0, I), or z from the run's VampPrior or mixture prior (--prior vamp or mixture, or a fit-prior
    run); --temperature scales the noise (each component's std for a VampPrior or mixture).

    --label C generates class C: a conditional run (--conditional) decodes with y=C; an unconditional
    run trained on labelled data samples z from a Gaussian mixture fitted to class C's latent means.
    """
    import io

    import numpy as np
    import torch

    from vaelab.files import atomic_write_bytes
    from vaelab.viz.figures import save_grid

    run, model = open_run(args.run_dir, args.device)
    suffix = "" if args.label is None else f"_label{args.label}"
    out = Path(args.out) if args.out else Path(args.run_dir) / f"samples{suffix}_seed{args.seed}.png"
    if out.suffix.lower() not in (".png", ".npy"):
        raise VaelabError(f"--out '{out}' must end in .png or .npy")
    check_writable(out, args.force)
    nrow, what = None, "samples"
    if args.label is not None:
        x, method = _sample_label(run, model, args)
        what = f"samples of class {args.label} ({method})"
    elif model.config.n_classes:  # a CVAE with no --label: one class per grid column
        nrow = model.config.n_classes
        y = torch.arange(args.n, device=model.device) % nrow
        gen = torch.Generator(device=model.device).manual_seed(args.seed)
        x = model.sample(args.n, gen, mean=not args.binary, temperature=args.temperature, y=y)
        what = f"samples, labels cycling through 0..{nrow - 1} (conditional VAE)"
    else:
        gen = torch.Generator(device=model.device).manual_seed(args.seed)
        x = model.sample(args.n, generator=gen, mean=not args.binary, temperature=args.temperature)
    if out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, x.cpu().numpy())
        atomic_write_bytes(out, buf.getvalue())
    else:
        save_grid(x, out, nrow=nrow)
    print(f"wrote {args.n} {what} to {out}")
    return 0


def _sample_label(run, model, args: argparse.Namespace):
    """--label: (images, method sentence); an unconditional run reloads its training data."""
    from vaelab.evaluation.conditional import sample_class

    train = None
    if not model.config.n_classes:
        if run.train_config is None:
            raise VaelabError(f"'{args.run_dir}' does not record its training data, needed for --label")
        train = run.load_data().train
    return sample_class(
        model,
        args.label,
        args.n,
        seed=args.seed,
        mean=not args.binary,
        temperature=args.temperature,
        train=train,
        max_components=args.components,
    )


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct the first N test examples of SOURCE: originals above reconstructions."""
    from vaelab.viz.figures import recon_grid, save_grid

    run, model = open_run(args.run_dir, args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"reconstructions_n{args.n}.png"
    check_writable(out, args.force)
    data = run.load_data(args.data, data_options(args))
    x = data.test.batch(slice(0, args.n)).to(model.device)
    y = None if data.test.y is None else data.test.y[: args.n].to(model.device)  # for a CVAE
    save_grid(recon_grid(x, model.reconstruct(x, y)), out, nrow=min(8, len(x)))
    print(f"wrote {len(x)} reconstructions to {out}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "sample", cmd_sample)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=positive_int, default=64, help="how many samples")
    p.add_argument("--out", help="FILE.png or FILE.npy (default RUN_DIR/samples_seedS.png)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument(
        "--temperature", type=positive_float, default=1.0, help="scale of z's noise (vamp: component std)"
    )
    p.add_argument("--binary", action="store_true", help="sample pixels instead of means")
    p.add_argument("--label", type=nonneg_int, help="generate this class (index into the labels)")
    p.add_argument(
        "--components",
        type=positive_int,
        default=8,
        help="unconditional runs with --label: most mixture components per class (BIC picks)",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_device_flag(p)

    p = add_command(sub, "reconstruct", cmd_reconstruct)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help=RUN_SOURCE_HELP)
    p.add_argument("-n", type=positive_int, default=16, help="how many test examples")
    p.add_argument("--out", help="FILE.png (default RUN_DIR/reconstructions_nN.png)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_device_flag(p)
    add_data_flags(p)
