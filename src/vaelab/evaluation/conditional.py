"""Class-conditional generation: from a CVAE's decoder p(x|z, y), or, for an unconditional model
trained on labelled data, from a per-class Gaussian mixture fitted to the latent means (scikit-learn).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.evaluation.features import encode_split
from vaelab.models.vae import VAE

MAX_COMPONENTS = 8  # the mixture's size is picked by BIC from 1..MAX_COMPONENTS


def fit_class_mixture(mu: np.ndarray, max_components: int = MAX_COMPONENTS, seed: int = 0):
    """A full-covariance `sklearn.mixture.GaussianMixture` on latent means mu (N, K), its number of
    components chosen by BIC from 1..max_components (at most N // 2, so each has data)."""
    from sklearn.mixture import GaussianMixture

    if len(mu) < 2:
        raise VaelabError(f"need at least 2 training examples of the class to fit a mixture, got {len(mu)}")
    best, best_bic = None, np.inf
    for m in range(1, max(1, min(max_components, len(mu) // 2)) + 1):
        # reg_covar keeps covariances invertible when a class's means lie near a subspace
        gmm = GaussianMixture(m, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(mu)
        bic = gmm.bic(mu)
        if bic < best_bic:
            best, best_bic = gmm, bic
    return best


def sample_mixture(gmm, n: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
    """n draws (n, K) from a full-covariance mixture, each component's spread scaled by temperature."""
    comp = rng.choice(len(gmm.weights_), size=n, p=gmm.weights_ / gmm.weights_.sum())
    chol = np.linalg.cholesky(gmm.covariances_)  # (M, K, K)
    eps = rng.standard_normal((n, gmm.means_.shape[1]))
    return gmm.means_[comp] + temperature * np.einsum("nij,nj->ni", chol[comp], eps)


@torch.no_grad()
def sample_class(
    model: VAE,
    label: int,
    n: int,
    seed: int = 0,
    mean: bool = True,
    temperature: float = 1.0,
    train: Split | None = None,
    max_components: int = MAX_COMPONENTS,
) -> tuple[Tensor, str]:
    """n images (n, C, H, W) of class ``label`` and a sentence saying how they were made.

    A CVAE decodes z ~ N(0, temperature^2 I) with y = label. An unconditional model needs ``train``
    (its training split, with labels): z is drawn from a mixture fitted to that class's latent means.
    """
    gen = torch.Generator(device=model.device).manual_seed(seed)
    n_classes = model.config.n_classes
    if n_classes:
        if not 0 <= label < n_classes:
            raise VaelabError(
                "{a.label} must be in 0..{top} for this conditional model, got {v}",
                top=n_classes - 1, v=label,
            )
        y = torch.full((n,), label, dtype=torch.long, device=model.device)
        x = model.sample(n, gen, mean=mean, temperature=temperature, y=y)
        return x, f"conditional VAE: decoder p(x | z, y={label}) with z ~ {_prior_name(model)}"
    if train is None or train.y is None:
        raise VaelabError(
            "{a.label} needs a conditional run (train with {m.n_classes}) or training data with labels",
            m=type(model.config),
        )
    mu, _ = encode_split(model, train)
    labels = train.y.cpu().numpy()
    if label not in set(labels.tolist()):
        raise VaelabError("{a.label:={v}} does not occur in the training labels", v=label)
    gmm = fit_class_mixture(mu[labels == label], max_components, seed)
    z = sample_mixture(gmm, n, np.random.default_rng(seed), temperature)
    px = model.decode(torch.as_tensor(z, dtype=torch.float32, device=model.device))
    x = px.mean if mean else px.sample(gen)
    method = (
        f"unconditional VAE + latent mixture: a {gmm.n_components}-component Gaussian mixture "
        f"(scikit-learn, full covariance, size by BIC) fitted to the latent means of the "
        f"{int((labels == label).sum())} training examples of class {label}"
    )
    return x, method


def _prior_name(model: VAE) -> str:
    """The prior z is drawn from, in words: N(0, I), the mixture prior, and its hierarchy."""
    top = "N(0, I)" if model.config.prior == "normal" else f"the {model.config.prior} prior"
    return f"p(z1 | z2) p(z2), z2 ~ {top}" if model.config.top_latent_dim else top
