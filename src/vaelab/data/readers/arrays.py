"""Arrays: ``.npy`` (memory-mapped, so big files stream from disk) and ``.npz``.

Shapes: (N, D) features, (N, H, W) grey images or (N, C, H, W) images. uint8 arrays are pixel
intensities 0..255, bool arrays are 0/1, anything else is used as float32 values. Labels: an
``.npz`` holds them under ``y``/``labels``/``targets`` (or ``y_train``/``y_test`` beside
``x_train``/``x_test``, which also give the split); an (N, D) array can give one of its columns
with ``--label-column``. Pickled (object) arrays are refused, never loaded.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from vaelab.data.types import DataOptions, RawData, check_labels, first_nonfinite, storage_array
from vaelab.errors import DataError

X_KEYS = ("x", "X", "images", "data", "features", "arr_0")
Y_KEYS = ("y", "labels", "targets", "target", "arr_1")
_OK_KINDS = "biuf"  # bool, int, unsigned, float
_CHUNK = 1 << 20
_ZIP_ERRORS = (
    zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zlib.error
)


def _npy_header(f, size: int, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse and check an .npy header at the start of ``f`` (``size`` bytes in all) ->
    (shape, fortran_order, dtype, data offset). The data must be exactly what the header says."""
    try:
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(f)  # 2.0 and 3.0 differ only in the header's text encoding
    except Exception as e:  # numpy's header parser raises many types on garbage; all mean "not .npy"
        raise DataError(f"'{where}': not a valid .npy file ({_first_line(e)})") from None
    if dtype.hasobject:
        raise DataError(f"'{where}': object arrays need pickle, which vaelab never loads; save numbers")
    if dtype.kind not in _OK_KINDS or dtype.fields is not None:
        raise DataError(f"'{where}': non-numeric dtype {dtype}; expected numbers")
    if 0 in shape or not shape:
        raise DataError(f"'{where}': holds no data (shape {shape})")
    offset = f.tell()
    want = int(np.prod(shape, dtype=object)) * dtype.itemsize  # object: no overflow on lying headers
    got = size - offset
    if got < want:
        dims = "x".join(map(str, shape)) or "scalar"
        raise DataError(
            f"'{where}': truncated .npy file ({dims} {dtype} needs {want:,} bytes, has {got:,})"
        )
    if got > want:
        raise DataError(f"'{where}': corrupt .npy file ({got - want:,} bytes after the data)")
    return shape, fortran, dtype, offset


def open_npy(path: Path, where: str | None = None) -> np.ndarray:
    """Check an .npy file's header against its size and memory-map it read-only. Object or
    string dtypes, empty arrays, truncated files and trailing bytes are a `DataError`."""
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            shape, fortran, dtype, offset = _npy_header(f, size, where)
        return np.memmap(
            path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )
    except (OSError, ValueError) as e:
        raise DataError(f"'{where}': cannot read ({_first_line(e)})") from None


def parse_npy(raw: bytes, where: str = "<bytes>") -> np.ndarray:
    """An .npy file's bytes (e.g. an .npz member) -> array, with the checks of `open_npy`."""
    import io

    shape, fortran, dtype, offset = _npy_header(io.BytesIO(raw), len(raw), where)
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape, order="F" if fortran else "C")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, limit: int) -> bytes:
    """One .npz member's bytes, decompressed in bounded chunks: a member that claims or inflates to
    more than ``limit`` bytes (a zip bomb) is refused before it is held, and so is a corrupt one."""
    if info.file_size > limit:
        raise DataError(
            f"'{where}': {info.file_size:,} bytes is over the memory limit ({limit:,}); "
            "save it as .npy to stream it from disk"
        )
    out = bytearray()
    try:
        with archive.open(info) as f:
            while chunk := f.read(_CHUNK):  # a bounded read never inflates more than _CHUNK at once
                out += chunk
                if len(out) > min(info.file_size, limit):
                    raise DataError(f"'{where}': corrupt .npz member (inflates past its stated size)")
    except _ZIP_ERRORS as e:
        raise DataError(f"'{where}': corrupt .npz member ({_first_line(e)})") from None
    return bytes(out)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _images(a: np.ndarray, where: str) -> np.ndarray:
    """(N, D) -> (N, 1, 1, D), (N, H, W) -> (N, 1, H, W), (N, C, H, W) as is."""
    if a.ndim == 2:
        a = a.reshape(a.shape[0], 1, 1, a.shape[1])
    elif a.ndim == 3:
        a = a.reshape(a.shape[0], 1, *a.shape[1:])
    elif a.ndim != 4:
        raise DataError(f"'{where}': expected N x D, N x H x W or N x C x H x W, found shape {a.shape}")
    if 0 in a.shape:
        raise DataError(f"'{where}': holds no data (shape {a.shape})")
    bad = first_nonfinite(a)
    if bad is not None:
        (row, *rest), kind = bad
        at = (
            f"row {row}, column {rest[-1]}" if a.shape[1:3] == (1, 1) else f"row {row}, element {tuple(rest)}"
        )
        raise DataError(f"'{where}': {kind} at {at}")
    return a


