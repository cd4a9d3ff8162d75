"""The ``vaelab`` command line: a thin typed layer over the library.

One module per command group, one function per command; its docstring is the help.
Expected errors (`VaelabError`, bad flags, unreadable files) print one line on stderr and
exit with code 2; a `VaelabError` names the settings involved as the flags that set them.
Nothing runs at import time.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import warnings
from typing import Any, NoReturn

from vaelab.errors import VaelabError

from . import encode, evaluate, explore, fit_prior, plot, push, report, sample, train
from ._common import EXIT_USAGE, Parser, one_line_warning
from ._flags import flag_name

COMMAND_MODULES = (train, sample, encode, evaluate, fit_prior, plot, report, explore, push)


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
        with warnings.catch_warnings():  # a warning is one line too
            warnings.showwarning = one_line_warning
            return int(args.func(args) or 0)
    except VaelabError as e:  # its settings named as the flags that set them
        print(f"vaelab {args.command}: error: {e.render(flag_name)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        print(f"vaelab {args.command}: error:{where} {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"vaelab {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM outside training (which stops gracefully on its own, at the end of an epoch)."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


class PipeSafeStdout(io.TextIOBase):
    """stdout that outlives its reader (``vaelab train ... | head -1``): once a write finds the pipe
    closed, fd 1 is pointed at /dev/null and the command carries on quietly to the end."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()


def _quit_now(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def run() -> NoReturn:
    """The ``vaelab`` executable: `main`, then exit with its code.

    Once the command has returned, its files are on disk and only the interpreter's shutdown is left:
    a Ctrl-C then quits at once (exit 130) instead of raising KeyboardInterrupt inside some library's
    exit handler and printing its traceback (a double Ctrl-C that outruns a short epoch lands there).
    SIGTERM before training begins (while torch loads, say) ends the command with one line and code
    143; a closed stdout pipe is not an error.
    """
    signal.signal(signal.SIGTERM, _terminate)
    sys.stdout = PipeSafeStdout(sys.stdout)
    try:
        code = main()
    except Terminated:  # before a command began (while parsing the flags)
        print("vaelab: terminated (SIGTERM)", file=sys.stderr)
        code = 128 + signal.SIGTERM
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, _quit_now)
    sys.exit(code)
