"""The IDX format (MNIST's): a strict reader, and folders of ``*-images-idx3-ubyte[.gz]`` files.

An IDX file is ``00 00 <type> <ndim>``, then ndim big-endian uint32 sizes, then the values,
big-endian, row-major. Every way a file can be wrong (magic, type, dims, short or long data,
broken gzip) is one `DataError` naming the file; nothing else escapes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaelab.data.types import RawData, check_labels, first_nonfinite, memory_limit
from vaelab.errors import DataError

IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CHUNK = 1 << 22
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_GZIP_RATIO = 1100  # deflate cannot expand more than ~1032:1; bigger claims are corrupt headers
# name-images-idx3-ubyte, name-images.idx3-ubyte (and labels), optionally .gz
_NAME = re.compile(r"^(?P<prefix>.+?)-(?P<role>images|labels)[-.]idx(?P<ndim>\d)-ubyte(?:\.gz)?$")


def parse_header(head: bytes, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """The first bytes of an IDX file -> (dtype, shape, header length)."""
    if len(head) < 4:
        raise DataError(f"'{where}': not an IDX file (only {len(head)} bytes)")
    if head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
        raise DataError(f"'{where}': not an IDX file (wrong magic number 0x{head[:4].hex()})")
    ndim = head[3]
    if ndim == 0:
        raise DataError(f"'{where}': corrupt IDX header (zero dimensions)")
    n_head = 4 + 4 * ndim
    if len(head) < n_head:
        raise DataError(
            f"'{where}': truncated IDX file (header needs {n_head} bytes, file has {len(head)})"
        )
    shape = struct.unpack(f">{ndim}I", head[4:n_head])
    return np.dtype(IDX_TYPES[head[2]]), tuple(int(s) for s in shape), n_head


def _payload_size(dtype: np.dtype, shape: tuple[int, ...], where: str) -> int:
    """Bytes of data the header announces (an empty array is refused: it holds no examples)."""
    if 0 in shape:
        raise DataError(f"'{where}': IDX file holds no data (shape {'x'.join(map(str, shape))})")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize  # object: no int64 overflow


def _size_error(where: str, shape: tuple[int, ...], want: int, got: int) -> DataError:
    dims = "x".join(map(str, shape))
    if got < want:
        return DataError(
            f"'{where}': truncated IDX file (header says {dims} = {want:,} bytes of data, file has {got:,})"
        )
    return DataError(f"'{where}': corrupt IDX file ({got - want:,} bytes after the {dims} data)")


def parse_idx(data: bytes, where: str = "<bytes>", limit: int | None = None) -> np.ndarray:
    """IDX bytes (raw or gzipped) -> array in native byte order. Gzipped data is decompressed as a
    stream, checked against the header and ``limit`` (default `memory_limit`) before it is held."""
    if data[:2] == _GZIP_MAGIC:
        arr, _ = _read_gzip(lambda: gzip.GzipFile(fileobj=io.BytesIO(data)), len(data), where, None, limit)
        return arr
    dtype, shape, n_head = parse_header(data[:1024], where)
    want = _payload_size(dtype, shape, where)
    if len(data) - n_head != want:
        raise _size_error(where, shape, want, len(data) - n_head)
    return np.frombuffer(data, dtype=dtype, offset=n_head).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(
    path: Path, where: str | None = None, sha256: str | None = None, limit: int | None = None
) -> tuple[np.ndarray, str | None]:
    """Read an IDX file (``.gz`` or raw) -> (array, sha256 of the raw IDX bytes or None).

    Raw files bigger than ``limit`` bytes come back as a read-only ``np.memmap``; a gzipped file
    can't be mapped, so one whose header claims more than ``limit`` (default `memory_limit`) is
    refused before anything is decompressed. With ``sha256`` the content is hashed and must match.
    """
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
        if gz:
            return _read_gzip(lambda: gzip.open(path, "rb"), path.stat().st_size, where, sha256, limit)
        return _read_raw(path, where, sha256, limit)
    except OSError as e:
        raise DataError(f"'{where}': cannot read ({e.strerror or e})") from None


def _read_raw(path: Path, where: str, sha256: str | None, limit: int | None) -> tuple[np.ndarray, str | None]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4 + 4 * 255)
    dtype, shape, n_head = parse_header(head, where)
    want = _payload_size(dtype, shape, where)
    if size - n_head != want:
        raise _size_error(where, shape, want, size - n_head)
    digest = _file_sha256(path) if sha256 else None
    _check_digest(where, sha256, digest)
    if limit is not None and want > limit:
        return np.memmap(path, dtype=dtype, mode="r", offset=n_head, shape=shape), digest
    arr = np.fromfile(path, dtype=dtype, offset=n_head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False), digest


def _read_gzip(
    open_stream: Callable[[], io.BufferedIOBase],
    compressed: int,
    where: str,
    sha256: str | None,
    limit: int | None,
) -> tuple[np.ndarray, str | None]:
    """Stream-decompress: the header first, then exactly the declared payload, so a lying
    header can neither allocate more than the data holds or the memory limit allows, nor hide
    trailing garbage."""
    limit = memory_limit() if limit is None else limit
    try:
        with open_stream() as f:
            head = f.read(4)
            if len(head) == 4 and head[0] == 0 and head[1] == 0:
                head += f.read(4 * head[3])
            dtype, shape, _ = parse_header(head, where)
            want = _payload_size(dtype, shape, where)
            if want > compressed * _MAX_GZIP_RATIO + (1 << 20):
                raise DataError(
                    f"'{where}': corrupt IDX file (header claims {want:,} bytes, more than "
                    f"{compressed:,} compressed bytes can hold)"
                )
            if want > limit:
                raise DataError(
                    f"'{where}': header claims {want:,} bytes of data, over the memory limit ({limit:,} "
                    "bytes, $VAELAB_MEMORY_LIMIT); gunzip it so that it can be streamed from disk"
                )
            buf = np.empty(want, dtype=np.uint8)  # filled in place: no second copy
            view, got = buf.data, 0  # a writable memoryview of buf
            while got < want:
                n = f.readinto(view[got : got + _CHUNK])
                if not n:
                    break
                got += n
            if got < want:
                raise _size_error(where, shape, want, got)
            extra = len(f.read(_CHUNK))
            if extra:
                raise _size_error(where, shape, want, want + extra)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"'{where}': corrupt gzip data ({e})") from None
    digest = None
    if sha256:
        h = hashlib.sha256(head)
        h.update(view)
        digest = h.hexdigest()
    _check_digest(where, sha256, digest)
    arr = buf.view(dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False), digest


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(where: str, want: str | None, got: str | None) -> None:
    if want and got != want:
        raise DataError(f"'{where}': sha256 mismatch (expected {want}, found {got}); the file is corrupt")


# --- folders of IDX files --------------------------------------------------------------------


def is_idx_name(name: str) -> bool:
    return _NAME.match(name.lower()) is not None


def find_idx_files(folder: Path) -> dict[str, dict[str, Path]]:
    """{prefix: {"images": path, "labels": path}} for the IDX files directly in ``folder``."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = _NAME.match(p.name.lower())
        if m and p.is_file():
            role = m.group("role")
            entry = found.setdefault(m.group("prefix"), {})
            if role in entry and not entry[role].name.endswith(".gz"):
                continue  # prefer the raw copy: no decompression, and it can be memory-mapped
            entry[role] = p
    return found


