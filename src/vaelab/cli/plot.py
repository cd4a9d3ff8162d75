"""``vaelab plot``: one figure of a run as a PNG."""

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
    nonneg_int,
    open_run,
    positive_float,
    positive_int,
)

KIND_HELP = {
    "samples": "decoded draws from the prior (-n, --seed, --temperature)",
    "recon": "held-out examples above their reconstructions (-n)",
    "interp": "linear and spherical interpolations (--chains, --points, --indices, --steps, --method)",
    "traverse": "sweep each latent dim, ranked by KL (else by activity) (--dims, --steps, --span, --index)",
    "manifold": "decoded grid of Gaussian quantiles in a latent plane (--grid; --label for a CVAE)",
    "latents": "latent scatter coloured by label; PCA and t-SNE above 2-D (--max-points, --seed)",
    "curves": "loss curves per epoch from metrics.jsonl",
    "pseudo": "a VampPrior's learned pseudo-inputs above their decoded components (-n)",
}
# The flags (argparse dests) each kind accepts; they are the keyword arguments of its figure function.
KIND_OPTIONS = {
    "samples": ("n", "seed", "temperature"),
    "recon": ("n",),
    "interp": ("chains", "points", "indices", "steps", "method", "seed"),
    "traverse": ("dims", "steps", "span", "index"),
    "manifold": ("grid", "label"),
    "latents": ("max_points", "seed"),
    "curves": (),
    "pseudo": ("n",),
}
ALL_OPTIONS = sorted({o for opts in KIND_OPTIONS.values() for o in opts})


def index_list(text: str) -> list[int]:
    """'3,17,42' -> [3, 17, 42] (indices >= 0)."""
    try:
        return [nonneg_int(t.strip()) for t in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected indices such as 3,17,42; got {text!r}") from None


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {value}")
    return value


def kind_options(args: argparse.Namespace) -> dict:
    """The figure options given on the command line; a flag the kind does not use is an error."""
    given = {o: getattr(args, o) for o in ALL_OPTIONS if getattr(args, o) is not None}
    unused = sorted(set(given) - set(KIND_OPTIONS[args.kind]))
    if unused:
        flags = ", ".join("-n" if o == "n" else "--" + o.replace("_", "-") for o in unused)
        raise VaelabError(f"{flags} does not apply to --kind {args.kind}")
    return given


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw one figure of a run as a PNG: samples, recon, interp, traverse, manifold, latents, curves
    or pseudo (a VampPrior's pseudo-inputs).

    Data-driven figures use the held-out split of --data (default: the run's training source).
    Each figure option applies to some kinds only; giving one that a kind ignores is an error."""
    from vaelab.viz.figures import save_png
    from vaelab.viz.plots import make_figure, needs_data

    options = kind_options(args)
    out = Path(args.out) if args.out else Path(args.run_dir) / "figures" / f"{args.kind}.png"
    if out.suffix.lower() != ".png":
        raise VaelabError(f"--out '{out}' must end in .png")
    run, model = open_run(args.run_dir, args.device)
    check_writable(out, args.force)
    data = run.load_data(args.data, data_options(args)) if needs_data(args.kind, model) else None
    image = make_figure(args.kind, model, data, args.run_dir, **options)
    save_png(image, out)
    print(f"wrote {args.kind} ({image.width}x{image.height} px) to {out}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "plot", cmd_plot)
    p.add_argument("run_dir", metavar="RUN_DIR")
    kinds = "; ".join(f"{k}: {h}" for k, h in KIND_HELP.items())
    p.add_argument("--kind", required=True, choices=list(KIND_HELP), metavar="KIND", help=kinds)
    p.add_argument("--out", help="FILE.png (default RUN_DIR/figures/KIND.png)")
    p.add_argument("--data", help="SOURCE for data-driven kinds (default: the run's training source)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_device_flag(p)
    add_data_flags(p)
    g = p.add_argument_group("figure options (each applies to some kinds only)")
    g.add_argument("-n", type=positive_int, help="images: samples (64), recon and pseudo (32)")
    g.add_argument("--seed", type=nonneg_int, help="seed for samples, interp, latents (default 0)")
    g.add_argument("--temperature", type=positive_float, help="samples: scale of z (default 1)")
    g.add_argument("--chains", type=positive_int, help="interp: number of paths (default 4)")
    g.add_argument("--points", type=at_least_two, help="interp: examples per path (default 2)")
    g.add_argument("--indices", type=index_list, help="interp: one path through these held-out examples")
    g.add_argument("--steps", type=at_least_two, help="interp: per segment (10); traverse: values (11)")
    g.add_argument("--method", choices=["linear", "spherical", "both"], help="interp (default both)")
    g.add_argument("--dims", type=positive_int, help="traverse: top dims by KL to show (default 16)")
    g.add_argument("--span", type=positive_float, help="traverse: sweep z from -SPAN to SPAN (default 3)")
    g.add_argument("--index", type=nonneg_int, help="traverse: held-out example to start from (default 0)")
    g.add_argument("--grid", type=at_least_two, help="manifold: images per side (default 20)")
    g.add_argument("--label", type=nonneg_int, help="manifold of a conditional run: the class (default 0)")
    g.add_argument("--max-points", type=positive_int, help="latents: at most this many (default 2000)")
