"""Evaluation on a split, in nats per example: the ELBO, collapse diagnostics, and `evaluate_model`,
which gathers them with the importance-sampled likelihood (`likelihood`) and the probes (`probes`)."""

from __future__ import annotations

import torch

from vaelab.data.dataset import Dataset, Split
from vaelab.device import make_generator
from vaelab.evaluation.likelihood import evaluate_nll
from vaelab.evaluation.probes import feature_quality
from vaelab.models.objectives import neg_elbo
from vaelab.models.vae import VAE, eval_mode

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015: unit u is active if Var_x(E_q[z_u]) > 0.01


@torch.no_grad()
def evaluate_elbo(model: VAE, split: Split, batch_size: int = 1000, seed: int = 0) -> dict:
    """The one-sample -ELBO on ``split`` with a seeded generator -> per-example means in nats.

    Returns ``{"neg_elbo", "recon", "kl", "n"}``; ``neg_elbo == recon + kl``.
    """
    device = model.device
    gen = make_generator(device, seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # recon, kl
    n = len(split)
    with eval_mode(model):
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            y = None if split.y is None else split.y[sl].to(device)  # a conditional model needs them
            terms = neg_elbo(model, split.batch(sl).to(device), y, generator=gen)
            sums += torch.stack([terms.recon.sum(), terms.kl.sum()]).double()
    recon, kl = (sums / max(n, 1)).tolist()
    return {"neg_elbo": recon + kl, "recon": recon, "kl": kl, "n": n}


@torch.no_grad()
def collapse_diagnostics(
    model: VAE, split: Split, batch_size: int = 1000, threshold: float = ACTIVE_THRESHOLD
) -> dict:
    """Posterior collapse at a glance, from one encoder pass over ``split`` (no sampling).

    Returns ``kl_per_dim`` (list of latent_dim floats: the mean over examples of
    KL(q(z_u|x) || p(z_u)) in nats; they sum to the ELBO's KL term), ``posterior_mean_variance``
    (list: Var_x(E_q[z_u]), unbiased), and ``active_units``, the number of units whose variance
    exceeds ``threshold``. A collapsed unit ignores x: its KL and its variance are both ~0.
    When the prior's KL does not split over dims (``prior.per_dim_kl`` false: a mixture such as the
    VampPrior, or a hierarchy), ``kl_per_dim`` is None; the active units, which depend on the encoder
    means only, still count.
    """
    device = model.device
    per_dim = model.prior.per_dim_kl
    means, kl = [], torch.zeros(model.config.latent_dim, dtype=torch.float64, device=device)
    with eval_mode(model):
        for start in range(0, len(split), batch_size):
            sl = slice(start, start + batch_size)
            y = None if split.y is None else split.y[sl].to(device)  # a conditional model needs them
            q = model.encode(split.batch(sl).to(device), y)
            means.append(q.mean.double())
            if per_dim:
                kl += model.prior.kl_per_dim(q).double().sum(0)
    n = len(split)
    mu = torch.cat(means)  # (N, D)
    var = mu.var(dim=0) if n > 1 else torch.zeros_like(kl)
    return {
        "kl_per_dim": (kl / max(n, 1)).tolist() if per_dim else None,
        "posterior_mean_variance": var.tolist(),
        "active_units": int((var > threshold).sum()),
    }


def evaluate_model(
    model: VAE,
    data: Dataset,
    importance_samples: int = 1000,
    chunk: int | None = None,
    seed: int = 0,
    probes: bool = True,
    progress: bool | None = None,
) -> dict:
    """Everything `vaelab evaluate` reports on ``data.test``, as one JSON-ready dict.

    ``neg_elbo``/``recon``/``kl`` (`evaluate_elbo`); with ``importance_samples`` K > 0 also ``nll``,
    ``nll_std_err``, ``bits_per_dim``, ``neg_elbo_k``, ``importance_samples``, ``nll_seconds``
    (`likelihood.evaluate_nll`); ``latent_dim``, ``kl_per_dim``, ``posterior_mean_variance``,
    ``active_units`` (`collapse_diagnostics`); for labelled data with ``probes``, ``probe_accuracy``,
    ``probe_converged`` and ``knn_accuracy`` (`probes.feature_quality`).
    """
    with eval_mode(model):
        result = evaluate_elbo(model, data.test, seed=seed)
        if importance_samples > 0:
            nll = evaluate_nll(model, data.test, importance_samples, chunk, seed, progress)
            nll["nll_seconds"] = nll.pop("seconds")
            nll.pop("n")
            result.update(nll)
        result["latent_dim"] = model.config.latent_dim
        result.update(collapse_diagnostics(model, data.test))
        if probes:
            result.update(feature_quality(model, data))
    return result
