"""mnist / fashion-mnist: the search order and the download path, against a local HTTP server
on 127.0.0.1 that serves small generated IDX files (and corrupted ones)."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
from datagen import assert_one_line_error, idx_bytes, images, labels, run_cli

from vaelab.data import mnist
from vaelab.data.download import DownloadError, fetch
from vaelab.data.sources import load_dataset
from vaelab.errors import VaelabError

ARRAYS = [images(30), labels(30), images(10, seed=7), labels(10, seed=8)]
RAW = [idx_bytes(a) for a in ARRAYS]


class _Handler(http.server.SimpleHTTPRequestHandler):
    log: list[str]

    def log_message(self, *args) -> None:  # keep pytest output clean; remember the requests
        type(self).log.append(self.path)


@pytest.fixture
def server(tmp_path):
    """-> (root folder, base URL, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_Handler,), {"log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_port}", handler.log
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty user cache and no system copies or $VAELAB_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", (tmp_path / "system",))
    return tmp_path


def _publish(folder, corrupt: int | None = None) -> None:
    """Serve the four files gzipped, like the real mirrors; ``corrupt`` spoils one file's content."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (spec, raw) in enumerate(zip(mnist.MNIST.files, RAW, strict=True)):
        if i == corrupt:
            raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])  # valid gzip, wrong content
        (folder / f"{spec.name}.gz").write_bytes(gzip.compress(raw, mtime=0))


def _fake(monkeypatch, *mirrors: str) -> mnist.NamedDataset:
    files = tuple(
        mnist.IdxSpec(s.name, hashlib.sha256(raw).hexdigest(), len(raw))
        for s, raw in zip(mnist.MNIST.files, RAW, strict=True)
    )
    fake = dataclasses.replace(mnist.MNIST, mirrors=mirrors, files=files)
    monkeypatch.setitem(mnist.REMOTE, "mnist", fake)
    return fake


def _check(data) -> None:
    assert data.shape == (1, 6, 5) and data.test_split == "test"
    np.testing.assert_array_equal(data.train.x.numpy()[:, 0], ARRAYS[0])
    np.testing.assert_array_equal(data.test.y.numpy(), ARRAYS[3])
    assert data.classes == [str(i) for i in range(10)]


def test_download_verifies_writes_raw_files_to_the_cache_and_is_reused(server, home, monkeypatch):
    root, url, log = server
    _publish(root / "m")
    _fake(monkeypatch, f"{url}/m/")
    _check(load_dataset("mnist"))
    cache = home / "cache" / "vaelab" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s.name for s in mnist.MNIST.files)
    assert (cache / "train-images-idx3-ubyte").read_bytes() == RAW[0]  # stored decompressed
    n = len(log)
    _check(load_dataset("mnist"))
    assert len(log) == n == 4  # the second load reads the cache


def test_corrupted_mirror_is_rejected_and_the_next_one_used(server, home, monkeypatch):
    root, url, log = server
    _publish(root / "bad", corrupt=0)
    _publish(root / "good")
    _fake(monkeypatch, f"{url}/bad/", f"{url}/good/")
    _check(load_dataset("mnist"))
    assert log[:2] == ["/bad/train-images-idx3-ubyte.gz", "/good/train-images-idx3-ubyte.gz"]


def test_checksum_rejects_a_corrupted_file_and_leaves_nothing_behind(server, home, monkeypatch):
    root, url, _ = server
    _publish(root / "bad", corrupt=0)
    (root / "bad" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    fake = _fake(monkeypatch, f"{url}/bad/")
    with pytest.raises(VaelabError, match="sha256 mismatch") as e:
        load_dataset("mnist")
    assert "To work offline" in str(e.value)
    cache = home / "cache" / "vaelab" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(DownloadError, match="t10k-labels"):
        fetch("t10k-labels-idx1-ubyte.gz", fake.mirrors, home / "x", fake.files[3].sha256, 1000)
    assert not (home / "x").exists()


def test_missing_file_and_offline_mirrors_fail_with_how_to_get_the_files(server, home, monkeypatch):
    _, url, _ = server
    with socket.socket() as s:  # a port nothing listens on: connection refused, like offline
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    _fake(monkeypatch, f"{url}/nothing-here/", closed)
    line = assert_one_line_error(run_cli(["train", "--data", "mnist", "--out", str(home / "run")]))
    assert "HTTP 404" in line and "refused" in line.lower()
    assert "To work offline" in line and str(home / "cache" / "vaelab" / "mnist") in line
    assert "--data-dir" in line and "VAELAB_DATA" in line


def test_progress_bar_on_request(server, home, monkeypatch, capsys):
    root, url, _ = server
    _publish(root / "m")
    fake = _fake(monkeypatch, f"{url}/m/")
    fetch("train-images-idx3-ubyte.gz", fake.mirrors, home / "f", fake.files[0].sha256, 10**6, progress=True)
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err
    assert (home / "f").read_bytes() == RAW[0]


def _copy(folder, names=None, gz=False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for spec, raw in zip(mnist.MNIST.files, RAW, strict=True):
        name = (names or {}).get(spec.name, spec.name)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)


def test_search_order_data_dir_then_cache_then_system(home, monkeypatch):
    _fake(monkeypatch)  # no mirrors: any download attempt fails
    system, cache, mine = home / "system" / "mnist", home / "cache" / "vaelab" / "mnist", home / "mine"
    _copy(system, gz=True)
    assert load_dataset("mnist").meta["files"] == str(system)
    _copy(cache)
    assert load_dataset("mnist").meta["files"] == str(cache)
    _copy(mine / "mnist")
    assert load_dataset("mnist", data_dir=str(mine)).meta["files"] == str(mine / "mnist")
    monkeypatch.setenv("VAELAB_DATA", str(mine))
    data = load_dataset("mnist")
    assert data.meta["files"] == str(mine / "mnist")
    assert "data_dir" not in data.meta["options"]  # the environment is not recorded
    assert load_dataset("mnist", data_dir=str(mine)).meta["options"]["data_dir"] == str(mine)


def test_other_layouts_in_the_data_dir(home, monkeypatch):
    _fake(monkeypatch)
    dotted = {s.name: s.name.replace("-idx", ".idx") for s in mnist.MNIST.files}
    _copy(home / "a" / "MNIST" / "raw", gz=True)  # torchvision's layout
    _check(load_dataset("mnist", data_dir=str(home / "a")))
    _copy(home / "b", names=dotted)  # train-images.idx3-ubyte, directly in the folder
    _check(load_dataset("mnist", data_dir=str(home / "b")))


def test_download_goes_to_the_data_dir_when_given(server, home, monkeypatch):
    root, url, _ = server
    _publish(root / "m")
    _fake(monkeypatch, f"{url}/m/")
    _check(load_dataset("mnist", data_dir=str(home / "d")))
    assert (home / "d" / "mnist" / "t10k-labels-idx1-ubyte").read_bytes() == RAW[3]


def test_a_found_copy_with_the_wrong_content_is_refused(home, monkeypatch):
    _fake(monkeypatch)
    cache = home / "cache" / "vaelab" / "mnist"
    _copy(cache)
    (cache / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels(30, seed=99)))
    with pytest.raises(VaelabError, match="not the official MNIST file") as e:
        load_dataset("mnist")
    assert str(cache / "train-labels-idx1-ubyte") in str(e.value)


def test_real_checksums_are_well_formed():
    for ds in mnist.REMOTE.values():
        assert len(ds.files) == 4 and all(len(s.sha256) == 64 for s in ds.files)
        assert [s.size for s in ds.files] == [47040016, 60008, 7840016, 10008]
        assert all(m.startswith(("http://", "https://")) and m.endswith("/") for m in ds.mirrors)


def test_the_offline_hint_names_the_data_dir_that_was_given(server, home, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    _fake(monkeypatch, closed)
    mine = home / "my-data"
    argv = ["train", "--data", "mnist", "--data-dir", str(mine), "--out", str(home / "run")]
    line = assert_one_line_error(run_cli(argv))
    assert f"in {mine / 'mnist'}/" in line
    assert str(home / "cache") not in line and "--data-dir" not in line
