"""MNIST and Fashion-MNIST: the standard 60k/10k splits with labels, found or fetched.

Search order: ``--data-dir`` / $VAELAB_DATA (in ``DIR/<name>/``, torchvision's
``DIR/<Name>/raw/`` or ``DIR`` itself), then the user cache (``$XDG_CACHE_HOME/vaelab/<name>/``,
by default ``~/.cache/vaelab/<name>/``), then system copies (``/usr/share/datasets/<name>/``,
as installed by Debian's ``dataset-fashion-mnist``), and only then the official mirrors. Each
file is checked against the sha256 of its (decompressed) IDX content, so a gzipped, a
re-compressed (Debian's) and a raw copy are all recognised and anything else is refused.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.data.download import DownloadError, fetch
from vaelab.data.readers.idx import read_idx
from vaelab.data.types import DataOptions, RawData
from vaelab.errors import DataError

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
SYSTEM_DIRS = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))


@dataclass(frozen=True)
class IdxSpec:
    """One file: its name without .gz, sha256 and size of the raw IDX content."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class NamedDataset:
    name: str
    title: str
    mirrors: tuple[str, ...]
    files: tuple[IdxSpec, IdxSpec, IdxSpec, IdxSpec]  # in ROLES order
    classes: tuple[str, ...]
    torchvision_dir: str
    hint: str = ""  # another way to get the files, for the offline error


MNIST = NamedDataset(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    files=(
        IdxSpec(
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            47040016,
        ),
        IdxSpec(
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            60008,
        ),
        IdxSpec(
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            7840016,
        ),
        IdxSpec(
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            10008,
        ),
    ),
    classes=tuple(str(i) for i in range(10)),
    torchvision_dir="MNIST",
)

# Content checksums computed from Debian's dataset-fashion-mnist (whose .gz files are
# re-compressed, so their own checksums differ from upstream's; the IDX content is the same).
FASHION_MNIST = NamedDataset(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    files=(
        IdxSpec(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47040016,
        ),
        IdxSpec(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60008,
        ),
        IdxSpec(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7840016,
        ),
        IdxSpec(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10008,
        ),
    ),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    torchvision_dir="FashionMNIST",
    hint="; on Debian or Ubuntu, `apt-get install dataset-fashion-mnist` provides them",
)

REMOTE: dict[str, NamedDataset] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vaelab`` (default ``~/.cache/vaelab``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vaelab"


def data_dir(opts: DataOptions) -> Path | None:
    text = opts.data_dir or os.environ.get("VAELAB_DATA") or ""
    return Path(text).expanduser() if text else None


def search_dirs(ds: NamedDataset, root: Path | None) -> list[Path]:
    """Folders to look in, in order (see the module docstring)."""
    dirs = [root / ds.name, root / ds.torchvision_dir / "raw", root] if root else []
    dirs.append(cache_dir() / ds.name)
    dirs += [d / ds.name for d in SYSTEM_DIRS]
    return dirs


def _variants(name: str) -> list[str]:
    dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some copies name it
    return [name, name + ".gz", dotted, dotted + ".gz"]


def find_copy(ds: NamedDataset, folder: Path) -> list[Path] | None:
    """The four files in ``folder`` (any naming variant), or None unless all are there."""
    found = []
    for spec in ds.files:
        hit = next((folder / v for v in _variants(spec.name) if (folder / v).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def read_named(source: str, opts: DataOptions, progress: bool | None = None) -> RawData:
    """Find (or download) ``source`` and read it -> RawData with the official test split."""
    ds = REMOTE[source]
    root = data_dir(opts)
    files = next((f for f in map(lambda d: find_copy(ds, d), search_dirs(ds, root)) if f), None)
    if files is None:
        target = (root / ds.name) if root else cache_dir() / ds.name
        download(ds, target, progress, chosen=root is not None)
        files = find_copy(ds, target)
        assert files is not None
    arrays = []
    for spec, path in zip(ds.files, files, strict=True):
        try:
            arr, _ = read_idx(path, sha256=spec.sha256)
        except DataError as e:
            raise DataError(f"{e}: not the official {ds.title} file; remove or replace it") from None
        arrays.append(arr)
    x, y, xt, yt = arrays
    return RawData(
        source,
        x[:, None],  # (60000, 1, 28, 28) uint8
        y.astype(np.int64),
        xt[:, None],
        yt.astype(np.int64),
        classes=list(ds.classes),
        accepts=("data_dir",),
        meta={"files": str(files[0].parent)},
    )


def download(ds: NamedDataset, target: Path, progress: bool | None = None, chosen: bool = False) -> None:
    """Fetch the missing files of ``ds`` into ``target`` (verified, atomic). ``chosen``: the user named
    ``target``'s parent (--data-dir or $VAELAB_DATA), so the offline hint names only that folder."""
    missing = [s for s in ds.files if not any((target / v).is_file() for v in _variants(s.name))]
    for spec in missing:
        try:
            fetch(
                spec.name + ".gz",
                ds.mirrors,
                target / spec.name,
                spec.sha256,
                spec.size + (1 << 20),
                progress=progress,
            )
        except DownloadError as e:
            names = ", ".join(s.name + ".gz" for s in ds.files)
            raise DataError(
                "cannot get {t}: no mirror served {n}.gz ({e}). To work offline, put {names} (from {m}) in "
                + ("{d}/" if chosen else "{d}/ or in a folder named by {f.data_dir} or $VAELAB_DATA")
                + "{hint}",
                f=DataOptions, t=ds.title, n=spec.name, e=e, names=names, m=ds.mirrors[0], d=target,
                hint=ds.hint,
            ) from None
        except OSError as e:
            raise DataError(f"cannot write '{target / spec.name}': {e.strerror or e}") from None
    if missing:
        print(f"downloaded {ds.title} ({len(missing)} files, sha256 verified) to {target}/", file=sys.stderr)
