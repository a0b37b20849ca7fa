"""Retrieval beside the classifier: a vote of the nearest training photos over the centroids, mixed into its distribution.

The classifier compresses the training photos into a few hundred weights per
centroid; the photos themselves hold more. Worldwide, the nearest training
photos in feature space vote for their clusters (weighted by a softmax of their
cosine similarity) and the vote is averaged with the classifier's
distribution before the interpolation head, as PIGEON refines its cell
classifier with retrieval. The head trains on the mix, each training photo's
vote taken from the other crossfit folds (:func:`fold_votes`). On
``street_world`` (seed 0, fine-tuned Lite0) it took unseen places from 0.579
to 0.558 of the best constant, unseen groups from 0.921 to 0.886 and the other
collection from 0.987 to 0.973. Within one region (the US West) the vote
helped unseen places but cost unseen cells 5%, so, like the median
composition, it applies to worldwide data (:func:`~worldnet.geo.sphere.is_worldwide`;
docs/worldwide.md, "Retrieval beside the classifier").

Numpy only: the answer path (:mod:`worldnet.models.numpy_model`) uses it
without PyTorch. Each query row's similarities are computed on their own, so an
answer never depends on the photos batched beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Neighbours that vote, the softmax temperature of their cosine similarity, and the vote's share of the mix.
K = 30
TAU = 0.1
MIX = 0.5
#: At most this many training photos are kept (a seeded sample, every cluster kept): 10k × 1,280 float32 is 51 MB.
MAX_MEMORY = 10_000


def _signed_sqrt(X: np.ndarray) -> np.ndarray:
    """The signed square root of each feature (as the classifier's ``feature_power`` of 0.5)."""
    x = np.asarray(X, dtype=np.float32)
    out: np.ndarray = np.sign(x) * np.sqrt(np.abs(x))
    return out


def embed(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Features as retrieval compares them: signed square root, centred on the training mean, unit length (float32)."""
    e = _signed_sqrt(X) - mean
    out: np.ndarray = (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)).astype(np.float32)
    return out


def vote(sims: np.ndarray, labels: np.ndarray, n_clusters: int, tau: float) -> np.ndarray:
    """(N, K) distributions from the ``sims`` (N, k) of each row's neighbours, whose clusters are ``labels`` (N, k)."""
    w = np.exp((sims - sims.max(axis=1, keepdims=True)) / tau)
    w /= w.sum(axis=1, keepdims=True)
    out = np.zeros((len(sims), n_clusters), dtype=np.float64)
    np.add.at(out, (np.repeat(np.arange(len(sims)), sims.shape[1]), labels.ravel()), w.ravel())
    return out


def sample_memory(labels: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Row indices kept as memory: all when they fit, else a seeded sample that keeps at least one row of each cluster."""
    n = len(labels)
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    first = np.unique(labels, return_index=True)[1]
    rest = np.setdiff1d(np.arange(n), first)
    extra = rng.choice(rest, max(0, max_rows - len(first)), replace=False)
    return np.sort(np.concatenate([first, extra]))


@dataclass
class Retrieval:
    """The training photos' embedded features and clusters, and how their vote mixes into the classifier's distribution."""

    mean: np.ndarray
    memory: np.ndarray
    labels: np.ndarray
    n_clusters: int
    k: int = K
    tau: float = TAU
    mix: float = MIX

    def __post_init__(self) -> None:
        """Raises ValueError unless one label per memory row, each a cluster, and the mean as wide as the rows."""
        if self.memory.ndim != 2 or len(self.memory) != len(self.labels) or len(self.labels) == 0:
            raise ValueError(f"retrieval needs one cluster label per training photo ({len(self.memory)} photos, {len(self.labels)} labels)")
        if np.shape(self.mean) != (self.memory.shape[1],):
            raise ValueError(f"retrieval's mean has shape {np.shape(self.mean)}, its rows {self.memory.shape[1]} features")
        if self.labels.min() < 0 or self.labels.max() >= self.n_clusters:
            raise ValueError(f"retrieval's cluster labels must lie in 0..{self.n_clusters - 1}")

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        labels: np.ndarray,
        n_clusters: int,
        *,
        max_memory: int = MAX_MEMORY,
        seed: int = 0,
        k: int = K,
        tau: float = TAU,
        mix: float = MIX,
    ) -> Retrieval:
        """Keep the training photos ``X`` (raw features) with their cluster ``labels``.

        Raises:
            ValueError: ``X`` and ``labels`` disagree in length, or a label is not a cluster.
        """
        labels = np.asarray(labels, dtype=np.int64)
        if len(X) != len(labels) or len(X) == 0:
            raise ValueError(f"retrieval needs one cluster label per training photo ({len(X)} photos, {len(labels)} labels)")
        mean = _signed_sqrt(X).mean(axis=0).astype(np.float32)
        keep = sample_memory(labels, max_memory, seed)
        memory = embed(np.asarray(X)[keep], mean).astype(np.float16).astype(np.float32)  # as saved: the model answers alike
        return cls(mean, memory, labels[keep], int(n_clusters), k, tau, mix)

    def votes(self, X: np.ndarray) -> np.ndarray:
        """(N, K) the vote of each row's :attr:`k` nearest training photos, row by row (see the module docs)."""
        q = embed(X, self.mean)
        k = min(self.k, len(self.memory))
        sims = np.empty((len(q), k), dtype=np.float32)
        idx = np.empty((len(q), k), dtype=np.int64)
        for i in range(len(q)):
            s = self.memory @ q[i]
            top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            idx[i], sims[i] = top, s[top]
        return vote(sims, self.labels[idx], self.n_clusters, self.tau)

    def blend(self, probs: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The classifier's ``probs`` (N, K) mixed with the vote for the raw features ``X``, in ``probs``' dtype."""
        return mix_votes(probs, self.votes(X), self.mix)


def retrieval_from(mean: np.ndarray, memory: np.ndarray, labels: np.ndarray, n_clusters: int, settings: dict[str, float]) -> Retrieval:
    """A saved :class:`Retrieval` (its memory stored as float16, used as float32).

    Raises:
        ValueError: The arrays do not fit together.
    """
    k, tau, mix = int(settings["k"]), float(settings["tau"]), float(settings["mix"])
    mem, lab = np.asarray(memory, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    return Retrieval(np.asarray(mean, np.float32), mem, lab, int(n_clusters), k, tau, mix)


def mix_votes(probs: np.ndarray, votes: np.ndarray, mix: float) -> np.ndarray:
    """``(1 - mix)·probs + mix·votes``, in ``probs``' dtype."""
    p = np.asarray(probs)
    out: np.ndarray = ((1.0 - mix) * p.astype(np.float64) + mix * votes).astype(p.dtype)
    return out


def fold_votes(
    E: np.ndarray,
    labels: np.ndarray,
    folds: list[np.ndarray],
    n_clusters: int,
    k: int = K,
    tau: float = TAU,
    max_memory: int = MAX_MEMORY,
    seed: int = 0,
) -> np.ndarray:
    """(N, K) each row's vote from the rows of the other folds only, as a new photo's vote comes from training photos.

    ``E``: embedded rows (:func:`embed`); ``folds``: boolean masks that cover the rows once. The other folds are sampled
    down to the model's ``max_memory`` as :meth:`Retrieval.fit` keeps them, so training votes come from neighbours as
    dense as an answer's. A row with no other fold (a single group) gets no vote: a row of zeros.
    """
    from worldnet.models.baselines import nearest_neighbours

    out = np.zeros((len(E), n_clusters), dtype=np.float64)
    for held in folds:
        ref = np.flatnonzero(~held)
        if len(ref) == 0 or not held.any():
            continue
        ref = ref[sample_memory(labels[ref], max_memory, seed)]
        kk = min(k, len(ref))
        dist, idx = nearest_neighbours(E[ref], E[held], kk)
        out[held] = vote(1.0 - dist**2 / 2.0, labels[ref][idx], n_clusters, tau)
    return out


__all__ = ["Retrieval", "embed", "fold_votes", "mix_votes", "retrieval_from", "sample_memory", "vote"]
