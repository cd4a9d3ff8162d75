"""The model layer: the `VAE`, its networks, distributions and priors, and the objectives it is
trained on (the loss is a function, `neg_elbo`, not part of ``forward``)."""

from vaelab.models.distributions import Bernoulli, DiagonalGaussian, DiscretizedLogistic, Gaussian
from vaelab.models.objectives import ElboTerms, neg_elbo
from vaelab.models.priors import MixturePrior, StandardNormal, VampPrior
from vaelab.models.vae import VAE

__all__ = [
    "VAE",
    "Bernoulli",
    "DiagonalGaussian",
    "DiscretizedLogistic",
    "ElboTerms",
    "Gaussian",
    "MixturePrior",
    "StandardNormal",
    "VampPrior",
    "neg_elbo",
]
