"""Training: the loop (`train`), the engine that runs each step, checkpoints and bitwise resume,
early stopping on a holdout, graceful stops on signals, and data parallelism under torchrun."""

from vaelab.training.loop import PosteriorCollapseWarning, TrainingStopped, train

__all__ = ["PosteriorCollapseWarning", "TrainingStopped", "train"]