def _label_column(a: np.ndarray, opts: DataOptions, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an (N, D) array into features and the ``--label-column`` column (an index)."""
    col = opts.label_column
    if col is None:
        return a, None
    if a.ndim != 2:
        raise DataError(
            "'{w}': {f.label_column} needs an N x D array, found shape {s}", f=DataOptions, w=where, s=a.shape
        )
    try:
        j = int(col)
    except ValueError:
        raise DataError(
            "'{w}': {f.label_column} must be a column index for arrays, got {c!r}",
            f=DataOptions, w=where, c=col,
        ) from None
    d = a.shape[1]
    if not -d <= j < d or d < 2:
        raise DataError(f"'{where}': no column {j} (the array has {d} columns)")
    j %= d
    y = np.asarray(a[:, j])
    return np.delete(np.asarray(a), j, axis=1), check_labels(y, f"{where} column {j}", len(a), where)


def read_array_file(path: Path, source: str, opts: DataOptions, limit: int) -> RawData:
    if path.name.lower().endswith(".npy"):
        return _read_npy(path, source, opts, limit)
    return _read_npz(path, source, opts, limit)


def _read_npy(path: Path, source: str, opts: DataOptions, limit: int) -> RawData:
    a = open_npy(path, source)
    # Small enough: still read through the map, straight into the splits (see preprocess.take).
    streamed = isinstance(a, np.memmap) and a.nbytes > limit and opts.label_column is None
    a, y = _label_column(a, opts, source)
    x = _images(a, source)
    return RawData(
        source,
        x,
        y,
        accepts=("val_fraction", "split_seed", "label_column"),
        flat=x.shape[1:3] == (1, 1),
        streamed=streamed,
        meta={"format": "npy"},
    )


def _read_npz(path: Path, source: str, opts: DataOptions, limit: int) -> RawData:
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise DataError(f"'{source}': not a valid .npz file ({_first_line(e)})") from None
    with archive:
        members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}

        def load(key: str) -> np.ndarray:
            where = f"{source}[{key}]"
            return parse_npy(_read_member(archive, archive.getinfo(members[key]), where, limit), where)

        if "x_train" in members:
            keys = ("x_train", "y_train", "x_test", "y_test")
            x, y, xt, yt = (load(k) if k in members else None for k in keys)
            assert x is not None  # "x_train" is in members
            if opts.label_column is not None:
                raise DataError(
                    "'{s}': {f.label_column} is not supported with x_train/x_test arrays",
                    f=DataOptions, s=source,
                )
            x = storage_array(_images(x, f"{source}[x_train]"))
            y = None if y is None else check_labels(y, f"{source}[y_train]", len(x), f"{source}[x_train]")
            if xt is not None:
                xt = storage_array(_images(xt, f"{source}[x_test]"))
                if xt.shape[1:] != x.shape[1:]:
                    raise DataError(
                        f"'{source}': x_test rows are {xt.shape[1:]} but x_train rows are {x.shape[1:]}"
                    )
                yt = (
                    None
                    if yt is None
                    else check_labels(yt, f"{source}[y_test]", len(xt), f"{source}[x_test]")
                )
                if (y is None) != (yt is None):
                    raise DataError(f"'{source}': labels for only one of x_train and x_test")
                return RawData(source, x, y, xt, yt, flat=x.shape[1:3] == (1, 1), meta={"format": "npz"})
            return RawData(
                source,
                x,
                y,
                accepts=("val_fraction", "split_seed"),
                flat=x.shape[1:3] == (1, 1),
                meta={"format": "npz"},
            )
        xkey = next((k for k in X_KEYS if k in members), None)
        if xkey is None:
            found = ", ".join(sorted(members)) or "none"
            raise DataError(f"'{source}': no data array (looked for {', '.join(X_KEYS)}; found {found})")
        a = load(xkey)
        a, y = _label_column(a, opts, f"{source}[{xkey}]")
        x = storage_array(_images(a, f"{source}[{xkey}]"))
        ykey = next((k for k in Y_KEYS if k in members and k != xkey), None)
        if ykey is not None:
            if y is not None:
                raise DataError(
                    "'{s}': labels both in '{k}' and {f.label_column}; use one",
                    f=DataOptions, s=source, k=ykey,
                )
            y = check_labels(load(ykey), f"{source}[{ykey}]", len(x), f"{source}[{xkey}]")
        return RawData(
            source,
            x,
            y,
            accepts=("val_fraction", "split_seed", "label_column"),
            flat=x.shape[1:3] == (1, 1),
            meta={"format": "npz"},
        )
