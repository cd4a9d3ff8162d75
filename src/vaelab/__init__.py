"""vaelab: variational autoencoders on PyTorch."""

__version__ = "0.1.0"

from .config import TrainConfig, VAEConfig
from .data import Dataset, Split, load_dataset
from .errors import VaelabError
from .evaluate import evaluate_elbo
from .io import load
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
    "evaluate_elbo",
    "load",
    "load_dataset",
    "neg_elbo",
    "train",
]
