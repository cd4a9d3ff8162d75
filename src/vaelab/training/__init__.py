"""Training: the loop (`train`) and its callbacks, the run directory (`Run`), the engine that runs
each step, checkpoints and bitwise resume, early stopping on a holdout, graceful stops on signals,
and data parallelism under torchrun."""

from vaelab.training.callbacks import Callback, PosteriorCollapseWarning
from vaelab.training.loop import TrainingStopped, train
from vaelab.training.run import Run

__all__ = ["Callback", "PosteriorCollapseWarning", "Run", "TrainingStopped", "train"]
