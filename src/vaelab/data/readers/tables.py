"""Tables: ``.csv`` (comma) or ``.tsv`` (tab) files of numeric columns, one example per row.

The first row is a header when any of its cells is not a number. ``--label-column`` (a header
name or a 0-based index) picks the labels: integers, or class names (sorted -> 0, 1, ...). Without
it, a header column named label, labels, class, target or y that holds integers or names is taken
as the labels, with a warning that says so, rather than trained on as one more feature.
Every other column must be numeric and finite. Rows become (N, 1, 1, D) features: float32, or
uint8 intensities when every cell is an integer in 0..255 and some exceed 1 (as in a CSV of
8-bit pixels), so that they are scaled to [0, 1] exactly as images and uint8 arrays are.
"""

from __future__ import annotations

import csv
import io
import warnings
from array import array
from pathlib import Path

import numpy as np

from vaelab.data.types import DataOptions, RawData, check_labels
from vaelab.errors import DataError

_F32_MAX = float(np.finfo(np.float32).max)
LABEL_NAMES = ("label", "labels", "class", "target", "y")  # header names taken as labels by default


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_index(col: str | int, names: list[str], where: str) -> int:
    if isinstance(col, str) and col in names:
        return names.index(col)
    try:
        j = int(col)
    except ValueError:
        j = None
    if j is None or not -len(names) <= j < len(names):
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise DataError(
            "'{w}': no column {c!r} for {f.label_column} (columns: {s})",
            f=DataOptions, w=where, c=col, s=shown,
        )
    return j % len(names)


def read_table(path: Path, source: str, opts: DataOptions) -> RawData:
    """Parse the table row by row into a compact float buffer (8 bytes a cell, not a string)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"'{source}': not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"'{source}': cannot read ({e.strerror or e})") from None
    reader = csv.reader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    names: list[str] | None = None
    label_j: int | None = None
    guess: int | None = None  # a header column that looks like the labels
    values = array("d")
    labels: list[str] = []
    lines: list[int] = []  # file line of each data row, for messages
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells):
                continue  # blank line
            if names is None:
                if all(_is_number(c) for c in cells):
                    names = [str(i) for i in range(len(cells))]
                else:
                    names = [c or str(i) for i, c in enumerate(cells)]
                    if opts.label_column is None:
                        guess = _guess_label_column(names)
                    continue  # a header row
            if label_j is None and opts.label_column is not None:
                label_j = _label_index(opts.label_column, names, source)
            elif label_j is None and guess is not None:
                label_j = guess
            if len(cells) != len(names):
                raise DataError(
                    f"'{source}' line {reader.line_num}: {len(cells)} fields, expected {len(names)}"
                )
            for j, cell in enumerate(cells):
                if j == label_j:
                    labels.append(cell)
                    continue
                try:
                    values.append(float(cell))
                except ValueError:
                    raise _cell_error(source, reader.line_num, names[j], cell) from None
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"'{source}' line {reader.line_num}: {e}") from None
    if names is None or not lines:
        raise DataError(f"'{source}': no data rows")
    feature_names = [n for j, n in enumerate(names) if j != label_j]
    x64 = np.frombuffer(values, dtype=np.float64).reshape(len(lines), len(feature_names))
    meta: dict[str, object] = {"format": "table"}
    if guess is not None and label_j == guess:
        if _label_like(labels):
            meta["label_column"] = names[guess]
            warnings.warn(
                f"'{source}': using column '{names[guess]}' as the labels, not as a feature "
                "(--label-column names another)",
                stacklevel=2,
            )
        else:  # e.g. a y coordinate: a feature after all
            bad = next((i for i, c in enumerate(labels) if not _is_number(c)), None)
            if bad is not None:
                raise _cell_error(source, lines[bad], names[guess], labels[bad])
            x64 = np.insert(x64, guess, np.array([float(c) for c in labels]), axis=1)
            feature_names, label_j = names, None
    if not feature_names:
        raise DataError(f"'{source}': no feature columns besides the label column")
    _check_finite(x64, source, lines, feature_names)
    y, classes = (None, None) if label_j is None else _labels(labels, lines, source, names[label_j])
    x = _storage(x64).reshape(len(lines), 1, 1, len(feature_names))
    meta["columns"] = feature_names
    accepts = ("val_fraction", "split_seed", "label_column")
    return RawData(
        source,
        x,
        y,
        classes=classes,
        accepts=accepts,
        flat=True,
        table=True,
        meta=meta,
    )


def _guess_label_column(names: list[str]) -> int | None:
    found = [j for j, n in enumerate(names) if n.strip().lower() in LABEL_NAMES]
    return found[0] if len(found) == 1 else None


def _label_like(cells: list[str]) -> bool:
    """Integers or class names, not measurements: every cell an integer, or some cell not a number."""
    numbers = [float(c) for c in cells if _is_number(c)]
    if len(numbers) < len(cells):
        return "" not in cells
    return all(np.isfinite(v) and v == round(v) for v in numbers)


def _storage(x64: np.ndarray) -> np.ndarray:
    """Integers 0..255 with some above 1 are 8-bit intensities (uint8, read as v / 255 like images);
    anything else is float32 values."""
    if x64.size and x64.min() >= 0 and 1 < x64.max() <= 255 and np.array_equal(x64, np.round(x64)):
        return x64.astype(np.uint8)
    return x64.astype(np.float32)


def _cell_error(source: str, line: int, column: str, cell: str) -> DataError:
    if cell == "":
        return DataError(f"'{source}' line {line}: empty value in column '{column}'")
    return DataError(
        "'{s}': column '{c}' is not numeric (line {n} has {v!r}); remove it, or name it with "
        "{f.label_column} if it holds the labels",
        f=DataOptions, s=source, c=column, n=line, v=cell[:40],
    )


def _check_finite(x: np.ndarray, source: str, lines: list[int], names: list[str]) -> None:
    bad = ~np.isfinite(x) | (np.abs(x) > _F32_MAX)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        v = x[i, j]
        kind = "NaN" if np.isnan(v) else ("inf" if np.isinf(v) else f"{v:g} (beyond float32's range)")
        raise DataError(f"'{source}': {kind} at line {lines[i]}, column '{names[j]}'")


def _labels(
    cells: list[str], lines: list[int], source: str, column: str
) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels as they are; class names mapped to their rank in sorted order."""
    where = f"{source}' column '{column}"
    if all(_is_number(c) for c in cells):
        y = np.array([float(c) for c in cells])
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise DataError(
                f"'{where}': labels must be integers or class names "
                f"(line {lines[bad[0]]} has {cells[bad[0]]!r})"
            )
        return check_labels(y.astype(np.int64), where, len(y), source), None
    if "" in cells:
        raise DataError(f"'{source}' line {lines[cells.index('')]}: empty label in column '{column}'")
    classes = sorted(set(cells))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[c] for c in cells], dtype=np.int64), classes
