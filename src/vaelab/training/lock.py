"""The run lock: one training process per run directory at a time."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on RUN_DIR/.lock while a run trains, so that a second ``vaelab train`` on
    the same run dir (a re-queued job while the first still runs) fails at once instead of
    interleaving checkpoints. It is an ``fcntl.flock`` on an open file (``msvcrt.locking`` of its
    first byte on Windows): the OS releases it when the process dies, even by kill -9, so a crashed
    run never leaves a stale lock behind. Where neither exists the run trains unguarded."""

    def __init__(self) -> None:
        self._file: Any = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, run_dir: str | Path) -> None:
        """Take the lock, creating RUN_DIR if needed; `VaelabError` if another process holds it."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise VaelabError(f"'{run_dir}' exists and is not a directory")
        path = run_dir / LOCK_FILE
        for _ in range(3):
            run_dir.mkdir(parents=True, exist_ok=True)
            try:
                self._file = open(path, "a")  # noqa: SIM115 (held until release)
            except FileNotFoundError:  # a `Run` removed the empty folder it had made: make it again
                continue
            try:
                _lock(self._file)
            except OSError:
                self.release()
                raise VaelabError(
                    f"'{run_dir}' is being trained by another process; let it end first"
                ) from None
            if _same_file(self._file, path):
                return
            self.release()  # locked a lock file that was removed meanwhile: take the one there now
        raise VaelabError(f"could not lock '{path}': it keeps disappearing")

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(f: Any) -> None:
    """Lock the open file ``f`` without waiting; OSError if another process holds it. Where the OS
    offers neither ``fcntl`` nor ``msvcrt`` nothing is locked: the run trains without the guard."""
    # Imported by name: each exists on one family of OS only, and type checkers see just their own
    try:
        fcntl = importlib.import_module("fcntl")
    except ImportError:
        pass
    else:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    try:
        msvcrt = importlib.import_module("msvcrt")
    except ImportError:
        return
    f.seek(0)  # msvcrt locks bytes from the file position; byte 0 may lie past the end, which is allowed
    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)


def _same_file(f: Any, path: Path) -> bool:
    """Whether the open file ``f`` is still the file at ``path``."""
    try:
        return os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
