"""A prior fitted after training: a Gaussian mixture on the model's aggregate posterior.

For a fixed encoder and decoder, the prior that maximises the training ELBO is the aggregate posterior
q(z) = E_x[q(z|x)], and the standard normal is only an approximation of it (the "prior hole" of
samples from regions no training image maps to). `fit_mixture_prior` draws z ~ q(z|x) for every
training example (the top level z2 of a hierarchy), fits a diagonal Gaussian mixture to the draws by
EM (scikit-learn), and returns a copy of the model with that mixture as its prior: the encoder and
decoder are untouched, and the ELBO, the importance-sampled likelihood and the samples all use the
new p(z). On Fashion-MNIST it gains 0.5 nats for a one-level MLP and nothing for the two-level
hierarchy, whose p(z1|z2) already absorbs the mismatch (docs/benchmarks/likelihood.md).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings

import torch
from torch import Tensor

from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.hierarchy import HierarchicalPosterior, HierarchicalPrior
from vaelab.models.priors import MixturePrior
from vaelab.models.vae import VAE, eval_mode

REG_COVAR = 1e-5  # added to each fitted variance: no component collapses onto a few draws


@torch.no_grad()
def aggregate_draws(model: VAE, split: Split, draws: int = 1, seed: int = 0, batch: int = 1000) -> Tensor:
    """``draws`` reparameterized draws z ~ q(z|x) per example (of z2 for a hierarchy) -> (N * draws, D)
    float64 on the CPU, from a generator seeded with ``seed``. Labels go to a CVAE's encoder."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    out = []
    with eval_mode(model):
        for start in range(0, len(split), batch):
            sl = slice(start, start + batch)
            y = split.y[sl].to(model.device) if model.config.n_classes and split.y is not None else None
            q = model.encode(split.batch(sl).to(model.device), y)
            # q(z2|x): the prior being replaced is p(z2)
            q = q.top if isinstance(q, HierarchicalPosterior) else q
            eps = torch.randn((draws, *q.mean.shape), generator=gen, device=model.device, dtype=q.mean.dtype)
            out.append((q.mean + q.std * eps).flatten(0, 1).double().cpu())  # (draws * B, D)
    return torch.cat(out)


def fit_mixture_prior(
    model: VAE, split: Split, components: int = 100, draws: int = 1, seed: int = 0
) -> tuple[VAE, dict]:
    """A copy of ``model`` whose prior (p(z2) for a hierarchy) is a diagonal Gaussian mixture of
    ``components`` fitted to `aggregate_draws` of ``split`` (the training examples) -> (model, stats).

    ``stats``: components, draws, n (draws fitted), the mean log-density of the draws under the old
    prior and under the mixture (nats per draw; higher fits better), converged, seconds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise VaelabError(f"components must be a positive integer, got {components!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise VaelabError(f"draws must be a positive integer, got {draws!r}")
    t0 = time.perf_counter()
    z = aggregate_draws(model, split, draws, seed)  # (N, D)
    if len(z) < components:
        raise VaelabError(f"{len(z)} draws cannot fit {components} mixture components: use fewer components")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # recorded in the stats instead
        gmm = GaussianMixture(
            components, covariance_type="diag", reg_covar=REG_COVAR, max_iter=200, random_state=seed
        )
        try:
            gmm.fit(z.numpy())
            converged = True
        except ConvergenceWarning:  # fit again, quietly, and keep what 200 EM steps reached
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(z.numpy())
            converged = False
    new = _with_mixture(model, gmm)
    return new, {
        "components": components,
        "draws": draws,
        "n": len(z),
        "log_density_old_prior": _mean_log_density(_top(model), z, model.device),
        "log_density_mixture": _mean_log_density(_top(new), z, model.device),
        "converged": converged,
        "seconds": time.perf_counter() - t0,
    }


def _with_mixture(model: VAE, gmm) -> VAE:
    """A new VAE with ``model``'s weights and the fitted mixture as its (top) prior."""
    config = dataclasses.replace(
        model.config, prior="mixture", pseudo_inputs=0, mixture_components=len(gmm.weights_)
    )
    with torch.random.fork_rng(devices=[]):  # building the networks must not move the caller's RNG
        if config.arch == "custom":  # the user's own networks cannot be built from the config: copied
            new = VAE(config, encoder=copy.deepcopy(model.encoder), decoder=copy.deepcopy(model.decoder))
        else:
            new = VAE(config)
        new = new.to(model.device)
    old_prior = {k for k in model.state_dict() if k.startswith("prior.") and not k.startswith("prior.net.")}
    state = {k: v for k, v in model.state_dict().items() if k not in old_prior}  # a VampPrior's u_k go
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("prior.") for k in missing), (missing, unexpected)
    top = _top(new)
    assert isinstance(top, MixturePrior)
    with torch.no_grad():
        for param, value in (
            (top.logits, gmm.weights_),
            (top.mean, gmm.means_),
            (top.logvar, gmm.covariances_),
        ):
            param.copy_(torch.as_tensor(value, dtype=param.dtype, device=param.device))
        top.logits.log_()  # weights -> logits
        top.logvar.log_()  # variances -> log-variances
    new.train(model.training)
    return new


def _top(model: VAE):
    """The prior over the top latent: p(z2) of a hierarchy, else p(z)."""
    return model.prior.top if isinstance(model.prior, HierarchicalPrior) else model.prior


@torch.no_grad()
def _mean_log_density(prior, z: Tensor, device: torch.device, batch: int = 8192) -> float:
    """The mean of log p(z) over draws z (N, D), in nats."""
    total = sum(
        float(prior.log_prob(part.to(device, torch.float32)).double().sum()) for part in z.split(batch)
    )
    return total / max(len(z), 1)
