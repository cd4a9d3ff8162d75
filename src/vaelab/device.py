"""Picking the compute device."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.errors import VaelabError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, else mps, else cpu; an explicit but unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("{a.device:={v!r}} was requested but no CUDA GPU is available", v=name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise VaelabError("{a.device:={v!r}} was requested but MPS is not available", v=name)
    if name not in ("cpu", "cuda", "mps"):
        raise VaelabError("{a.device} must be auto, cpu, cuda or mps; got {v!r}", v=name)
    return torch.device(name)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A private, seeded generator on ``device``: evaluation never touches the global RNG."""
    return torch.Generator(device=device).manual_seed(seed)


def bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draws 1.0 with probability p, elementwise: p (...) float -> (...) of p's dtype.

    On the CPU ``torch.rand(...) < p`` is bit for bit what ``torch.bernoulli(p)`` draws (both
    compare one 24-bit uniform per element, from the same stream) at a third of the cost, since
    ``torch.bernoulli``'s CPU kernel runs a scalar loop; elsewhere ``torch.bernoulli``.
    """
    if p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64):
        return torch.bernoulli(p, generator=generator)
    u = torch.rand(p.shape, generator=generator, dtype=p.dtype)
    return torch.lt(u, p, out=u)  # float 0/1, written over the uniforms
