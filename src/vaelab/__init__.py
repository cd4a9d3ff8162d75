"""vaelab: variational autoencoders on PyTorch."""

from vaelab.config import TrainConfig, VAEConfig
from vaelab.data import Dataset, Split, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation.elbo import collapse_diagnostics, evaluate_elbo, evaluate_model
from vaelab.evaluation.likelihood import evaluate_nll, log_px_estimates
from vaelab.io import load
from vaelab.io import save_model as save
from vaelab.models.objectives import neg_elbo
from vaelab.models.vae import VAE
from vaelab.training.loop import train
from vaelab.version import __version__

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
    "save",
    "train",
]
