"""vaelab: variational autoencoders on PyTorch.

The public API is importable from here. Names load on first use, so ``import vaelab`` (and the
``vaelab`` command's start-up, ``--help`` included) does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaelab.version import __version__

_EXPORTS = {  # public name -> (module, attribute)
    "VAE": ("vaelab.models.vae", "VAE"),
    "VAEOutput": ("vaelab.models.vae", "VAEOutput"),
    "register_likelihood": ("vaelab.models.parts", "register_likelihood"),
    "register_prior": ("vaelab.models.parts", "register_prior"),
    "Callback": ("vaelab.training.callbacks", "Callback"),
    "CheckpointError": ("vaelab.errors", "CheckpointError"),
    "ConfigError": ("vaelab.errors", "ConfigError"),
    "DataError": ("vaelab.errors", "DataError"),
    "Run": ("vaelab.training.run", "Run"),
    "Dataset": ("vaelab.data.dataset", "Dataset"),
    "Split": ("vaelab.data.dataset", "Split"),
    "TensorBoardLogger": ("vaelab.training.tensorboard", "TensorBoardLogger"),
    "TrainConfig": ("vaelab.config", "TrainConfig"),
    "VAEConfig": ("vaelab.config", "VAEConfig"),
    "VaelabError": ("vaelab.errors", "VaelabError"),
    "collapse_diagnostics": ("vaelab.evaluation.elbo", "collapse_diagnostics"),
    "evaluate_elbo": ("vaelab.evaluation.elbo", "evaluate_elbo"),
    "evaluate_model": ("vaelab.evaluation.elbo", "evaluate_model"),
    "evaluate_nll": ("vaelab.evaluation.likelihood", "evaluate_nll"),
    "load": ("vaelab.models.vae", "load"),
    "load_dataset": ("vaelab.data.sources", "load_dataset"),
    "from_torch": ("vaelab.data.torch_data", "from_torch"),
    "log_px_estimates": ("vaelab.evaluation.likelihood", "log_px_estimates"),
    "neg_elbo": ("vaelab.models.objectives", "neg_elbo"),
    "save": ("vaelab.io", "save_model"),
    "train": ("vaelab.training.loop", "train"),
}

__all__ = [  # the keys of _EXPORTS, spelled out for tools that read __all__ statically
    "VAE",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Dataset",
    "Run",
    "Split",
    "TensorBoardLogger",
    "TrainConfig",
    "VAEConfig",
    "VAEOutput",
    "VaelabError",
    "__version__",
    "collapse_diagnostics",
    "evaluate_elbo",
    "evaluate_model",
    "evaluate_nll",
    "from_torch",
    "load",
    "load_dataset",
    "log_px_estimates",
    "neg_elbo",
    "register_likelihood",
    "register_prior",
    "save",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see; the same names as _EXPORTS
    from vaelab.config import TrainConfig, VAEConfig
    from vaelab.data.dataset import Dataset, Split
    from vaelab.data.sources import load_dataset
    from vaelab.data.torch_data import from_torch
    from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
    from vaelab.evaluation.elbo import collapse_diagnostics, evaluate_elbo, evaluate_model
    from vaelab.evaluation.likelihood import evaluate_nll, log_px_estimates
    from vaelab.io import save_model as save
    from vaelab.models.objectives import neg_elbo
    from vaelab.models.vae import VAE, load
    from vaelab.training.callbacks import Callback
    from vaelab.training.loop import train
    from vaelab.training.run import Run
    from vaelab.training.tensorboard import TensorBoardLogger
