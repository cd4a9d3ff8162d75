"""Typed configuration: what the model is (`VAEConfig`) and how it was trained (`TrainConfig`).

Both are saved in ``config.json`` beside ``model.safetensors``; loading validates every key,
so a tampered or foreign file fails with a clear message instead of building a wrong model.

Each field a user sets from the command line carries a `Flag` in its metadata (help text, choices,
how the text parses, whether ``vaelab train --resume`` may change it): ``cli/_flags.py`` builds the
``vaelab train`` flags and the configs back from it, so the flags repeat nothing written here.
Rules between fields (a holdout for early stopping, the VampPrior's default size) live here too, and a
broken one raises `ConfigError`, which names the fields so that the CLI can spell them as flags.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, cast

from vaelab.errors import ConfigError
from vaelab.schema import opt

FORMAT_NAME = "vaelab-run"
FORMAT_VERSION = 1
RUN_TOML = "run.toml"  # a run's settings as `vaelab train --config` reads them (written by the CLI)
LIKELIHOODS = ("bernoulli", "gaussian", "logistic")  # built in (models/parts.py registers more)
ARCHS = ("mlp", "conv")  # the built-in networks; "custom" marks a model with the user's own
OBJECTIVES = ("elbo", "iwae")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast of the matrix products; densities stay fp32
COMPILE_MODES = ("auto", "off", "cuda-graph", "inductor")  # see engine.py
DEVICES = ("auto", "cpu", "cuda", "mps")
PRIORS = ("normal", "vamp", "mixture")  # built in (vamp: Tomczak & Welling 2018); see models/parts.py
MIXTURE_COMPONENTS = 100  # the default M of a mixture prior (--prior mixture, vaelab fit-prior)
VAMP_PSEUDO_INPUTS = 500  # the default K of a VampPrior: the paper's K for MNIST
EARLY_STOP_HOLDOUT = 0.1  # the holdout that early_stop or lr_drop imply when holdout is not set


@dataclass
class VAEConfig:
    """The architecture. ``input_shape`` is (C, H, W); flat data uses (1, 1, D).

    ``prior`` and ``likelihood`` name registered parts (`vaelab.models.parts`): the built-in ones, or
    any a user registered. ``pseudo_inputs`` and ``mixture_components`` left at None take their
    prior's default (`VAMP_PSEUDO_INPUTS` for vamp, `MIXTURE_COMPONENTS` for mixture, else 0).

    ``arch`` "custom" is a model built around the user's own encoder and decoder; ``networks`` then
    records their class paths (``{"encoder": "pkg.Encoder", "decoder": "pkg.Decoder"}``), for
    information only: loading such a model needs the networks passed in, nothing is imported."""

    input_shape: tuple[int, int, int] = (1, 8, 8)
    latent_dim: int = opt(20, "dimensions of z", parse="positive")
    hidden: tuple[int, ...] = opt((400,), "hidden layer widths, e.g. 400,400 ('' for none)", parse="ints")
    likelihood: str = opt("bernoulli", "p(x|z) of each pixel or feature", choices=LIKELIHOODS)
    arch: str = opt("mlp", "conv: H, W divisible by 2^stages", choices=ARCHS)
    min_sigma: float = 1e-2  # Gaussian decoder: floor on sigma so log p(x|z) stays bounded
    channels: tuple[int, ...] = opt((32, 64), "conv: widths of the stride-2 stages", parse="ints")
    gated: bool = opt(False, "gated hidden layers, h = a * sigmoid(g) (Dauphin et al. 2017)")
    n_classes: int = opt(  # > 0: a conditional VAE on labels 0..n_classes-1
        0, "a CVAE on the data's labels (n_classes from the data)", parse="switch", name="--conditional"
    )
    prior: str = opt(
        "normal", "p(z): N(0, I), the VampPrior, or a Gaussian mixture learned with the model", choices=PRIORS
    )
    pseudo_inputs: int | None = opt(
        None,
        "prior vamp: learned pseudo-inputs",
        parse="positive",
        metavar="K",
        default_help=f"{VAMP_PSEUDO_INPUTS} with --prior vamp",
    )
    mixture_components: int | None = opt(
        None,
        "prior mixture: Gaussian components",
        parse="positive",
        metavar="M",
        default_help=f"{MIXTURE_COMPONENTS} with --prior mixture",
    )
    top_latent_dim: int = opt(
        0,
        "a two-level hierarchical VAE: z = [z1, z2], z2 the last K2 of --latent-dim (0: one level)",
        parse="nonneg",
        metavar="K2",
    )
    networks: dict[str, str] = field(default_factory=dict)  # arch custom: class paths, information only

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(v) for v in self.input_shape)  # type: ignore[assignment]
        self.hidden = tuple(int(v) for v in self.hidden)
        self.channels = tuple(int(v) for v in self.channels)
        if self.pseudo_inputs is None:
            self.pseudo_inputs = VAMP_PSEUDO_INPUTS if self.prior == "vamp" else 0
        if self.mixture_components is None:
            self.mixture_components = MIXTURE_COMPONENTS if self.prior == "mixture" else 0
        self.validate()

    @property
    def input_dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            _fail(self, "{f.input_shape} must be three positive ints (C, H, W), got {v}", v=self.input_shape)
        _positive(self, "latent_dim")
        for h in self.hidden:
            _positive(self, "hidden", h)
        _name(self, "likelihood")  # a registered name: `VAE.from_config` looks it up
        _choice(self, "arch", (*ARCHS, "custom"))
        _check_networks(self)
        if not 0.0 < self.min_sigma < 1e3:
            _fail(self, "{f.min_sigma} must be positive, got {v}", v=self.min_sigma)
        _nonneg(self, "n_classes")
        if self.arch == "conv":
            _check_conv_shape(self)
        _check_prior(self)
        _check_hierarchy(self)


def _check_hierarchy(c: VAEConfig) -> None:
    _nonneg(c, "top_latent_dim")
    k2 = c.top_latent_dim
    if not k2:
        return
    if k2 >= c.latent_dim:
        _fail(
            c,
            "{f.top_latent_dim}={k2} must be below {f.latent_dim}={d}: the latent is [z1, z2] with z2 "
            "the last {f.top_latent_dim} dims",
            k2=k2,
            d=c.latent_dim,
        )
    if not c.hidden:
        _fail(c, "the hierarchical VAE ({f.top_latent_dim}) needs hidden layers ({f.hidden})")


def _check_networks(c: VAEConfig) -> None:
    nets = c.networks
    if not isinstance(nets, dict) or not all(isinstance(v, str) for v in (*nets, *nets.values())):
        _fail(c, "{f.networks} must map network names to class paths, got {v!r}", v=nets)
    if (c.arch == "custom") != bool(nets):
        _fail(c, "{f.networks} (the user's own networks) go with {f.arch} custom, and only with it")
    if c.arch == "custom" and c.top_latent_dim:
        _fail(c, "{f.arch} custom (your own networks) builds one-level models: set {f.top_latent_dim} 0")


def _check_prior(c: VAEConfig) -> None:
    _name(c, "prior")
    if c.prior != "vamp" and c.pseudo_inputs != 0:
        _fail(
            c,
            "{f.pseudo_inputs} needs {f.prior} vamp (got {v} with the {p} prior)",
            v=c.pseudo_inputs,
            p=c.prior,
        )
    if c.prior != "mixture" and c.mixture_components != 0:
        _fail(
            c,
            "{f.mixture_components} needs {f.prior} mixture (got {v} with the {p} prior)",
            v=c.mixture_components,
            p=c.prior,
        )
    if c.prior == "mixture":
        _positive(c, "mixture_components")
    if c.prior != "vamp":
        return
    _positive(c, "pseudo_inputs")
    if c.n_classes:  # q(z|u_k) would need a label for each pseudo-input: p(z|y) is not defined here
        _fail(
            c,
            "{f.prior} vamp is for unconditional models; a conditional VAE needs {f.prior} normal or mixture",
        )


def _check_conv_shape(c: VAEConfig) -> None:
    if not c.channels:
        _fail(c, "{f.arch} conv needs at least one conv stage ({f.channels}, e.g. 32,64)")
    for width in c.channels:
        _positive(c, "channels", width)
    _, h, w = c.input_shape
    f = 2 ** len(c.channels)
    if h % f or w % f:
        _fail(
            c,
            "{f.arch} conv with {n} stride-2 stages needs height and width divisible by {k}; got {h}x{w} "
            "(resize the images, or use {f.arch} mlp)",
            n=len(c.channels),
            k=f,
            h=h,
            w=w,
        )


@dataclass
class TrainConfig:
    """How to train. ``data`` is the SOURCE string; ``data_options`` are the loader's options.

    ``holdout`` left at None is `EARLY_STOP_HOLDOUT` when ``early_stop`` or ``lr_drop`` is set, else 0."""

    data: str = "digits"
    epochs: int = opt(10, "total epochs (with --resume: the new total)", parse="positive", resume="allowed")
    batch_size: int = opt(128, "examples per step", parse="positive")
    lr: float = opt(1e-3, "Adam's learning rate", parse="positive")
    seed: int = opt(0, "seed of the initial weights, the data order and the sampling noise", parse="nonneg")
    device: str = opt(
        "auto", "where to train (with --resume: the run's own by default)", choices=DEVICES, resume="allowed"
    )
    checkpoint_every: int = opt(
        1,
        "epochs between checkpoints (one is also written at the end)",
        parse="positive",
        metavar="N",
        resume="allowed",
    )
    nan_retries: int = opt(
        3,
        "retries of an epoch that went NaN/inf, each with a lower lr",
        parse="nonneg",
        metavar="K",
        resume="allowed",
    )
    nan_lr_factor: float = opt(
        0.5, "lr multiplier at each NaN/inf retry", parse="fraction", metavar="F", resume="allowed"
    )
    data_options: dict[str, Any] = field(default_factory=dict)
    beta: float = opt(
        1.0, "KL weight in the loss (beta-VAE); the ELBO is reported with weight 1", parse="positive"
    )
    kl_warmup: int = opt(
        0,
        "epochs of linear KL warm-up (weight epoch/EPOCHS * beta), 0 = none",
        parse="nonneg",
        metavar="EPOCHS",
    )
    free_bits: float = opt(
        0.0, "floor on each latent dim's batch-mean KL in the loss, nats", parse="nonneg", metavar="F"
    )
    objective: str = opt("elbo", "the bound the loss maximizes", choices=OBJECTIVES)
    k: int = opt(1, "importance samples per example for --objective iwae", parse="positive")
    precision: str = opt(
        "fp32",
        "bf16: autocast the matrix products (the loss stays fp32); fastest on CPUs with AMX and on GPUs",
        choices=PRECISIONS,
    )
    compile: str = opt(
        "auto",
        "how the step runs: auto = a CUDA graph on CUDA, the hand-derived MLP step on CPU where it "
        "applies (else autograd); off = autograd; inductor = torch.compile",
        choices=COMPILE_MODES,
        resume="allowed",
    )
    threads: int = opt(0, "CPU intra-op threads, 0 = auto", parse="nonneg", resume="allowed")
    init_from: str = ""  # the run whose weights this run started from (vaelab train --init-from)
    holdout: float | None = opt(
        None,
        "hold out F of the training split, never trained on, and keep the epoch that scores best on it",
        parse="fraction",
        metavar="F",
        default_help=f"none; {EARLY_STOP_HOLDOUT:g} with --early-stop or --lr-drop",
    )
    early_stop: int = opt(
        0,
        "stop after N epochs without a better holdout score (after any KL warm-up); 0 = never",
        parse="nonneg",
        metavar="N",
        resume="allowed",
    )
    lr_drop: int = opt(
        0,
        "multiply the lr by --lr-drop-factor after N epochs without a better holdout score (counted "
        "again from each drop); 0 = never",
        parse="nonneg",
        metavar="N",
    )
    lr_drop_factor: float = opt(0.3, "the lr multiplier of --lr-drop", parse="fraction", metavar="F")

    def __post_init__(self) -> None:
        if self.holdout is None:
            self.holdout = EARLY_STOP_HOLDOUT if self.early_stop or self.lr_drop else 0.0
        self.validate()

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every", "k"):
            _positive(self, name)
        for name in ("nan_retries", "kl_warmup", "threads", "early_stop", "lr_drop"):
            _nonneg(self, name)  # nan_retries 0: stop at the first non-finite epoch
        if not (self.lr > 0 and self.lr < 10):
            _fail(self, "{f.lr} must be in (0, 10), got {v}", v=self.lr)
        _choice(self, "device", DEVICES)
        for name in ("nan_lr_factor", "lr_drop_factor"):
            if not 0.0 < getattr(self, name) < 1.0:
                _fail(self, _ref(name) + " must be in (0, 1), got {v}", v=getattr(self, name))
        if not (0 < self.beta < 1e6):
            _fail(self, "{f.beta} must be a positive number, got {v}", v=self.beta)
        if not (0 <= self.free_bits < 1e6):
            _fail(self, "{f.free_bits} must be >= 0 nats, got {v}", v=self.free_bits)
        _choice(self, "objective", OBJECTIVES)
        if self.objective == "elbo" and self.k != 1:
            _fail(self, "{f.k}={k} importance samples need {f.objective} iwae", k=self.k)
        if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup or self.free_bits):
            # The IWAE bound has no separate KL term to weight or floor.
            _fail(self, "{f.beta}, {f.kl_warmup} and {f.free_bits} apply to {f.objective} elbo, not iwae")
        _choice(self, "precision", PRECISIONS)
        _choice(self, "compile", COMPILE_MODES)
        holdout = cast(float, self.holdout)  # __post_init__ resolved None to a fraction
        if not 0.0 <= holdout < 1.0:
            _fail(self, "{f.holdout} must be a fraction in [0, 1), got {v}", v=holdout)
        for name in ("early_stop", "lr_drop"):
            if getattr(self, name) and not self.holdout:
                # Deciding on the test split would make its score look better than it is.
                _fail(self, _ref(name) + " needs {f.holdout} > 0 (a fraction of the training split to watch)")


def _ref(name: str) -> str:
    """A `ConfigError` template's reference to the field ``name`` of the config that failed."""
    return "{f." + name + "}"


def _fail(c: Any, template: str, **values: Any) -> typing.NoReturn:
    raise ConfigError(type(c), template, **values)


def _positive(c: Any, name: str, *item: int) -> None:
    value = item[0] if item else getattr(c, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "must hold positive integers" if item else "must be a positive integer"
        _fail(c, f"{_ref(name)} {what}, got {{v!r}}", v=value)


def _nonneg(c: Any, name: str) -> None:
    value = getattr(c, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(c, _ref(name) + " must be an integer >= 0, got {v!r}", v=value)


def _name(c: Any, name: str) -> None:
    value = getattr(c, name)
    if not isinstance(value, str) or not value or len(value) > 64 or value.split() != [value]:
        _fail(c, _ref(name) + " must be the name of a registered part, got {v!r}", v=value)


def _choice(c: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(c, name)
    if value not in allowed:
        _fail(c, f"{_ref(name)} must be one of {', '.join(allowed)}; got {{v!r}}", v=value)


