"""Stopping on request: Ctrl-C or SIGTERM finishes the current epoch, saves a checkpoint, then exits.

The first SIGINT/SIGTERM only sets a flag that the training loop reads at its next safe point (the
end of an epoch). A second Ctrl-C raises KeyboardInterrupt at once; that is safe too, because every
file is written atomically and resuming starts from the last complete checkpoint. A repeated
SIGTERM is not escalated: a worker may get the same SIGTERM twice (from a scheduler such as SLURM
and again forwarded by torchrun), and schedulers follow SIGTERM with SIGKILL when they stop waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager: while inside, SIGINT/SIGTERM request a stop instead of killing the process.

    Only the main thread can own signal handlers; elsewhere (or with ``enabled=False``) it does
    nothing and ``requested`` stays False.
    """

    def __init__(self, enabled: bool = True, quiet: bool = False) -> None:
        self.enabled = enabled
        self.quiet = quiet
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            self._say(
                f"\nvaelab: {signal.Signals(signum).name} received: finishing this epoch, then saving a "
                "checkpoint and stopping (Ctrl-C again quits at once; the last checkpoint stays intact)\n"
            )
            return
        if signum == signal.SIGINT:
            self.__exit__(None, None, None)  # a third Ctrl-C gets Python's default behaviour
            raise KeyboardInterrupt

    def _say(self, text: str) -> None:
        # os.write, not print: a handler may run while the main thread is inside print/tqdm.
        if not self.quiet:
            with contextlib.suppress(OSError):
                os.write(2, text.encode())


def exit_code(signum: int | None) -> int:
    """The shell convention for a run stopped by ``signum``: 128 + signal number (130 for Ctrl-C)."""
    return 128 + int(signum if signum is not None else signal.SIGTERM)
