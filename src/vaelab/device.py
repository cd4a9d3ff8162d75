"""Picking the compute device."""

from __future__ import annotations

import torch

from .errors import VaelabError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, else mps, else cpu; an explicit but unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda was requested but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise VaelabError("--device mps was requested but MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise VaelabError(f"--device must be auto, cpu, cuda or mps; got {name!r}")
    return torch.device(name)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A private, seeded generator on ``device``: evaluation never touches the global RNG."""
    return torch.Generator(device=device).manual_seed(seed)
