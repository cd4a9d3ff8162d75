"""The global RNG states a checkpoint saves (torch CPU and CUDA, numpy, python), and their JSON form.

A checkpoint stores each rank's states in ``state.json`` as plain JSON (base64 for torch's byte
tensors), so that loading a run never unpickles anything.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states (CUDA only when training on CUDA: never initialise it)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": np.random.get_state(legacy=False),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back states from `rng_state` (CUDA's only when training on CUDA)."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_rngs(seed: int, device: torch.device) -> None:
    """Seed every global RNG (used when a resume changes the world size: per-rank states don't map)."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from a few integers (sha256: nearby inputs give unrelated seeds)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def b64(t: Tensor) -> str:
    """A byte tensor (an RNG state) as base64 text."""
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def unb64(s: str) -> Tensor:
    """`b64`'s inverse -> a uint8 tensor."""
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_to_json(state: dict[str, Any]) -> dict[str, Any]:
    """`rng_state`'s result as a JSON-ready dict."""
    npy = state["numpy"]
    version, internal, gauss = state["python"]
    return {
        "torch": b64(state["torch"]),
        "cuda": None if state["cuda"] is None else b64(state["cuda"]),
        "numpy": {
            "bit_generator": npy["bit_generator"],
            "key": np.asarray(npy["state"]["key"]).tolist(),
            "pos": int(npy["state"]["pos"]),
            "has_gauss": int(npy["has_gauss"]),
            "gauss": float(npy["gauss"]),
        },
        "python": [version, list(internal), gauss],
    }


def rng_from_json(doc: dict[str, Any]) -> dict[str, Any]:
    """`rng_to_json`'s inverse: states that `set_rng_state` takes."""
    npy = doc["numpy"]
    version, internal, gauss = doc["python"]
    return {
        "torch": unb64(doc["torch"]),
        "cuda": None if doc.get("cuda") is None else unb64(doc["cuda"]),
        "numpy": {
            "bit_generator": npy["bit_generator"],
            "state": {"key": np.asarray(npy["key"], dtype=np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        },
        "python": (version, tuple(internal), gauss),
    }
