"""Feature quality: how much of the label a classifier can read off the latent means.

Both probes are fitted on the training split's latent means and scored on the test split's:
a linear probe (multinomial logistic regression on standardised means) and a 5-nearest-neighbour
classifier (Euclidean distance on the raw means).
"""

from __future__ import annotations

import warnings

import numpy as np

from vaelab.data.dataset import Dataset
from vaelab.errors import VaelabError
from vaelab.evaluation.features import encode_split
from vaelab.models.vae import VAE

KNN_K = 5


def probe_accuracy(
    train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray
) -> tuple[float, bool]:
    """Logistic regression fitted on (train_z (N, D), train_y (N,)) -> (test accuracy, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _check(train_z, train_y, test_z, test_y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train_z, train_y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return float((clf.predict(test_z) == test_y).mean()), converged


def knn_accuracy(
    train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray, k: int = KNN_K
) -> float:
    """k-nearest-neighbour (Euclidean, majority vote) accuracy on the test split."""
    from sklearn.neighbors import KNeighborsClassifier

    _check(train_z, train_y, test_z, test_y)
    if len(train_z) < k:
        raise VaelabError(f"the kNN probe needs at least k={k} training examples, got {len(train_z)}")
    clf = KNeighborsClassifier(n_neighbors=k).fit(train_z, train_y)
    return float((clf.predict(test_z) == test_y).mean())


def feature_quality(model: VAE, data: Dataset) -> dict:
    """Both probes on the latent means of ``data`` -> ``probe_accuracy``, ``probe_converged``,
    ``knn_accuracy``; an empty dict for unlabelled data. Dynamically binarized training pixels are
    drawn once from the split's own seed (`Dataset.fixed_train`), so the numbers repeat exactly."""
    if data.train.y is None or data.test.y is None:
        return {}
    train_z, _ = encode_split(model, data.fixed_train())
    test_z, _ = encode_split(model, data.test)
    train_y, test_y = data.train.y.cpu().numpy(), data.test.y.cpu().numpy()
    acc, converged = probe_accuracy(train_z, train_y, test_z, test_y)
    return {
        "probe_accuracy": acc,
        "probe_converged": converged,
        "knn_accuracy": knn_accuracy(train_z, train_y, test_z, test_y),
    }


def _check(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray) -> None:
    if len(train_z) != len(train_y) or len(test_z) != len(test_y):
        raise VaelabError("features and labels differ in length")
    if len(np.unique(train_y)) < 2:
        raise VaelabError("the probes need at least two classes in the training split")
