"""Calls that only some operating systems have fall back gracefully where they are missing.

Each test takes a call away (monkeypatch) and checks what vaelab does without it: the memory probe
(psutil, /proc/meminfo, sysconf), atomic writes without ``os.fchmod``, and the run lock with
``msvcrt`` instead of ``fcntl``, or with neither.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from vaelab.data import types as data_types
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_bytes
from vaelab.training.lock import RunLock


def _no_proc(monkeypatch):
    def refuse(*args, **kwargs):
        raise FileNotFoundError("no /proc here")

    monkeypatch.setattr(data_types, "open", refuse, raising=False)  # shadows the builtin in that module


def test_available_memory_prefers_psutil(monkeypatch):
    fake = types.SimpleNamespace(virtual_memory=lambda: types.SimpleNamespace(available=123 << 20))
    monkeypatch.setitem(sys.modules, "psutil", fake)
    assert data_types.available_memory() == 123 << 20


def test_available_memory_falls_back_without_psutil_proc_or_sysconf(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` raises ImportError
    if os.path.exists("/proc/meminfo"):
        assert data_types.available_memory() > 0  # read from /proc/meminfo
    _no_proc(monkeypatch)
    if hasattr(os, "sysconf"):
        pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
        monkeypatch.setattr(os, "sysconf", pages.__getitem__)
        assert data_types.available_memory() == 1000 * 4096
        monkeypatch.delattr(os, "sysconf")
    assert data_types.available_memory() == 8 << 30


def test_a_broken_psutil_falls_back(monkeypatch):
    def broken():
        raise RuntimeError("cannot tell on this platform")

    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(virtual_memory=broken))
    _no_proc(monkeypatch)
    monkeypatch.delattr(os, "sysconf", raising=False)
    assert data_types.available_memory() == 8 << 30


def test_atomic_write_without_fchmod(monkeypatch, tmp_path):
    monkeypatch.delattr(os, "fchmod", raising=False)
    atomic_write_bytes(tmp_path / "f.bin", b"abc")
    atomic_write_bytes(tmp_path / "f.bin", b"xyz")
    assert (tmp_path / "f.bin").read_bytes() == b"xyz"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_run_lock_with_msvcrt(monkeypatch, tmp_path):
    held: set[int] = set()

    def locking(fd: int, mode: int, nbytes: int) -> None:
        ino = os.fstat(fd).st_ino
        if ino in held:
            raise OSError("locked")  # what LK_NBLCK does when another handle holds the byte
        held.add(ino)

    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(LK_NBLCK=2, locking=locking))
    with RunLock() as first:
        first.acquire(tmp_path / "run")
        assert first.held and (tmp_path / "run" / ".lock").is_file()
        with pytest.raises(VaelabError, match="being trained by another process"):
            RunLock().acquire(tmp_path / "run")


def test_run_lock_without_any_file_locks(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    with RunLock() as first, RunLock() as second:
        first.acquire(tmp_path / "run")  # makes the folder, as with a real lock
        second.acquire(tmp_path / "run")  # nothing to stop it: the run trains unguarded
        assert first.held and second.held
    assert not first.held
