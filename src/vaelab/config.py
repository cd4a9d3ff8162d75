"""Typed configuration: what the model is (`VAEConfig`) and how it was trained (`TrainConfig`).

Both are saved in ``config.json`` beside ``model.safetensors``; loading validates every key,
so a tampered or foreign file fails with a clear message instead of building a wrong model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vaelab.errors import VaelabError

FORMAT_NAME = "vaelab-run"
FORMAT_VERSION = 1
LIKELIHOODS = ("bernoulli", "gaussian", "logistic")  # logistic: discretized, for 8-bit pixels
ARCHS = ("mlp", "conv")
OBJECTIVES = ("elbo", "iwae")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast of the matrix products; densities stay fp32
COMPILE_MODES = ("auto", "off", "cuda-graph", "inductor")  # see engine.py
PRIORS = ("normal", "vamp", "mixture")  # vamp: the VampPrior (Tomczak & Welling 2018); see priors.py
MIXTURE_COMPONENTS = 100  # the default M of a mixture prior (--prior mixture, vaelab fit-prior)


@dataclass
class VAEConfig:
    """The architecture. ``input_shape`` is (C, H, W); flat data uses (1, 1, D)."""

    input_shape: tuple[int, int, int] = (1, 8, 8)
    latent_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    arch: str = "mlp"
    min_sigma: float = 1e-2  # Gaussian decoder: floor on sigma so log p(x|z) stays bounded
    channels: tuple[int, ...] = (32, 64)  # conv: widths of the stride-2 stages (each halves H and W)
    gated: bool = False  # hidden layers are gated, h = a * sigmoid(g) (Dauphin et al. 2017)
    n_classes: int = 0  # > 0: a conditional VAE on labels 0..n_classes-1
    prior: str = "normal"  # p(z): normal N(0, I) | vamp, a mixture of posteriors at learned pseudo-inputs
    pseudo_inputs: int = 0  # vamp: the number K of pseudo-inputs (0 for the other priors)
    mixture_components: int = 0  # mixture: the number M of Gaussian components (0 for the other priors)
    top_latent_dim: int = (
        0  # > 0: a two-level hierarchical VAE whose last K2 latent dims are z2 (hierarchy.py)
    )

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(v) for v in self.input_shape)  # type: ignore[assignment]
        self.hidden = tuple(int(v) for v in self.hidden)
        self.channels = tuple(int(v) for v in self.channels)
        self.validate()

    @property
    def per_dim_kl(self) -> bool:
        """Whether the ELBO's KL is a sum of closed-form per-dim KLs to N(0, I) (one level, normal prior)."""
        return self.prior == "normal" and not self.top_latent_dim

    @property
    def input_dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise VaelabError(f"input_shape must be three positive ints (C, H, W), got {self.input_shape}")
        _positive("latent_dim", self.latent_dim)
        for h in self.hidden:
            _positive("hidden layer width", h)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("arch", self.arch, ARCHS)
        if not 0.0 < self.min_sigma < 1e3:
            raise VaelabError(f"min_sigma must be positive, got {self.min_sigma}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes < 0:
            raise VaelabError(f"n_classes must be an integer >= 0, got {self.n_classes!r}")
        if self.arch == "conv":
            _check_conv_shape(self.input_shape, self.channels)
        _check_prior(self.prior, self.pseudo_inputs, self.mixture_components, self.n_classes)
        _check_hierarchy(self)


def _check_hierarchy(c: VAEConfig) -> None:
    k2 = c.top_latent_dim
    if isinstance(k2, bool) or not isinstance(k2, int) or k2 < 0:
        raise VaelabError(f"top_latent_dim must be an integer >= 0, got {k2!r}")
    if not k2:
        return
    if k2 >= c.latent_dim:
        raise VaelabError(
            f"top_latent_dim={k2} must be below latent_dim={c.latent_dim}: the latent is [z1, z2] with "
            f"z2 the last top_latent_dim dims"
        )
    if not c.hidden:
        raise VaelabError("the hierarchical VAE (--top-latent-dim) needs hidden layers (--hidden)")


def _check_prior(prior: str, pseudo_inputs: int, components: int, n_classes: int) -> None:
    _choice("prior", prior, PRIORS)
    if prior != "vamp" and pseudo_inputs != 0:
        raise VaelabError(f"pseudo_inputs={pseudo_inputs!r} needs prior vamp (the {prior} prior has none)")
    if prior != "mixture" and components != 0:
        raise VaelabError(f"mixture_components={components!r} needs prior mixture, not {prior}")
    if prior == "mixture":
        _positive("mixture_components (the mixture's M)", components)
    if prior != "vamp":
        return
    _positive("pseudo_inputs (the VampPrior's K)", pseudo_inputs)
    if n_classes:  # q(z|u_k) would need a label for each pseudo-input: p(z|y) is not defined here
        raise VaelabError(
            "the vamp prior is for unconditional models; a conditional VAE needs --prior normal"
        )


def _check_conv_shape(shape: tuple[int, int, int], channels: tuple[int, ...]) -> None:
    if not channels:
        raise VaelabError("arch conv needs at least one conv stage (channels, e.g. 32,64)")
    for c in channels:
        _positive("conv channel width", c)
    _, h, w = shape
    f = 2 ** len(channels)
    if h % f or w % f:
        raise VaelabError(
            f"arch conv with {len(channels)} stride-2 stages needs height and width divisible by {f}; "
            f"got {h}x{w} (resize the images, or use --arch mlp)"
        )


@dataclass
class TrainConfig:
    """How to train. ``data`` is the SOURCE string; ``data_options`` are the loader's options."""

    data: str = "digits"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1  # epochs between checkpoints (one is also written at the end)
    nan_retries: int = 3  # NaN/inf guard: retries of an epoch (each with a lower lr) before giving up
    nan_lr_factor: float = 0.5  # ... and the factor that lowers the lr at each retry
    data_options: dict[str, Any] = field(default_factory=dict)
    beta: float = 1.0  # weight of the KL term in the loss; the ELBO is always reported with weight 1
    kl_warmup: int = 0  # epochs of linear KL warm-up (weight epoch/kl_warmup * beta), 0 = none
    free_bits: float = 0.0  # nats: floor on each latent dim's batch-mean KL in the loss
    objective: str = "elbo"  # elbo | iwae
    k: int = 1  # importance samples per example for the iwae objective
    precision: str = "fp32"
    compile: str = "auto"
    threads: int = 0  # CPU intra-op threads; 0 = auto (engine.configure_threads)
    init_from: str = ""  # the run whose weights this run started from (vaelab train --init-from)
    holdout: float = 0.0  # fraction of the training split held out to choose the epoch (early_stop.py)
    early_stop: int = 0  # stop after this many epochs without a better holdout score; 0 = never
    lr_drop: int = 0  # lower the lr after this many epochs without a better holdout score; 0 = never
    lr_drop_factor: float = 0.3  # ... multiplying it by this

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        if not (self.lr > 0 and self.lr < 10):
            raise VaelabError(f"lr must be in (0, 10), got {self.lr}")
        _choice("device", self.device, ("auto", "cpu", "cuda", "mps"))
        _positive("checkpoint_every", self.checkpoint_every)
        if self.nan_retries != 0:  # 0 is allowed: stop at the first non-finite epoch
            _positive("nan_retries", self.nan_retries)
        if not 0.0 < self.nan_lr_factor < 1.0:
            raise VaelabError(f"nan_lr_factor must be in (0, 1), got {self.nan_lr_factor}")
        if not (0 < self.beta < 1e6):
            raise VaelabError(f"beta must be a positive number, got {self.beta}")
        if isinstance(self.kl_warmup, bool) or not isinstance(self.kl_warmup, int) or self.kl_warmup < 0:
            raise VaelabError(f"kl_warmup must be an integer >= 0 (epochs), got {self.kl_warmup!r}")
        if not (0 <= self.free_bits < 1e6):
            raise VaelabError(f"free_bits must be >= 0 nats, got {self.free_bits}")
        _choice("objective", self.objective, OBJECTIVES)
        _positive("k", self.k)
        if self.objective == "elbo" and self.k != 1:
            raise VaelabError(f"k={self.k} importance samples need --objective iwae")
        if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup or self.free_bits):
            # The IWAE bound has no separate KL term to weight or floor.
            raise VaelabError("beta, kl_warmup and free_bits apply to --objective elbo, not iwae")
        _choice("precision", self.precision, PRECISIONS)
        _choice("compile", self.compile, COMPILE_MODES)
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise VaelabError(f"threads must be an integer >= 0 (0 = auto), got {self.threads!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise VaelabError(f"holdout must be a fraction in [0, 1), got {self.holdout}")
        if isinstance(self.early_stop, bool) or not isinstance(self.early_stop, int) or self.early_stop < 0:
            raise VaelabError(f"early_stop must be an integer >= 0 (epochs), got {self.early_stop!r}")
        if isinstance(self.lr_drop, bool) or not isinstance(self.lr_drop, int) or self.lr_drop < 0:
            raise VaelabError(f"lr_drop must be an integer >= 0 (epochs), got {self.lr_drop!r}")
        if not 0.0 < self.lr_drop_factor < 1.0:
            raise VaelabError(f"lr_drop_factor must be in (0, 1), got {self.lr_drop_factor}")
        for name in ("early_stop", "lr_drop"):
            if getattr(self, name) and not self.holdout:
                # Deciding on the test split would make its score look better than it is.
                raise VaelabError(f"{name} needs a holdout (a fraction of the training split to watch)")


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VaelabError(f"{name} must be a positive integer, got {value!r}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise VaelabError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], raw: Any, where: str = "config.json") -> T:
    """Build ``cls`` from ``raw``, rejecting unknown keys and wrongly typed values."""
    if not isinstance(raw, dict):
        raise VaelabError(f"{where}: expected an object, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise VaelabError(f"{where}: unknown key(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except VaelabError as e:
        raise VaelabError(f"{where}: {e}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a JSON value against a simple type hint (int, float, str, bool, tuple, dict)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except VaelabError:
                continue
        raise VaelabError(f"{where}: unexpected value {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise VaelabError(f"{where}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise VaelabError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        return tuple(_coerce(v, item, where) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise VaelabError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise VaelabError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VaelabError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VaelabError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise VaelabError(f"{where}: expected a string, got {value!r}")
        return value
    return value