def _images(path: Path, where: str, limit: int | None) -> np.ndarray:
    arr, _ = read_idx(path, where, limit=limit)
    if arr.ndim not in (2, 3, 4):
        raise DataError(
            f"'{where}': expected images with 2 to 4 dimensions (N, [C,] H, W), found shape {arr.shape}"
        )
    if arr.shape[0] == 0 or 0 in arr.shape:
        raise DataError(f"'{where}': holds no data (shape {arr.shape})")
    bad = first_nonfinite(arr)
    if bad is not None:
        raise DataError(f"'{where}': {bad[1]} at image {bad[0][0]}, element {bad[0][1:]}")
    if arr.ndim == 2:
        return arr.reshape(arr.shape[0], 1, 1, arr.shape[1])  # (N, D) features
    if arr.ndim == 3:
        return arr.reshape(arr.shape[0], 1, *arr.shape[1:])  # (N, 1, H, W)
    return arr


def read_labels(path: Path, where: str, n_images: int, images_where: str) -> np.ndarray:
    """An IDX (or array) of N integer labels that must match the image count."""
    arr, _ = read_idx(path, where)
    return check_labels(arr, where, n_images, images_where)


def _pair(files: dict[str, Path], limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    if "images" not in files:
        raise DataError(f"'{files['labels']}': labels without a matching images file")
    where = str(files["images"])
    x = _images(files["images"], where, limit)
    y = None
    if "labels" in files:
        y = read_labels(files["labels"], str(files["labels"]), len(x), where)
    return x, y


def read_idx_dir(folder: Path, source: str, limit: int) -> RawData:
    """A folder of IDX files: ``train-*`` and ``t10k-*`` (or ``test-*``) give the split when both
    exist; a single images file (with optional labels) gets a held-out validation split."""
    found = find_idx_files(folder)
    test_key = next((k for k in ("t10k", "test") if k in found), None)
    if "train" in found and test_key:
        x, y = _pair(found["train"], limit)
        xt, yt = _pair(found[test_key], limit)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"'{found[test_key]['images']}': images are {xt.shape[1:]}, training images are {x.shape[1:]}"
            )
        if (y is None) != (yt is None):
            raise DataError(f"'{source}': labels for only one of the train and test images")
        return RawData(source, x, y, xt, yt, streamed=_is_map(x) or _is_map(xt), meta={"format": "idx"})
    if len(found) != 1:
        names = ", ".join(sorted(found))
        raise DataError(
            f"'{source}': IDX files with several prefixes ({names}); expected one set, or train-* and t10k-*"
        )
    (files,) = found.values()
    x, y = _pair(files, limit)
    return _single(source, x, y)


def read_idx_file(path: Path, source: str, limit: int) -> RawData:
    """One IDX images file, with its labels file beside it when there is one."""
    m = _NAME.match(path.name.lower())
    assert m is not None
    files = {m.group("role"): path}
    if m.group("role") == "images":
        for p in path.parent.iterdir():
            pm = _NAME.match(p.name.lower())
            if pm and pm.group("role") == "labels" and pm.group("prefix") == m.group("prefix"):
                files["labels"] = p
                break
    x, y = _pair(files, limit)
    return _single(source, x, y)


def _single(source: str, x: np.ndarray, y: np.ndarray | None) -> RawData:
    accepts = ("val_fraction", "split_seed")
    return RawData(
        source,
        x,
        y,
        accepts=accepts,
        flat=x.shape[1:3] == (1, 1),
        streamed=_is_map(x),
        meta={"format": "idx"},
    )


def _is_map(a: np.ndarray) -> bool:
    return isinstance(a, np.memmap)
