"""Fetching one file safely: mirrors tried in turn, a progress bar, a sha256 check of the
content, and an atomic write (temp file + rename), so the destination is never half written."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from vaelab.errors import DataError

TIMEOUT_S = 30.0
_CHUNK = 1 << 16


class DownloadError(DataError):
    """No mirror served the file intact; the message lists what each one did."""


def fetch(
    filename: str,
    mirrors: Sequence[str],
    dest: Path,
    sha256: str,
    max_bytes: int,
    timeout: float = TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """Download ``filename`` from the first of ``mirrors`` (base URLs) that serves it intact.

    A gzipped response is decompressed; the sha256 of the content must equal ``sha256``, else the
    next mirror is tried. The content is written to ``dest`` atomically. ``max_bytes`` bounds
    what is read from the network. ``progress=None`` shows a bar only on a terminal.
    """
    from vaelab.files import atomic_write_bytes
    from vaelab.version import __version__

    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            data = _get(url, max_bytes, timeout, progress, f"vaelab/{__version__}")
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise DownloadError(f"sha256 mismatch (got {digest[:16]}..., expected {sha256[:16]}...)")
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:
            failures.append(f"{url}: {e.reason}")
        except (DownloadError, OSError, http.client.HTTPException, EOFError, zlib.error) as e:
            failures.append(f"{url}: {e}")
        else:
            atomic_write_bytes(dest, data)
            return dest
    raise DownloadError("; ".join(failures) or "no mirrors configured")


def _get(url: str, max_bytes: int, timeout: float, progress: bool | None, agent: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": agent})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise DownloadError(f"server announces {total:,} bytes, more than the {max_bytes:,} expected")
        buf = bytearray()
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=url.rsplit("/", 1)[-1],
            leave=False,
            file=sys.stderr,
            disable=(not progress) if progress is not None else None,
        )
        with bar:
            while chunk := response.read(_CHUNK):
                buf += chunk
                bar.update(len(chunk))
                if len(buf) > max_bytes:
                    raise DownloadError(f"more than the {max_bytes:,} bytes expected")
        if total is not None and len(buf) != total:
            raise DownloadError(f"incomplete download ({len(buf):,} of {total:,} bytes)")
        return bytes(buf)
