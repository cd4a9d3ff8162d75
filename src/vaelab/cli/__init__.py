"""The ``vaelab`` command line: a thin typed layer over the library.

One module per command group, one function per command; its docstring is the help.
Expected errors (`VaelabError`, bad flags, unreadable files) print one line on stderr and
exit with code 2. Nothing runs at import time.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

from vaelab.errors import VaelabError

from . import encode, evaluate, explore, fit_prior, plot, report, sample, train
from ._common import EXIT_USAGE, Parser

COMMAND_MODULES = (train, sample, encode, evaluate, fit_prior, plot, report, explore)


def build_parser() -> Parser:
    from vaelab.version import __version__

    parser = Parser(prog="vaelab", description="Variational autoencoders on PyTorch.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn expected errors into one line + exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VaelabError as e:
        print(f"vaelab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        print(f"vaelab {args.command}: error:{where} {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return 130


def _quit_now(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def run() -> NoReturn:
    """The ``vaelab`` executable: `main`, then exit with its code.

    Once the command has returned, its files are on disk and only the interpreter's shutdown is left:
    a Ctrl-C then quits at once (exit 130) instead of raising KeyboardInterrupt inside some library's
    exit handler and printing its traceback (a double Ctrl-C that outruns a short epoch lands there).
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, _quit_now)
    sys.exit(code)
