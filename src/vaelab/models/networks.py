"""Building blocks: MLPs and conv stacks, plain (ReLU) or gated. No activation on the outputs.

A gated layer is h = a * sigmoid(g), with a and g two halves of one linear/conv output
(Dauphin et al. 2017; the "GatedDense" layers of the VampPrior and Exemplar VAE papers).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn


def _hidden_linear(in_dim: int, out_dim: int, gated: bool) -> list[nn.Module]:
    """One hidden layer (N, in_dim) -> (N, out_dim), activation included."""
    if gated:
        return [nn.Linear(in_dim, 2 * out_dim), nn.GLU(dim=-1)]  # GLU: first half * sigmoid(second half)
    return [nn.Linear(in_dim, out_dim), nn.ReLU()]


def mlp_trunk(in_dim: int, hidden: Sequence[int], gated: bool = False) -> nn.Sequential:
    """The hidden layers alone, each activated: (N, in_dim) -> (N, hidden[-1])."""
    layers: list[nn.Module] = []
    for a, b in pairwise((in_dim, *hidden)):
        layers += _hidden_linear(a, b, gated)
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, gated: bool = False) -> nn.Sequential:
    """Linear -> act -> ... -> Linear; (N, in_dim) -> (N, out_dim), no output activation."""
    width = hidden[-1] if hidden else in_dim
    return nn.Sequential(*mlp_trunk(in_dim, hidden, gated), nn.Linear(width, out_dim))


def _conv(in_ch: int, out_ch: int, gated: bool, transpose: bool = False) -> list[nn.Module]:
    """A 4x4 stride-2 conv that halves H and W (or a transposed one that doubles them), activated."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    if gated:
        return [conv(in_ch, 2 * out_ch, 4, stride=2, padding=1), nn.GLU(dim=1)]
    return [conv(in_ch, out_ch, 4, stride=2, padding=1), nn.ReLU()]


def conv_trunk(
    in_shape: tuple[int, int, int], channels: Sequence[int], hidden: Sequence[int], gated: bool = False
) -> nn.Sequential:
    """The conv stages and hidden layers alone, each activated: (N, C, H, W) -> (N, width), width
    hidden[-1] (or the flattened feature map without hidden layers).

    H and W must be divisible by 2 ** len(channels) (config.py checks).
    """
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += _conv(c, ch, gated)
        c, h, w = ch, h // 2, w // 2
    layers.append(nn.Flatten())  # (N, c * h * w)
    return nn.Sequential(*layers, *mlp_trunk(c * h * w, hidden, gated))


def conv_encoder(
    in_shape: tuple[int, int, int],
    channels: Sequence[int],
    hidden: Sequence[int],
    out_dim: int,
    gated: bool = False,
) -> nn.Sequential:
    """(N, C, H, W) -> (N, out_dim): one stride-2 conv per entry of ``channels``, then an MLP."""
    c, h, w = in_shape
    f = 2 ** len(channels)
    width = hidden[-1] if hidden else (channels[-1] if channels else c) * (h // f) * (w // f)
    return nn.Sequential(*conv_trunk(in_shape, channels, hidden, gated), nn.Linear(width, out_dim))


def conv_decoder(
    in_dim: int,
    hidden: Sequence[int],
    channels: Sequence[int],
    out_shape: tuple[int, int, int],
    gated: bool = False,
) -> nn.Sequential:
    """(N, in_dim) -> (N, C, H, W): an MLP to a small feature map, then stride-2 transposed convs.

    ``channels`` are listed as in the encoder (input side first); the decoder walks them backwards.
    """
    c_out, h_out, w_out = out_shape
    f = 2 ** len(channels)
    top = (channels[-1], h_out // f, w_out // f)  # the feature map the first transposed conv reads
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += _hidden_linear(width, h, gated)
        width = h
    layers += _hidden_linear(width, top[0] * top[1] * top[2], gated)
    layers.append(nn.Unflatten(1, top))
    widths = list(reversed(channels))  # e.g. (64, 32)
    for a, b in pairwise(widths):
        layers += _conv(a, b, gated, transpose=True)
    layers.append(nn.ConvTranspose2d(widths[-1], c_out, 4, stride=2, padding=1))  # no activation
    return nn.Sequential(*layers)


def join_label(h: Tensor, onehot: Tensor | None) -> Tensor:
    """Concatenate a one-hot label to the features: (..., F) -> (..., F + n_classes), or to an
    image as constant channels: (N, C, H, W) -> (N, C + n_classes, H, W). ``None`` passes through."""
    if onehot is None:
        return h
    onehot = onehot.to(h.dtype)
    if h.dim() == 4:
        onehot = onehot[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return torch.cat([h, onehot], dim=1)
    return torch.cat([h, onehot.expand(*h.shape[:-1], -1)], dim=-1)
