"""vaelab: variational autoencoders on PyTorch."""

__version__ = "0.1.0"

from .config import TrainConfig, VAEConfig
from .data import Dataset, Split, load_dataset
from .errors import VaelabError
from .evaluate import collapse_diagnostics, evaluate_elbo, evaluate_model
from .io import load
from .likelihood import evaluate_nll, log_px_estimates
from .model import VAE
from .objectives import neg_elbo
from .train import train

__all__ = [
    "VAE",
    "Dataset",
    "Split",
    "TrainConfig",
    "VAEConfig",
    "VaelabError",
    "__version__",
    "collapse_diagnostics",
    "evaluate_elbo",
    "evaluate_model",
    "evaluate_nll",
    "load",
    "load_dataset",
    "log_px_estimates",
    "neg_elbo",
    "train",
]
