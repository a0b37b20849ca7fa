"""The linear centroid classifier: PCA whitening, then softmax regression on haversine-smoothed targets.

Why this and not the paper's MLP, for real photos: on 1,707 Street View photos
of 34 US-West cells (``docs/method.md``), ImageNet features tell cells apart
only weakly (about 12% top-1 on unseen locations, chance 3%). With so little
signal an MLP mostly memorises, while a whitened linear model with an L2
penalty is as accurate, better calibrated, deterministic, and fits in well
under a second by full-batch L-BFGS, so training is never the bottleneck.

Haversine-smoothed targets (as in PIGEON, CVPR 2024): a photo's target puts
weight ``exp(-(d_k - d_min) / tau)`` on every centroid k, where ``d_k`` is its
distance in km to centroid k. Neighbouring cells then share evidence, and the
probabilities the interpolation head composes are geographically smooth. With
``tau`` well below the spacing of the centroids the targets are one-hot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from worldnet.geo.sphere import haversine_km


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, restoring the caller's setting.

    Training steps here are small; with several threads each step waits on a
    barrier, which a machine busy with other work turns into long stalls.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: Below this many training rows, training runs on one thread (see :func:`training_threads`).
SINGLE_THREAD_ROWS = 50_000
_CORES = torch.get_num_threads()


def training_threads(n_rows: int) -> int:
    """Threads to train on: one for small data, every core for large.

    Small data means small steps. On a machine busy with other work, two
    threads per small step stall on their barriers: one thread kept the
    busy/idle ratio at 1.5–1.8 in ``bench_train.py``. Large data (batches of
    hundreds of rows and more) has steps big enough to use every core.
    """
    return 1 if n_rows < SINGLE_THREAD_ROWS else max(1, _CORES)


def smoothed_targets(latlon: np.ndarray, centroids_latlon: np.ndarray, labels: np.ndarray, tau_km: float) -> np.ndarray:
    """(N, K) target distributions: one-hot on ``labels`` when ``tau_km`` is 0, else haversine-smoothed."""
    n, k = len(latlon), len(centroids_latlon)
    if tau_km <= 0:
        out = np.zeros((n, k), np.float32)
        out[np.arange(n), labels] = 1.0
        return out
    out = np.empty((n, k), np.float32)
    for start in range(0, n, 8192):  # bounded memory at 200k+ rows
        sl = slice(start, start + 8192)
        d = haversine_km(latlon[sl, 0, None], latlon[sl, 1, None], centroids_latlon[None, :, 0], centroids_latlon[None, :, 1])
        w = np.exp(-(d - d.min(1, keepdims=True)) / tau_km)
        out[sl] = w / w.sum(1, keepdims=True)
    return out


def whitening(X: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    """(D, p) projection onto the top ``p <= dim`` principal components, scaled to unit variance.

    ``X`` must be centred (standardised features are). At most one component
    per 8 rows is kept: whitening gives every kept direction unit variance, so
    directions estimated from too few rows (pure noise) would be as loud as
    the signal and no L2 penalty could tell them apart.
    """
    p = max(1, min(dim, X.shape[1], X.shape[0] // 8))
    cov = (X.T @ X).double() / max(1, X.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    top = torch.argsort(evals, descending=True)[:p]
    return (evecs[:, top] / torch.sqrt(evals[top].clamp_min(1e-6))).float(), p


def fit_softmax(Z: torch.Tensor, targets: torch.Tensor, l2: float, max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression by full-batch L-BFGS: soft cross-entropy + ``l2``·‖W‖². Returns (W (p, K), b (K))."""
    W = torch.zeros(Z.shape[1], targets.shape[1], requires_grad=True)
    b = torch.zeros(targets.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -(targets * torch.log_softmax(Z @ W + b, dim=1)).sum(1).mean() + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()
