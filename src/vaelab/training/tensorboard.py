"""TensorBoard logging for `train`: a `Callback` that writes each epoch's metrics and sample grids.

It needs the optional tensorboard package (``pip install "vaelab[tensorboard]"``), imported when a
`TensorBoardLogger` is made, so that ``import vaelab`` never needs it. ``vaelab train --tensorboard DIR``
uses it; from Python pass ``callbacks=[TensorBoardLogger(DIR)]`` to `train`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.models.vae import VAE, eval_mode
from vaelab.training import distributed
from vaelab.training.callbacks import Callback, Record

# record key -> TensorBoard tag (the record keys are `train`'s; a key missing from a record is skipped)
TAGS = {
    "train_neg_elbo": "train/neg_elbo",
    "train_recon": "train/recon",
    "train_kl": "train/kl",
    "lr": "train/lr",
    "kl_weight": "train/kl_weight",
    "seconds": "train/epoch_seconds",
    "test_neg_elbo": "test/neg_elbo",
    "recon": "test/recon",
    "kl": "test/kl",
    "active_units": "test/active_units",
    "test_neg_iwae": "test/neg_iwae",
    "val_neg_elbo": "holdout/neg_elbo",
    "val_neg_iwae": "holdout/neg_iwae",
}
SAMPLES_TAG = "samples"
N_SAMPLES = 64  # an 8 x 8 grid


def require_tensorboard(who: str = "TensorBoardLogger") -> type:
    """torch's ``SummaryWriter``, or a one-line `VaelabError` naming ``who`` when the optional
    tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaelabError(f'{who} needs the tensorboard package: pip install "vaelab[tensorboard]"') from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes TensorBoard events into ``log_dir``: after each epoch the scalars of `TAGS` (step =
    the epoch), and every ``sample_every`` epochs and at the last one a grid of 64 samples decoded
    from the prior (0: never). The samples use a generator seeded with ``seed``, so the grids of
    different epochs show the same z. A CVAE's samples have labels 0, 1, ..., C-1, 0, 1, ...

    Under torchrun only rank 0 writes. A resumed run (``on_train_start`` with a history) drops the
    events of ``log_dir`` after its checkpoint's epoch, which a crashed run may have written. A run
    that stops early (early stopping) gets a grid of its last epoch too. `train` closes the writer
    however training ends.
    """

    def __init__(self, log_dir: str | Path, sample_every: int = 5, seed: int = 0) -> None:
        if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 0:
            raise VaelabError(
                f"TensorBoardLogger: sample_every must be an integer >= 0, got {sample_every!r}"
            )
        self.log_dir, self.sample_every, self.seed = Path(log_dir), sample_every, seed
        self._writer_class = require_tensorboard()  # fail now, not after the first epoch
        self.writer: Any = None
        self.model: VAE | None = None
        self.epochs = 0
        self.drawn = 0  # the epoch of the last sample grid
        self.main = True

    def set_model(self, model: VAE, config: TrainConfig) -> None:
        self.model, self.epochs = model, config.epochs
        self.main = distributed.context().is_main

    def on_train_start(self, history: list[Record]) -> None:
        if not self.main:
            return
        self.close()
        start = int(history[-1]["epoch"]) if history else 0
        self.writer = self._writer_class(str(self.log_dir), purge_step=start + 1 if start else None)

    def on_epoch_end(self, record: Record) -> None:
        if self.writer is None:
            return
        epoch = int(record["epoch"])
        for key, tag in TAGS.items():
            value = record.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), epoch)
        every = self.sample_every
        if every and (epoch % every == 0 or epoch == self.epochs):
            self._draw(epoch)
        self.writer.flush()  # on disk each epoch: a run that stops or crashes keeps its curves

    def on_train_end(self, history: list[Record]) -> None:
        last = int(history[-1]["epoch"]) if history else 0
        if self.writer is not None and self.sample_every and last and self.drawn != last:
            self._draw(last)  # stopped early: the grid of the weights it ends with
        self.close()

    def _draw(self, epoch: int) -> None:
        if self.model is not None and self.writer is not None:
            self.writer.add_images(SAMPLES_TAG, self.samples(), epoch)
            self.drawn = epoch

    def close(self) -> None:
        """Flush and close the event file (a no-op when none is open)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def samples(self) -> Tensor:
        """The model's 64 samples as images for TensorBoard -> (64, C', H', W') in [0, 1] on the CPU,
        C' in {1, 3}; flat data (1, 1, D) shows as square tiles of side ceil(D^0.5), zero-padded."""
        model = self.model
        assert model is not None
        gen = torch.Generator(device=model.device).manual_seed(self.seed)
        c = model.config.n_classes
        y = torch.arange(N_SAMPLES, device=model.device) % c if c else None
        with eval_mode(model):
            x = model.sample(N_SAMPLES, generator=gen, y=y)
        x = x.detach().float().cpu().clamp(0, 1)
        n, channels, h, w = x.shape
        if h == 1:  # flat data: D values as a square tile, zero-padded to the next square
            side = math.ceil(w**0.5)
            x = F.pad(x, (0, side * side - w)).view(n, channels, side, side)
        return x if channels in (1, 3) else x[:, :1]
