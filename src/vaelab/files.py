"""Files written atomically: a temp file in the same folder, fsync, rename.

A crash leaves either the old file or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # POSIX only; on Windows mode bits mean little
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


MAX_JSON_BYTES = 64 << 20  # a config, state or metrics file is kilobytes; more is not ours


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, turning every way it can be bad into one `VaelabError` line naming it:
    unreadable, not UTF-8, not JSON, nested past the parser's recursion limit, an integer past
    Python's digit limit, or implausibly large."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise VaelabError(f"'{path}' is over {MAX_JSON_BYTES >> 20} MiB: not a vaelab file")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VaelabError(f"'{path}': cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise VaelabError(f"'{path}' is not valid JSON: not UTF-8 text") from None
    except RecursionError:
        raise VaelabError(f"'{path}' is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and integers past the digit limit
        raise VaelabError(f"'{path}' is not valid JSON: {str(e).splitlines()[0][:200]}") from None
