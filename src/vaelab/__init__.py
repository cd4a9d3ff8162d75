"""vaelab: variational autoencoders on PyTorch."""

__version__ = "0.1.0"

from .config import TrainConfig, VAEConfig  # noqa: E402
from .data import Dataset, Split, load_dataset  # noqa: E402
from .errors import VaelabError  # noqa: E402
from .evaluate import evaluate_elbo  # noqa: E402
from .io import load  # noqa: E402
from .model import VAE  # noqa: E402
from .objectives import neg_elbo  # noqa: E402
from .train import train  # noqa: E402

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
