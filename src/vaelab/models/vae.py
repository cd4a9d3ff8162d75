"""The VAE: an encoder to q(z|x), a decoder to p(x|z), and a prior p(z) (`priors`: the standard
normal; with ``config.prior == "vamp"`` the VampPrior, a mixture of q(z|u_k) at learned pseudo-inputs;
with ``"mixture"`` a Gaussian mixture with free weights, means and variances).

With ``config.n_classes > 0`` it is a conditional VAE (CVAE): q(z|x, y) and p(x|z, y), the label
one-hot concatenated to the encoder's input (as constant channels for conv) and to z.

With ``config.top_latent_dim = K2 > 0`` it is the two-level hierarchical VAE of `hierarchy`: z = [z1, z2],
q(z2|x) q(z1|x, z2) and p(z2) p(z1|z2), the decoder p(x|z1, z2) reading the whole of z. As a CVAE both
encoders read [x, y] and the decoder [z, y]; the prior stays p(z), as in the one-level CVAE.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config import VAEConfig
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.distributions import (
    Bernoulli,
    DiagonalGaussian,
    DiscretizedLogistic,
    Gaussian,
    Likelihood,
)
from vaelab.models.hierarchy import HierarchicalPosterior, HierarchicalPrior
from vaelab.models.networks import conv_decoder, conv_encoder, conv_trunk, join_label, mlp, mlp_trunk
from vaelab.models.priors import MixturePrior, Prior, StandardNormal, VampPrior

LOGISTIC_MIN_SCALE = 1e-3  # a quarter of an 8-bit bin: a pixel's mass can approach 1 but stays finite


def soft_floor_log(raw: Tensor, minimum: float) -> Tensor:
    """A log-scale >= log(minimum), smooth so gradients never vanish: log(min) + softplus(raw - log(min))."""
    floor = math.log(minimum)
    return floor + F.softplus(raw - floor)


def inverse_soft_floor_log(log_scale: Tensor, minimum: float) -> Tensor:
    """The raw output that `soft_floor_log` maps to ``log_scale`` (clamped just above the floor)."""
    floor = math.log(minimum)
    return floor + torch.log(torch.expm1((log_scale - floor).clamp_min(1e-4)))  # softplus^-1


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block in eval mode and puts back the mode the model had
    (training or not) on the way out, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


MAX_LAYERS = 64  # hidden layers or conv stages: far beyond any useful VAE, cheap to build on meta
MAX_SIZE = 1 << 24  # any one size (a width, a side, a class count): no product of three overflows int64


def parameter_count(config: VAEConfig) -> int:
    """How many parameters ``VAE(config)`` has, counted on the meta device: nothing is allocated."""
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(config).parameters())


def check_fits(config: VAEConfig) -> None:
    """Refuse, with one line, a config whose weights alone would not fit in memory (a tampered or
    mistyped config.json, or an enormous label count), before anything is allocated."""
    from vaelab.data.types import memory_limit

    if len(config.hidden) > MAX_LAYERS or len(config.channels) > MAX_LAYERS:
        raise VaelabError(f"VAEConfig: at most {MAX_LAYERS} hidden layers and {MAX_LAYERS} conv stages")
    sizes = {
        "latent_dim": [config.latent_dim],
        "hidden": list(config.hidden),
        "channels": list(config.channels),
        "input_shape": list(config.input_shape),
        "n_classes": [config.n_classes],
        "pseudo_inputs": [config.pseudo_inputs or 0],
        "mixture_components": [config.mixture_components or 0],
    }
    for name, values in sizes.items():  # a product of these must not overflow int64 on the meta device
        if any(v > MAX_SIZE for v in values):
            raise VaelabError(f"VAEConfig: {name} {max(values):,} is over {MAX_SIZE:,}")
    n = parameter_count(config)
    limit = memory_limit()
    if 4 * n > limit:
        raise VaelabError(
            f"VAEConfig: {n:,} parameters need {4 * n / 2**30:.1f} GiB of float32 weights, over the "
            f"memory limit of {limit / 2**30:.1f} GiB ($VAELAB_MEMORY_LIMIT); check latent_dim, hidden, "
            "channels, input_shape, n_classes, pseudo_inputs and mixture_components"
        )


class VAE(nn.Module):
    """A VAE built from a `VAEConfig`. Inputs are images (N, C, H, W), or flat data as (N, 1, 1, D)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if torch.get_default_device().type != "meta":  # the size check itself builds on meta
            check_fits(config)
        self.config = config
        c, h, w = config.input_shape
        d, k, n_cls = config.input_dim, config.latent_dim, config.n_classes
        self.n_params = 1 if config.likelihood == "bernoulli" else 2  # decoder outputs per pixel
        hidden, gated = config.hidden, config.gated
        k_top = config.top_latent_dim or k  # the encoder gives q(z2|x) in a hierarchical VAE
        if config.arch == "conv":  # the label enters the encoder as n_cls constant channels
            self.encoder = conv_encoder((c + n_cls, h, w), config.channels, hidden, 2 * k_top, gated)
            out = (self.n_params * c, h, w)
            self.decoder = conv_decoder(k + n_cls, hidden[::-1], config.channels, out, gated)
        else:
            self.encoder = mlp(d + n_cls, hidden, 2 * k_top, gated)  # -> (mu, logvar), no activation
            self.decoder = mlp(k + n_cls, hidden[::-1], self.n_params * d, gated)
        # One level: encode gives a DiagonalGaussian (the VampPrior's components).
        top_k = k
        encode_top = cast(Callable[[Tensor], DiagonalGaussian], self.encode)
        if config.top_latent_dim:  # x -> features; [features, z2] -> q(z1|x, z2)
            top_k, encode_top = config.top_latent_dim, self.encode_top
            self.encoder_bottom = (  # [x, y] -> (N, hidden[-1]), reading what the encoder reads
                conv_trunk((c + n_cls, h, w), config.channels, hidden, gated)
                if config.arch == "conv"
                else mlp_trunk(d + n_cls, hidden, gated)
            )
            self.head_bottom = mlp(hidden[-1] + top_k, hidden[-1:], 2 * (k - top_k), gated)
        prior: Prior = StandardNormal(top_k)  # no parameters: a normal-prior state dict is unchanged
        if config.prior == "vamp":  # pseudo-inputs live in the data's domain: [0, 1] unless Gaussian
            domain = "real" if config.likelihood == "gaussian" else "unit"
            assert config.pseudo_inputs is not None  # VAEConfig resolves the default
            prior = VampPrior(encode_top, config.pseudo_inputs, config.input_shape, domain)
        elif config.prior == "mixture":
            assert config.mixture_components is not None  # VAEConfig resolves the default
            prior = MixturePrior(top_k, config.mixture_components)
        self.prior: Prior | HierarchicalPrior = prior
        if config.top_latent_dim:
            self.prior = HierarchicalPrior(prior, k - top_k, top_k, hidden[::-1], gated)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def one_hot(self, y: Tensor | None) -> Tensor | None:
        """Labels (N,) int -> (N, n_classes) float for a CVAE; None for an unconditional model.
        Class weights (N, n_classes) float (a soft label, e.g. interpolated one-hots) pass through."""
        n_cls = self.config.n_classes
        if not n_cls:
            return None  # labels, if given, are ignored
        if y is None:
            raise VaelabError("this is a conditional VAE (--conditional): it needs class labels, none given")
        if y.is_floating_point():
            if y.dim() != 2 or y.shape[1] != n_cls:
                raise VaelabError(f"class weights must have shape (N, {n_cls}), got {tuple(y.shape)}")
            return y
        return F.one_hot(y.long(), n_cls).float()

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian | HierarchicalPosterior:
        """x (N, C, H, W), labels y (N,) for a CVAE -> q(z|x) with mean and logvar (N, latent_dim)."""
        h = join_label(self._net_input(x), self.one_hot(y))  # [x, y] for a CVAE
        mean, logvar = self.encoder(h).chunk(2, dim=-1)  # (N, K) each; (N, K2) in a hierarchical VAE
        if self.config.top_latent_dim:
            k1 = self.config.latent_dim - self.config.top_latent_dim
            top = DiagonalGaussian(mean, logvar)  # q(z2|x, y)
            return HierarchicalPosterior(top, self.encoder_bottom(h), self.head_bottom, k1)
        return DiagonalGaussian(mean, logvar)

    def encode_top(self, x: Tensor) -> DiagonalGaussian:
        """An unconditional hierarchical VAE's q(z2|x) (the VampPrior's components):
        x (N, C, H, W) -> mean and logvar (N, top_latent_dim)."""
        mean, logvar = self.encoder(self._net_input(x)).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def _net_input(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) as the encoders read it: unchanged for conv, (N, D) for mlp."""
        return x if self.config.arch == "conv" else x.flatten(1)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Likelihood:
        """z (..., latent_dim), labels y (N,) matching z's last batch dim for a CVAE
        -> p(x|z) with parameters of shape (..., C, H, W)."""
        lead = z.shape[:-1]
        z = join_label(z, self.one_hot(y))  # (..., K + n_classes)
        h = self.decoder(z.reshape(-1, z.shape[-1]))  # (M, P * D) or (M, P * C, H, W)
        h = h.reshape(*lead, self.n_params, *self.config.input_shape)  # (..., P, C, H, W)
        if self.config.likelihood == "bernoulli":
            return Bernoulli(h.select(-4, 0))
        loc, raw = h.unbind(-4)
        if self.config.likelihood == "logistic":
            return DiscretizedLogistic(loc, soft_floor_log(raw, LOGISTIC_MIN_SCALE))
        return Gaussian(loc, soft_floor_log(raw, self.config.min_sigma))



    @torch.no_grad()
    def init_decoder_at_marginal(self, split: Split, weight_scale: float = 0.1, chunk: int = 4096) -> None:
        """Start p(x|z) at the data's marginal, whatever z: the decoder's output bias becomes the
        split's mean and (for logistic/Gaussian) its std, per channel for conv and per pixel for mlp,
        and its output weights shrink tenfold (``weight_scale``). A discretized logistic of std s has
        scale s*sqrt(3)/pi.
        Without it a fresh logistic decoder starts at loc ~ 0 and scale ~ 1 (raw output 0 through
        `soft_floor_log`), ~9.6 bits/dim on natural RGB images, far from their ~8.2 marginal.
        For a fresh model only: never after loading weights (--resume, --init-from)."""
        c = self.config
        dims = (0, 2, 3) if c.arch == "conv" else (0,)
        s1: Tensor | float = 0.0
        s2: Tensor | float = 0.0
        n = 0
        for start in range(0, len(split), chunk):  # float64 sums chunk by chunk: streamed splits too
            x = split.batch(slice(start, start + chunk), binarize=False).double()
            x = x if c.arch == "conv" else x.flatten(1)
            s1, s2, n = s1 + x.sum(dims), s2 + (x * x).sum(dims), n + x.numel() // x.shape[1]
        if n == 0:
            return
        assert isinstance(s1, Tensor) and isinstance(s2, Tensor)  # n > 0: the loop summed tensors
        mean = s1 / n
        std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
        if c.likelihood == "bernoulli":
            p = mean.clamp(1e-4, 1 - 1e-4)
            bias = torch.log(p) - torch.log1p(-p)
        elif c.likelihood == "logistic":
            log_s = torch.log(std * math.sqrt(3.0) / math.pi)
            bias = torch.cat([mean, inverse_soft_floor_log(log_s, LOGISTIC_MIN_SCALE)])
        else:
            bias = torch.cat([mean, inverse_soft_floor_log(torch.log(std), c.min_sigma)])
        last = self.decoder[-1]  # nn.ConvTranspose2d (conv) or nn.Linear (mlp): outputs (P, C) / (P, D) major
        assert isinstance(last, (nn.ConvTranspose2d, nn.Linear)) and last.bias is not None
        last.bias.copy_(bias.to(last.bias))
        last.weight.mul_(weight_scale)  # the output then barely depends on z, and the bias rules

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        mean: bool = True,
        temperature: float = 1.0,
        y: Tensor | None = None,
    ) -> Tensor:
        """Decode n draws of z from the prior (with labels y (n,) for a CVAE): pixel means, or sampled
        pixels -> (n, C, H, W). ``temperature`` scales the prior's noise: z ~ N(0, temperature^2 I) for
        the normal prior, each component's std for the VampPrior (see `VampPrior.sample`)."""
        z = self.prior.sample(n, generator, temperature, device=self.device)  # (n, latent_dim)
        px = self.decode(z, y)
        return px.mean if mean else px.sample(generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior mean of each x -> pixel means (N, C, H, W)."""
        return self.decode(self.encode(x, y).mean, y).mean
