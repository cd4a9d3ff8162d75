"""A user's own small conv encoder and decoder for 8x8 images (the docs' example), shared by the tests
and by ddp_scenarios.py (which imports it by module name, like a user's own package)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab import VAE, VAEConfig


class ConvEncoder(nn.Module):
    """x (N, C, 8, 8) [+ one-hot label (N, n_classes)] -> (N, 2 * latent_dim): mean and log-variance."""

    def __init__(self, latent_dim: int = 2, channels: int = 1, n_classes: int = 0, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(width * 4 * 4 + n_classes, 2 * latent_dim)  # no activation

    def forward(self, x: Tensor, label: Tensor | None = None) -> Tensor:
        h = self.conv(x)  # (N, width * 16)
        if label is not None:  # a conditional model passes the one-hot label too
            h = torch.cat([h, label], dim=1)
        return self.head(h)


class ConvDecoder(nn.Module):
    """z (N, latent_dim) [+ one-hot label] -> (N, P * C, 8, 8): the likelihood's parameters."""

    def __init__(
        self, latent_dim: int = 2, channels: int = 1, n_params: int = 1, n_classes: int = 0, width: int = 16
    ) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim + n_classes, width * 4 * 4), nn.ReLU())
        self.deconv = nn.ConvTranspose2d(width, n_params * channels, 4, stride=2, padding=1)  # 4x4 -> 8x8
        self.width = width

    def forward(self, z: Tensor, label: Tensor | None = None) -> Tensor:
        if label is not None:
            z = torch.cat([z, label], dim=1)
        h = self.fc(z).view(-1, self.width, 4, 4)
        return self.deconv(h)


def own_vae(seed: int = 0, **fields) -> VAE:
    """A VAE around `ConvEncoder` and `ConvDecoder` for (1, 8, 8) inputs and a 2-d latent, built right
    after ``torch.manual_seed(seed)``; ``fields`` override `VAEConfig` fields."""
    config = VAEConfig(**{"input_shape": (1, 8, 8), "latent_dim": 2} | fields)
    torch.manual_seed(seed)
    n_params = 1 if config.likelihood == "bernoulli" else 2
    encoder = ConvEncoder(config.latent_dim, n_classes=config.n_classes)
    decoder = ConvDecoder(config.latent_dim, n_params=n_params, n_classes=config.n_classes)
    return VAE(config, encoder=encoder, decoder=decoder)
