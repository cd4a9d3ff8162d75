"""Shared pieces of the CLI: one-line argparse errors, typed flag parsers, run/data loading."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn

from vaelab.config import DEVICES
from vaelab.errors import VaelabError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        shown = _has_default(action)
        if action.help is None and action.option_strings and shown:
            action.help = "(default: %(default)s)"  # every default is in --help, even without a description
        return action


def one_line_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    """`warnings.showwarning` for the CLI: one line on stderr, not a source dump."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's default, unless its help already says it (or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = _has_default(action) and action.option_strings
        if shown and "default" not in text:
            text = f"{text} (default: %(default)s)".strip()
        return text


def _has_default(action: argparse.Action) -> bool:
    """Whether --help should show the flag's default: a value to show (0 included), and a flag that
    takes one (not a bare switch)."""
    d = action.default
    return d is not None and d is not False and d is not argparse.SUPPRESS and action.nargs != 0


def summary(doc: str) -> str:
    """A docstring's first sentence, on one line: the command's line in ``vaelab --help``."""
    paragraph = " ".join((doc.strip().split("\n\n") or [""])[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def add_command(sub, name: str, fn) -> argparse.ArgumentParser:
    """Register ``fn`` as subcommand ``name``; its docstring is the help."""
    doc = (fn.__doc__ or "").strip()
    p = sub.add_parser(name, help=summary(doc), description=doc, formatter_class=HelpFormatter)
    p.set_defaults(func=fn)
    return p


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: cuda, then mps, then cpu")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """'400,400' -> (400, 400); '' -> () for no hidden layer."""
    if text.strip() == "":
        return ()
    try:
        return tuple(positive_int(t.strip()) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 400,400; got {text!r}"
        ) from None


def check_writable(path: Path, force: bool, flag: str = "--out") -> None:
    """Refuse to overwrite an existing file silently."""
    if path.exists() and not force:
        raise VaelabError(f"{flag} '{path}' already exists; pass --force to overwrite it")
    if path.is_dir():
        raise VaelabError(f"{flag} '{path}' is a directory, expected a file")


def open_run(run_dir: str, device: str = "auto"):
    """RUN_DIR as a read-only `Run` and its model on --device -> (run, model). The run rebuilds its
    data (`Run.load_data`: its training source and options by default, --split train/holdout)."""
    from vaelab.device import resolve_device
    from vaelab.training.run import Run

    run = Run.open(run_dir)
    return run, run.load_model(resolve_device(device))


SOURCE_HELP = (
    "SOURCE: digits, mnist, fashion-mnist, or a path: a folder of IDX files or images, "
    ".npy/.npz, .csv/.tsv (see docs/data.md)"
)


def image_size(text: str) -> tuple[int, ...]:
    """'64' -> (64,) (shorter side, centre crop); '32x48' -> (32, 48) (H x W)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        size = tuple(positive_int(p) for p in parts)
    except argparse.ArgumentTypeError:
        size = ()
    if len(size) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected S or HxW with positive integers, got {text!r}")
    return size


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """The loader options (recorded in config.json by train; reused for the same SOURCE)."""
    g = p.add_argument_group("data options (train records them; later commands reuse them for its SOURCE)")
    g.add_argument(
        "--data-dir", metavar="DIR", help="look for mnist/fashion-mnist here first (or $VAELAB_DATA)"
    )
    g.add_argument(
        "--image-size",
        type=image_size,
        metavar="S|HxW",
        help="image folders: S = shorter side then centre crop, HxW = exact resize",
    )
    g.add_argument(
        "--val-fraction",
        type=fraction,
        metavar="F",
        help="held-out fraction for sources without a test split (default 0.1)",
    )
    g.add_argument("--split-seed", type=nonneg_int, metavar="N", help="seed of that split (default 0)")
    g.add_argument(
        "--binarize",
        choices=["none", "dynamic", "static"],
        help="Bernoulli pixels: dynamic redraws every epoch, static once (default none)",
    )
    g.add_argument("--label-column", metavar="NAME|INDEX", help="table (or N x D array) column of labels")
    g.add_argument(
        "--rescale",
        nargs="?",
        const="minmax",
        choices=["auto", "none", "minmax", "standardize"],
        help="minmax (bare --rescale): to [0, 1]; standardize: mean 0, std 1; auto (default): "
        "standardize tables for a gaussian likelihood",
    )


def data_options(args: argparse.Namespace) -> dict:
    """The data flags the user gave (absent ones are left to the run's record or the default)."""
    from vaelab.data.types import DataOptions

    keys = [f.name for f in dataclasses.fields(DataOptions)]
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


RUN_SOURCE_HELP = SOURCE_HELP + "; default: the run's training source"
