"""Shared pieces of the CLI: one-line argparse errors, typed flag parsers, run/data loading."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from ..errors import VaelabError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_command(sub, name: str, fn) -> argparse.ArgumentParser:
    """Register ``fn`` as subcommand ``name``; its docstring is the help."""
    doc = (fn.__doc__ or "").strip()
    p = sub.add_parser(name, help=doc.splitlines()[0], description=doc)
    p.set_defaults(func=fn)
    return p


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


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


def load_run(run_dir: str, device: str = "auto"):
    from ..device import resolve_device
    from ..io import load

    return load(run_dir, device=resolve_device(device))


def load_data_for(model, source: str, run_dir: str | Path | None = None):
    """Load SOURCE (with the run's data options when it is the training source) and check
    that it fits the model's input shape."""
    from ..data import load_dataset
    from ..io import load_train_config

    options: dict = {}
    tcfg = load_train_config(run_dir) if run_dir is not None else None
    if tcfg is not None and tcfg.data == source:
        options = dict(tcfg.data_options)
    data = load_dataset(source, **options)
    if data.shape != tuple(model.config.input_shape):
        raise VaelabError(
            f"data '{source}' has shape {data.shape} but the model expects {tuple(model.config.input_shape)}"
        )
    return data
