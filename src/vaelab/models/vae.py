"""The VAE, composed of four parts (`parts`): an encoder to q(z|x), a decoder to the likelihood
p(x|z) (Bernoulli, Gaussian or discretized logistic: `distributions`), and a prior p(z) (`priors`:
the standard normal, the VampPrior, or a Gaussian mixture). The built-in encoder and decoder are
MLPs or conv stacks (`networks`); your own networks work too, under the contract in `parts`.

With ``config.n_classes > 0`` it is a conditional VAE (CVAE): q(z|x, y) and p(x|z, y), the label
one-hot concatenated to the encoder's input (as constant channels for conv) and to z.

With ``config.top_latent_dim = K2 > 0`` it is the two-level hierarchical VAE of `hierarchy`: z = [z1, z2],
q(z2|x) q(z1|x, z2) and p(z2) p(z1|z2), the decoder p(x|z1, z2) reading the whole of z. As a CVAE both
encoders read [x, y] and the decoder [z, y]; the prior stays p(z), as in the one-level CVAE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config import VAEConfig
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.hierarchy import HierarchicalPosterior, HierarchicalPrior
from vaelab.models.networks import conv_decoder, conv_encoder, conv_trunk, join_label, mlp, mlp_trunk
from vaelab.models.parts import LIKELIHOODS, PRIORS, Likelihood, Prior, class_path
from vaelab.models.pretrained import PretrainedMixin
from vaelab.models.priors import StandardNormal  # importing priors registers the built-in ones

__all__ = ["VAE", "StandardNormal", "VAEOutput", "check_fits", "eval_mode", "load", "parameter_count"]

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
    if config.arch == "custom":  # your own networks exist already: nothing left to allocate
        return
    n = parameter_count(config)
    limit = memory_limit()
    if 4 * n > limit:
        raise VaelabError(
            f"VAEConfig: {n:,} parameters need {4 * n / 2**30:.1f} GiB of float32 weights, over the "
            f"memory limit of {limit / 2**30:.1f} GiB ($VAELAB_MEMORY_LIMIT); check latent_dim, hidden, "
            "channels, input_shape, n_classes, pseudo_inputs and mixture_components"
        )


@dataclass
class VAEOutput:
    """What ``model(x, y)`` returns: q(z|x), one reparameterized draw z (N, K) and p(x|z) at it.

    The loss stays a function: ``neg_elbo(model, x)`` computes its terms from the same three."""

    posterior: DiagonalGaussian | HierarchicalPosterior
    z: Tensor
    likelihood: Likelihood


class VAE(PretrainedMixin, nn.Module):
    """A VAE composed of an encoder, a decoder, a prior and a likelihood (`vaelab.models.parts`).

    - ``VAE(config)``: the built-in networks, prior and likelihood a `VAEConfig` names (also
      `VAE.from_config`);
    - ``VAE(config, encoder=..., decoder=...)``: your own networks; the config gives the shapes,
      latent size, likelihood and prior;
    - ``VAE(encoder, decoder, prior=StandardNormal(K), likelihood=Bernoulli, input_shape=(C, H, W))``:
      the parts themselves (a registered prior instance and likelihood class).

    Inputs are images (N, C, H, W), or flat data as (N, 1, 1, D). Your own networks must honour the
    contract in `vaelab.models.parts`; it is checked on the first batch, with a one-line error.
    """

    def __init__(
        self,
        config: VAEConfig | nn.Module,
        decoder: nn.Module | None = None,
        *,
        encoder: nn.Module | None = None,
        prior: nn.Module | None = None,
        likelihood: type | str | None = None,
        input_shape: tuple[int, int, int] | None = None,
        latent_dim: int | None = None,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(config, VAEConfig):
            given: dict[str, object] = dict(prior=prior, likelihood=likelihood, input_shape=input_shape)
            given |= dict(latent_dim=latent_dim, n_classes=n_classes or None)
            extra = [k for k, v in given.items() if v is not None]
            if extra:  # a config names every part: two sources for one would disagree sooner or later
                raise VaelabError(
                    "VAE(config) takes its parts from the config and your own networks as encoder= and "
                    f"decoder=; drop {', '.join(extra)}"
                )
            config = _own_networks(config, encoder, decoder)
        else:  # VAE(encoder, decoder, prior=..., likelihood=...)
            if decoder is None or input_shape is None:
                raise VaelabError("VAE(encoder, decoder, ...) needs the decoder and input_shape=(C, H, W)")
            encoder, config = config, _composed_config(
                config, decoder, prior, likelihood or "bernoulli", input_shape, latent_dim, n_classes
            )
        if torch.get_default_device().type != "meta":  # the size check itself builds on meta
            check_fits(config)
        self.config = config
        self.likelihood = cast(type[Likelihood], LIKELIHOODS.get(config.likelihood))  # p(x|z), a class
        self.n_params = self.likelihood.n_params  # decoder outputs per pixel
        self._unchecked = {"encoder", "decoder"} if encoder is not None else set()  # the contract
        if encoder is not None and decoder is not None:
            self.encoder, self.decoder = encoder, decoder
        else:
            self._build_networks(config)
        top_k = config.top_latent_dim or config.latent_dim
        encode_top = self.encode_top if config.top_latent_dim else self.encode  # what a VampPrior mixes
        if prior is None:
            prior = cast(Any, PRIORS.get(config.prior)).from_config(config, top_k, encode_top)
        self.prior: Prior = cast(Prior, prior)
        if config.top_latent_dim:
            k1 = config.latent_dim - top_k
            self.prior = HierarchicalPrior(cast(Prior, prior), k1, top_k, config.hidden[::-1], config.gated)

    @classmethod
    def from_config(
        cls, config: VAEConfig, *, encoder: nn.Module | None = None, decoder: nn.Module | None = None
    ) -> VAE:
        """The model ``config`` describes: names become classes through the prior and likelihood
        registries. A config with ``arch`` "custom" needs its ``encoder`` and ``decoder`` passed in."""
        return cls(config, encoder=encoder, decoder=decoder)

    def _build_networks(self, config: VAEConfig) -> None:
        """The built-in MLP or conv encoder and decoder (and a hierarchy's bottom encoder)."""
        c, h, w = config.input_shape
        d, k, n_cls = config.input_dim, config.latent_dim, config.n_classes
        hidden, gated = config.hidden, config.gated
        k_top = config.top_latent_dim or k  # the encoder gives q(z2|x) in a hierarchical VAE
        if config.arch == "conv":  # the label enters the encoder as n_cls constant channels
            self.encoder = conv_encoder((c + n_cls, h, w), config.channels, hidden, 2 * k_top, gated)
            out = (self.n_params * c, h, w)
            self.decoder = conv_decoder(k + n_cls, hidden[::-1], config.channels, out, gated)
        else:
            self.encoder = mlp(d + n_cls, hidden, 2 * k_top, gated)  # -> (mu, logvar), no activation
            self.decoder = mlp(k + n_cls, hidden[::-1], self.n_params * d, gated)
        if config.top_latent_dim:  # [x, y] -> features (N, hidden[-1]); [features, z2] -> q(z1|x, z2)
            self.encoder_bottom = (
                conv_trunk((c + n_cls, h, w), config.channels, hidden, gated)
                if config.arch == "conv"
                else mlp_trunk(d + n_cls, hidden, gated)
            )
            self.head_bottom = mlp(hidden[-1] + k_top, hidden[-1:], 2 * (k - k_top), gated)

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
            raise VaelabError(f"this is a conditional VAE (config.n_classes={n_cls}): it needs labels y")
        if y.is_floating_point():
            if y.dim() != 2 or y.shape[1] != n_cls:
                raise VaelabError(f"class weights must have shape (N, {n_cls}), got {tuple(y.shape)}")
            return y
        return F.one_hot(y.long(), n_cls).float()

    def forward(
        self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> VAEOutput:
        """x (N, C, H, W), labels y (N,) for a CVAE -> q(z|x), one draw z (N, K), and p(x|z)."""
        q = self.encode(x, y)
        z = q.sample(generator)  # (N, K), reparameterized
        return VAEOutput(q, z, self.decode(z, y))

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian | HierarchicalPosterior:
        """x (N, C, H, W), labels y (N,) for a CVAE -> q(z|x) with mean and logvar (N, latent_dim)."""
        onehot = self.one_hot(y)
        if self.config.arch == "custom":
            out = self.encoder(x) if onehot is None else self.encoder(x, onehot.to(x.dtype))
            if self._unchecked:
                self._check_encoder(x, out)
            mean, logvar = out.chunk(2, dim=-1)
            return DiagonalGaussian(mean, logvar)
        h = join_label(self._net_input(x), onehot)  # [x, y] for a CVAE
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
        """x (N, C, H, W) as the built-in encoders read it: unchanged for conv, (N, D) for mlp."""
        return x.flatten(1) if self.config.arch == "mlp" else x

    def decode(self, z: Tensor, y: Tensor | None = None) -> Likelihood:
        """z (..., latent_dim), labels y (N,) matching z's last batch dim for a CVAE
        -> p(x|z) with parameters of shape (..., C, H, W)."""
        lead = z.shape[:-1]
        onehot = self.one_hot(y)
        if self.config.arch == "custom":
            flat = z.reshape(-1, z.shape[-1])  # (M, K)
            if onehot is None:
                h = self.decoder(flat)
            else:
                h = self.decoder(flat, onehot.to(z.dtype).expand(*lead, -1).reshape(flat.shape[0], -1))
            if self._unchecked:
                self._check_decoder(flat, h)
        else:
            z = join_label(z, onehot)  # (..., K + n_classes)
            h = self.decoder(z.reshape(-1, z.shape[-1]))  # (M, P * D) or (M, P * C, H, W)
        params = h.reshape(*lead, self.n_params, *self.config.input_shape)  # (..., P, C, H, W)
        return self.likelihood.from_decoder(params, self.config)

    def _check_encoder(self, x: Tensor, out: object) -> None:
        """The encoder contract, checked once: (N, C, H, W) -> (N, 2 * latent_dim)."""
        n, k = x.shape[0], self.config.latent_dim
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        if got != (n, 2 * k):
            raise VaelabError(
                f"encoder contract: x {tuple(x.shape)} must map to (N, 2 * latent_dim) = ({n}, {2 * k}), "
                f"the mean and log-variance of q(z|x) with no activation; the encoder gave {got}"
            )
        self._unchecked.discard("encoder")

    def _check_decoder(self, z: Tensor, out: object) -> None:
        """The decoder contract, checked once: (M, K) -> (M, P * C, H, W) or flat (M, P * C * H * W)."""
        m, (c, h, w), p = z.shape[0], self.config.input_shape, self.n_params
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        if got not in ((m, p * c, h, w), (m, p * c * h * w)):
            raise VaelabError(
                f"decoder contract: z {tuple(z.shape)} must map to the {self.config.likelihood} likelihood's "
                f"parameters, (N, P * C, H, W) = ({m}, {p * c}, {h}, {w}) with P = {p}, or flat "
                f"({m}, {p * c * h * w}); the decoder gave {got}"
            )
        self._unchecked.discard("decoder")

    @torch.no_grad()
    def init_decoder_at_marginal(self, split: Split, weight_scale: float = 0.1, chunk: int = 4096) -> None:
        """Start p(x|z) at the data's marginal, whatever z: the decoder's output bias becomes the
        split's mean and (for logistic/Gaussian) its std, per channel for conv and per pixel for mlp,
        and its output weights shrink tenfold (``weight_scale``). A discretized logistic of std s has
        scale s*sqrt(3)/pi.
        Without it a fresh logistic decoder starts at loc ~ 0 and scale ~ 1 (raw output 0 through
        `soft_floor_log`), ~9.6 bits/dim on natural RGB images, far from their ~8.2 marginal.
        For a fresh model with the built-in networks only (your own decoder starts as you built it),
        and a likelihood with ``marginal_output``; never after loading weights (--resume, --init-from)."""
        c = self.config
        marginal_output = getattr(self.likelihood, "marginal_output", None)
        if c.arch == "custom" or marginal_output is None:
            return
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
        bias = marginal_output(mean, std, c)  # (P * C,) or (P * D,)
        last = cast(nn.Sequential, self.decoder)[-1]  # ConvTranspose2d or Linear, outputs (P, C) major
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


def load(
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> VAE:
    """`VAE.from_pretrained` for a run directory: the model on ``device``, in eval mode
    (``encoder=``, ``decoder=`` for a model with its own networks)."""
    return VAE.from_pretrained(run_dir, device=device, encoder=encoder, decoder=decoder)


def _own_networks(config: VAEConfig, encoder: nn.Module | None, decoder: nn.Module | None) -> VAEConfig:
    """``config`` for ``VAE(config, encoder=, decoder=)``: "custom" with their class paths when both
    are given; a one-line error when one is missing or a custom config comes without them."""
    if encoder is None and decoder is None:
        if config.arch == "custom":
            names = ", ".join(f"{k} {v}" for k, v in config.networks.items())
            raise VaelabError(
                f"this model was built with its own networks ({names}): build them and pass them, "
                "as VAE.from_pretrained(path, encoder=..., decoder=...)"
            )
        return config
    if encoder is None or decoder is None:
        raise VaelabError("your own networks come in pairs: pass both encoder= and decoder=")
    if config.top_latent_dim:
        raise VaelabError("your own networks build one-level models: config.top_latent_dim must be 0")
    networks = {"encoder": class_path(type(encoder)), "decoder": class_path(type(decoder))}
    return replace(config, arch="custom", networks=networks, hidden=(), channels=(), gated=False)


def _composed_config(
    encoder: nn.Module,
    decoder: nn.Module,
    prior: nn.Module | None,
    likelihood: type | str,
    input_shape: tuple[int, int, int],
    latent_dim: int | None,
    n_classes: int,
) -> VAEConfig:
    """The `VAEConfig` that ``VAE(encoder, decoder, prior=, likelihood=, input_shape=)`` saves: the
    parts' registered names, so that `VAE.from_pretrained` can rebuild the model around the networks."""
    k = getattr(prior, "latent_dim", None) if prior is not None else latent_dim
    if not k:
        raise VaelabError("VAE(encoder, decoder, ...) needs a prior with latent_dim, or latent_dim=")
    if prior is not None and latent_dim is not None and latent_dim != k:
        raise VaelabError(f"latent_dim={latent_dim} does not match the prior's latent_dim={k}")
    prior_name = PRIORS.name_of(type(prior)) if prior is not None else "normal"
    if prior_name in ("vamp", "mixture"):  # their sizes live in config fields
        raise VaelabError(
            f"the {prior_name} prior is built from a config: "
            f"VAE(VAEConfig(prior={prior_name!r}, ...), encoder=..., decoder=...)"
        )
    lik = likelihood if isinstance(likelihood, str) else LIKELIHOODS.name_of(likelihood)
    config = VAEConfig(input_shape, int(k), (), lik, prior=prior_name, n_classes=n_classes)
    if prior is not None:
        _check_rebuilt(prior, config)
    return _own_networks(config, encoder, decoder)


def _check_rebuilt(prior: nn.Module, config: VAEConfig) -> None:
    """Loading rebuilds a prior from its registered name (``from_config``): refuse, in one line, a
    prior whose settings (attributes other than weights) that would not restore."""
    with torch.random.fork_rng(devices=[]):  # building it must not move the caller's RNG
        rebuilt = cast(Any, type(prior)).from_config(config, config.latent_dim, None)
    simple = (bool, int, float, str, tuple)
    mine = {k: v for k, v in vars(prior).items() if not k.startswith("_") and isinstance(v, simple)}
    theirs = {k: v for k, v in vars(rebuilt).items() if not k.startswith("_") and isinstance(v, simple)}
    diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if diff:
        k = diff[0]
        raise VaelabError(
            f"prior {type(prior).__name__} has {k}={mine.get(k)!r}, but loading rebuilds it from "
            f"config.prior {config.prior!r} with {k}={theirs.get(k)!r}: register each setting as a name"
        )
