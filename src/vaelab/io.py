"""Run directories on disk: ``config.json`` + ``model.safetensors``. No pickle, ever.

All writes are atomic (temp file in the same folder, fsync, rename), so a crash leaves
either the old file or the new one, never half of either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from vaelab.config import FORMAT_NAME, FORMAT_VERSION, TrainConfig, VAEConfig
from vaelab.errors import CheckpointError, VaelabError
from vaelab.files import atomic_write_bytes, atomic_write_json, read_json
from vaelab.schema import from_dict, to_dict
from vaelab.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"  # one JSON line per training epoch
EVALUATE_FILE = "evaluate.json"  # what `vaelab evaluate` stores in a run, and `vaelab report` reads
CARD_FILE = "README.md"  # the model card (`vaelab.card`)


class Model(Protocol):
    """What saving needs of a model: its `VAEConfig` and its weights (any `VAE`)."""

    config: VAEConfig

    def state_dict(self) -> dict[str, Tensor]: ...


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


def save_weights(model: Model, run_dir: str | Path, weights: dict[str, Tensor] | None = None) -> None:
    """Write ``model.safetensors`` for ``model`` (or other ``weights`` of it) into ``run_dir``
    (``config.json`` untouched)."""
    from safetensors.torch import save

    state = model.state_dict() if weights is None else weights
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(Path(run_dir) / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT_NAME}))


def save_model(model: Model, run_dir: str | Path, extra: dict | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` for ``model`` into ``run_dir``."""
    save_weights(model, run_dir)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, run_config(model.config, extra))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Parse and version-check ``RUN_DIR/config.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory '{run_dir}' does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"'{path}' is missing: is '{run_dir}' a vaelab run directory?")
    try:
        doc = read_json(path)
    except VaelabError as e:  # read_json knows nothing of run directories
        raise CheckpointError(str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CheckpointError(f'\'{path}\' is not a vaelab config (missing "format": "{FORMAT_NAME}")')
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
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


def read_weights(run_dir: str | Path) -> dict[str, Tensor]:
    """The tensors of ``RUN_DIR/model.safetensors`` (on the CPU), or a one-line `CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"'{path}' is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"'{path}' is corrupt or unreadable: {str(e).splitlines()[0]}") from None


def check_weights(
    state: dict[str, Tensor],
    expected: dict[str, Tensor],
    where: str,
    against: str = "config.json",
    exact_dtype: bool = False,
) -> None:
    """Weights ``state`` for a model whose state dict is ``expected``: the same names and shapes (and
    dtypes with ``exact_dtype``), and finite; else a `CheckpointError` naming ``where``."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where} does not match {against}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, v in state.items():
        ref = expected[k]
        if v.shape != ref.shape or (exact_dtype and v.dtype != ref.dtype):
            raise CheckpointError(
                f"{where} does not match {against}: {k} has shape {tuple(v.shape)} and dtype {v.dtype}, "
                f"{against} implies {tuple(ref.shape)} and {ref.dtype}"
            )
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise CheckpointError(
            f"{where} holds non-finite weights (NaN or inf in {bad}): the run diverged or the file "
            "was altered; retrain, or resume from an earlier checkpoint"
        )


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``RUN_DIR/metrics.jsonl`` ([] if there is none).

    Lines that are not JSON objects (such as a last line cut short by a crash, or a tampered one) are
    skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # also too deep, or integers past the digit limit
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def read_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN_DIR/evaluate.json`` as a dict, or None if absent or unreadable."""
    try:
        doc = read_json(Path(run_dir) / EVALUATE_FILE)
    except VaelabError:
        return None
    return doc if isinstance(doc, dict) else None
