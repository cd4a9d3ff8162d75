"""Run directories on disk: ``config.json`` + ``model.safetensors``. No pickle, ever.

All writes are atomic (temp file in the same folder, fsync, rename), so a crash leaves
either the old file or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from .config import FORMAT_NAME, FORMAT_VERSION, TrainConfig, VAEConfig, from_dict, to_dict
from .errors import VaelabError
from .model import VAE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def run_config(model_cfg: VAEConfig, extra: dict | None = None) -> dict[str, Any]:
    """The ``config.json`` document for a model (plus optional sections such as ``train``)."""
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vaelab_version": __version__,
        "model": to_dict(model_cfg),
    }
    doc.update(extra or {})
    return doc


def save_weights(model: VAE, run_dir: str | Path, weights: dict[str, Tensor] | None = None) -> None:
    """Write ``model.safetensors`` for ``model`` (or other ``weights`` of it) into ``run_dir``
    (``config.json`` untouched)."""
    from safetensors.torch import save

    state = model.state_dict() if weights is None else weights
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(Path(run_dir) / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT_NAME}))


def save_model(model: VAE, run_dir: str | Path, extra: dict | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` for ``model`` into ``run_dir``."""
    save_weights(model, run_dir)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, run_config(model.config, extra))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Parse and version-check ``RUN_DIR/config.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelabError(f"run directory '{run_dir}' does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise VaelabError(f"'{path}' is missing: is '{run_dir}' a vaelab run directory?")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VaelabError(f"'{path}' is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise VaelabError(f'\'{path}\' is not a vaelab config (missing "format": "{FORMAT_NAME}")')
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise VaelabError(
            f"'{path}' has config version {version!r}; this vaelab reads version {FORMAT_VERSION}"
        )
    return doc


def load_model_config(run_dir: str | Path) -> VAEConfig:
    doc = read_config(run_dir)
    return from_dict(VAEConfig, doc.get("model"), f"{Path(run_dir) / CONFIG_FILE}: model")


def load_train_config(run_dir: str | Path) -> TrainConfig | None:
    doc = read_config(run_dir)
    if "train" not in doc:
        return None
    return from_dict(TrainConfig, doc["train"], f"{Path(run_dir) / CONFIG_FILE}: train")


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` (strictly)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    model = VAE(load_model_config(run_dir))
    path = run_dir / WEIGHTS_FILE
    if not path.is_file():
        raise VaelabError(f"'{path}' is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise VaelabError(f"'{path}' is corrupt or unreadable: {str(e).splitlines()[0]}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise VaelabError(
            f"'{path}' does not match config.json: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise VaelabError(
                f"'{path}' does not match config.json: {k} has shape {tuple(v.shape)}, "
                f"config implies {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval()
