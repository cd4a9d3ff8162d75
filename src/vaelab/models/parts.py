"""The parts a `VAE` is composed of, what each must provide, and the registries that turn the names
in a `VAEConfig` into classes.

A VAE is ``VAE(encoder, decoder, prior=..., likelihood=...)``:

- the **encoder** maps x (N, C, H, W) (and the one-hot label (N, n_classes) of a conditional model, as a
  second argument) to (N, 2 * latent_dim): the mean and log-variance of q(z|x), no activation;
- the **decoder** maps z (N, latent_dim) (and the one-hot label) to the likelihood's parameters,
  (N, P * C, H, W) or flat (N, P * C * H * W), P = ``likelihood.n_params``;
- the **prior** p(z) is a `Prior`;
- the **likelihood** p(x|z) is a `Likelihood` class, built from the decoder's output.

``VAE.from_config`` looks the prior and likelihood up by name here. Adding one is one class and one
decorator: ``@register_prior("name")`` or ``@register_likelihood("name")`` (see the docs' worked example).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from vaelab.errors import ConfigError, VaelabError

if TYPE_CHECKING:
    from vaelab.config import VAEConfig

Encode = Callable[[Tensor], Any]  # x (K, C, H, W) -> q(z|x), a DiagonalGaussian: what a VampPrior mixes


class Encoder(Protocol):
    """The encoder, an ``nn.Module``: x (N, C, H, W), and for a conditional model the one-hot label
    (N, n_classes) as a second argument -> (N, 2 * latent_dim), the mean and log-variance of q(z|x)
    side by side, with no activation."""

    def __call__(self, x: Tensor, *label: Tensor) -> Tensor: ...


class Decoder(Protocol):
    """The decoder, an ``nn.Module``: z (N, latent_dim), and for a conditional model the one-hot
    label (N, n_classes) -> the likelihood's parameters, (N, P * C, H, W) or (N, P * C * H * W)
    with P = ``Likelihood.n_params``."""

    def __call__(self, z: Tensor, *label: Tensor) -> Tensor: ...


@runtime_checkable
class Prior(Protocol):
    """p(z) over ``latent_dim`` dims, an ``nn.Module`` (its parameters, if any, train with the model).

    ``per_dim_kl``, a class attribute (the config-level rules read it before a model exists), says
    whether KL(q(z|x) || p(z)) has a closed form that is a sum over the latent dims; such a prior also
    has ``kl_per_dim(q) -> (N, D)``, which free bits and per-dim KL reports need."""

    per_dim_kl: ClassVar[bool]

    @property
    def latent_dim(self) -> int: ...

    def log_prob(self, z: Tensor) -> Tensor:
        """z (..., D) -> log p(z) (...,)."""
        ...

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ) -> Tensor:
        """n draws -> (n, D); ``temperature`` scales the noise (0: the mode or component means)."""
        ...

    def kl(self, q: Any, z: Tensor) -> Tensor:
        """The ELBO's KL term for posterior q (N, D) and its reparameterized draws z (N, D) or
        (S, N, D) -> (N,): in closed form where there is one, else a Monte Carlo estimate."""
        ...

    def kl_per_dim(self, q: Any) -> Tensor:
        """Where ``per_dim_kl``: each latent dim's closed-form KL, (N, D); elsewhere a one-line error."""
        ...


@runtime_checkable
class Likelihood(Protocol):
    """p(x|z) for a batch: built by ``from_decoder`` from the decoder's output, reshaped to
    (..., n_params, C, H, W). ``log_prob(x)`` sums over pixels -> (...,); ``mean`` and ``sample`` are
    images (..., C, H, W). An optional class attribute ``support``, "unit" (x in [0, 1], the default)
    or "real", tells the parts that live in the data's domain (a VampPrior's pseudo-inputs) where x is."""

    n_params: ClassVar[int]

    @classmethod
    def from_decoder(cls, params: Tensor, config: VAEConfig) -> Likelihood:
        """The distribution for decoder outputs ``params`` (..., n_params, C, H, W)."""
        ...

    def log_prob(self, x: Tensor) -> Tensor: ...

    @property
    def mean(self) -> Tensor: ...

    def sample(self, generator: torch.Generator | None = None) -> Tensor: ...


class MonteCarloKL:
    """A base for priors whose KL has no per-dim closed form (mixtures, hierarchies): ``per_dim_kl``
    is False, and ``kl_per_dim`` says so in one line if anything asks for it."""

    per_dim_kl: ClassVar[bool] = False

    def kl_per_dim(self, q: Any) -> Tensor:
        """Not defined here: the KL does not split over latent dims."""
        raise VaelabError(f"the KL of {type(self).__name__} does not split over latent dims")


T = TypeVar("T", bound=type)


class Registry:
    """Names (as written in a `VAEConfig` field) -> classes, both ways."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A class decorator: ``@PRIORS.register("laplace")``. A name is registered once."""

        def add(cls: T) -> T:
            known = self._classes.get(name)
            if known is not None and class_path(known) != class_path(cls):  # same path: a re-run cell
                raise ValueError(f"{self.field} {name!r} is already registered to {class_path(known)}")
            self._classes[name] = cls
            return cls

        return add

    def get(self, name: str) -> type:
        """The class registered as ``name``, or a `ConfigError` naming the field and the choices."""
        from vaelab.config import VAEConfig

        if name not in self._classes:
            raise ConfigError(
                VAEConfig, "{f." + self.field + "} {v!r} is not registered; registered: {names}",
                v=name, names=", ".join(self._classes),
            )  # fmt: skip
        return self._classes[name]

    def name_of(self, cls: type) -> str:
        """The name ``cls`` is registered under, or a `ConfigError` saying how to register it."""
        from vaelab.config import VAEConfig

        for name, known in self._classes.items():
            if known is cls:
                return name
        decorator = "register_prior" if self.field == "prior" else "register_likelihood"
        raise ConfigError(
            VAEConfig,
            "{f." + self.field + "}: " + f"{cls.__name__} is not registered; decorate it with "
            f"@vaelab.{decorator}(NAME) so that its config can name it",
        )

    def names(self) -> tuple[str, ...]:
        return tuple(self._classes)


def class_path(cls: type) -> str:
    """``module.QualifiedName`` of a class: how config.json and messages name it."""
    return f"{cls.__module__}.{cls.__qualname__}"


PRIORS = Registry("prior")
LIKELIHOODS = Registry("likelihood")


def register_prior(name: str) -> Callable[[T], T]:
    """Register a prior class under ``name`` (``VAEConfig.prior``). The class needs
    ``from_config(config, latent_dim, encode) -> prior`` (``encode``: the model's x -> q(z|x), for
    priors built from the encoder such as the VampPrior) besides the `Prior` methods."""
    return PRIORS.register(name)


def register_likelihood(name: str) -> Callable[[T], T]:
    """Register a `Likelihood` class under ``name`` (``VAEConfig.likelihood``)."""
    return LIKELIHOODS.register(name)
