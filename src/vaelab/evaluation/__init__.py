"""Evaluation in nats: the ELBO, log p(x) by importance sampling, collapse diagnostics, latent
features and the probes that score them, and priors fitted after training."""

from vaelab.evaluation.elbo import collapse_diagnostics, evaluate_elbo, evaluate_model
from vaelab.evaluation.likelihood import evaluate_nll, log_px_estimates

__all__ = ["collapse_diagnostics", "evaluate_elbo", "evaluate_model", "evaluate_nll", "log_px_estimates"]
