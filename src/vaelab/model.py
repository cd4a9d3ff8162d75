"""The VAE: an encoder to q(z|x), a decoder to p(x|z), and a standard normal prior p(z)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import VAEConfig
from .distributions import Bernoulli, DiagonalGaussian, Gaussian, Likelihood
from .networks import mlp


class VAE(nn.Module):
    """A VAE built from a `VAEConfig`. Inputs are images (N, C, H, W), or flat data as (N, 1, 1, D)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        d, k = config.input_dim, config.latent_dim
        n_params = 2 if config.likelihood == "gaussian" else 1
        self.encoder = mlp(d, config.hidden, 2 * k)  # -> (mu, logvar), no activation
        self.decoder = mlp(k, tuple(reversed(config.hidden)), n_params * d)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """x (N, C, H, W) -> q(z|x) with mean and logvar of shape (N, latent_dim)."""
        h = self.encoder(x.flatten(1))  # (N, 2K)
        mean, logvar = h.chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: Tensor) -> Likelihood:
        """z (..., latent_dim) -> p(x|z) with parameters of shape (..., C, H, W)."""
        lead = z.shape[:-1]
        h = self.decoder(z)  # (..., n_params * D)
        shape = (*lead, *self.config.input_shape)
        if self.config.likelihood == "bernoulli":
            return Bernoulli(h.view(shape))
        mean, raw = h.chunk(2, dim=-1)
        # Soft floor on sigma: log_sigma >= log(min_sigma), smooth so gradients never vanish.
        floor = torch.log(torch.tensor(self.config.min_sigma, device=h.device, dtype=h.dtype))
        log_sigma = floor + F.softplus(raw - floor)
        return Gaussian(mean.reshape(shape), log_sigma.reshape(shape))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        mean: bool = True,
        temperature: float = 1.0,
    ) -> Tensor:
        """Decode n draws of z ~ N(0, temperature^2 I): pixel means, or sampled pixels -> (n, C, H, W)."""
        z = temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        px = self.decode(z)
        return px.mean if mean else px.sample(generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean of each x -> pixel means (N, C, H, W)."""
        return self.decode(self.encode(x).mean).mean

    def save(self, run_dir: str | Path, extra: dict | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (atomically)."""
        from .io import save_model

        save_model(self, run_dir, extra)
