"""The paper's baselines, each as described there.

* mean model — the mean of the training latitudes and longitudes (the paper
  averages them normalised to 0–1), for every image;
* best constant — not the paper's: the one point nearest on average to the
  training photos (their spherical geometric median), the constant to beat;
* guess model — a seeded random training location per image;
* random guess — uniform on the sphere;
* direct regression — frozen backbone + 2×512 ReLU + sigmoid on coordinates
  normalised to 0–1 (the paper's VGG19 model). Coordinates are normalised
  over the training locations' extent, not the whole globe, and Adam runs at
  lr 1e-3 with early stopping on held-out training rows: at the paper's lr
  0.01 on standardised 1,280-d features the output pre-activations reach
  ±1,700, the sigmoid saturates and every photo lands on a pole (5,384 km
  on the US-West photos, ten times the mean model). Trained properly it
  hedges towards the mean, as the paper reports;
* nn classifier — the k nearest training images in feature space, combined by
  a distance-weighted spherical mean, or the paper's mean-shift over the
  neighbours' coordinates (the densest mode wins).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from worldnet.geo.sphere import latlon_to_xyz, uniform_sphere, xyz_to_latlon
from worldnet.models.worldnet_model import Standardiser


@dataclass
class MeanModel:
    """The paper's mean model: always the mean of the training latitudes and longitudes.

    The paper normalises latitude and longitude to [0, 1] and averages them,
    which is the plain mean of the degrees. On worldwide data that point is
    no one's neighbour (often in the sea); :class:`BestConstant` is the
    constant worth beating.
    """

    lat: float
    lon: float

    @classmethod
    def fit(cls, latlon: np.ndarray) -> MeanModel:
        if len(latlon) == 0:
            raise ValueError("the mean model needs at least one training location")
        return cls(float(np.mean(latlon[:, 0])), float(np.mean(latlon[:, 1])))

    def predict(self, n: int) -> np.ndarray:
        return np.tile([self.lat, self.lon], (n, 1))


@dataclass
class BestConstant(MeanModel):
    """The best constant guess: the point with the least mean great-circle distance to the training photos.

    The spherical geometric median, found by Weiszfeld's iteration in the
    tangent plane, started from the best of the training locations
    themselves (so it is never worse than the best single training photo).
    A model that answers farther than this on average has learned nothing
    it can use on those photos.
    """

    @classmethod
    def fit(cls, latlon: np.ndarray, n_iter: int = 100, max_candidates: int = 2000) -> BestConstant:
        if len(latlon) == 0:
            raise ValueError("the best constant needs at least one training location")
        xyz = latlon_to_xyz(latlon[:, 0], latlon[:, 1])
        rng = np.random.default_rng(0)
        cand = xyz if len(xyz) <= max_candidates else xyz[rng.choice(len(xyz), max_candidates, replace=False)]
        cost = np.arccos(np.clip(cand @ xyz.T, -1, 1)).mean(axis=1)
        x = cand[int(np.argmin(cost))].copy()
        for _ in range(n_iter):
            d = np.arccos(np.clip(xyz @ x, -1, 1))
            w = 1.0 / np.maximum(d, 1e-9)
            # the weighted mean direction of the points, each weighted by 1/distance, moves x toward the median
            new = (w[:, None] * xyz).sum(0)
            norm = np.linalg.norm(new)
            if norm < 1e-12:
                break
            new /= norm
            if np.arccos(np.clip(new @ x, -1, 1)).mean() < 1e-10:
                x = new
                break
            if np.arccos(np.clip(xyz @ new, -1, 1)).mean() > np.arccos(np.clip(xyz @ x, -1, 1)).mean():
                break
            x = new
        lat, lon = float(np.degrees(np.arcsin(np.clip(x[2], -1, 1)))), float(np.degrees(np.arctan2(x[1], x[0])))
        return cls(lat, lon)


def guess_model(train_latlon: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A random training location per image."""
    rng = np.random.default_rng(seed)
    return train_latlon[rng.integers(0, len(train_latlon), n)]


def random_guess(n: int, seed: int = 0) -> np.ndarray:
    """Uniform points on the sphere."""
    lat, lon = uniform_sphere(n, np.random.default_rng(seed))
    return np.stack([lat, lon], axis=1)


class DirectRegression(nn.Module):
    """Features → 2×512 ReLU → 2 sigmoid outputs: (lat, lon) normalised over ``[lo, hi]``."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, dim: int, lo: np.ndarray | None = None, hi: np.ndarray | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 2), nn.Sigmoid())
        self.register_buffer("lo", torch.tensor(lo if lo is not None else [-90.0, -180.0], dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(hi if hi is not None else [90.0, 180.0], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def coordinate_box(latlon: np.ndarray, margin: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The training locations' extent, widened by ``margin`` of its size (at least 1°) on every side."""
    lo, hi = latlon.min(0), latlon.max(0)
    pad = np.maximum((hi - lo) * margin, 1.0)
    return np.maximum(lo - pad, [-90.0, -180.0]), np.minimum(hi + pad, [90.0, 180.0])


def fit_direct_regression(
    X: np.ndarray,
    latlon: np.ndarray,
    *,
    max_epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 256,
    patience: int = 3,
    val_fraction: float = 0.1,
    max_samples: int = 600_000,
    seed: int = 0,
) -> tuple[DirectRegression, Standardiser]:
    """Train the paper's regression head: MSE on normalised coordinates, Adam, best held-out epoch kept.

    Epochs stop at ``max_epochs``, after ``patience`` epochs without a better
    held-out loss, or once ``max_samples`` rows have been seen (so cost grows
    linearly with the data, never faster).
    """
    from worldnet.models.linear import torch_threads, training_threads

    rng = np.random.default_rng(seed)
    std, Xt = Standardiser.fit_transform(X)
    lo, hi = coordinate_box(latlon)
    target = torch.tensor((latlon - lo) / (hi - lo), dtype=torch.float32)
    n_val = int(len(X) * val_fraction) if len(X) >= 20 else 0
    order = rng.permutation(len(X))
    val, tr = order[:n_val], order[n_val:]
    with torch_threads(training_threads(len(X))):
        torch.manual_seed(seed)
        model = DirectRegression(X.shape[1], lo, hi)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        epochs = max(1, min(max_epochs, max_samples // max(1, len(tr))))
        best, best_state, bad = float("inf"), copy.deepcopy(model.state_dict()), 0
        for _ in range(epochs):
            model.train()
            for idx in torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)].split(batch_size):
                opt.zero_grad()
                nn.functional.mse_loss(model(Xt[idx]), target[idx]).backward()
                opt.step()
            if not n_val:
                best_state = copy.deepcopy(model.state_dict())
                continue
            model.eval()
            with torch.no_grad():
                loss = float(nn.functional.mse_loss(model(Xt[val]), target[val]))
            if loss < best:
                best, best_state, bad = loss, copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
                if bad >= patience:
                    break
        model.load_state_dict(best_state)
    model.eval()
    return model, std


def predict_direct_regression(model: DirectRegression, std: Standardiser, X: np.ndarray) -> np.ndarray:
    """Denormalised (lat, lon) predictions."""
    with torch.no_grad():
        out = (model(std(X)) * (model.hi - model.lo) + model.lo).numpy().astype(np.float64)
    return out


def nn_classifier(
    X_train: np.ndarray,
    latlon_train: np.ndarray,
    X_test: np.ndarray,
    *,
    k: int = 10,
    variant: str = "weighted",
    exact_pairs: int = 2_000_000_000,
    seed: int = 0,
) -> np.ndarray:
    """k-nearest-neighbour geolocation in (L2-normalised) feature space.

    Args:
        variant: ``weighted`` — spherical mean of the neighbours weighted by
            1/distance; ``meanshift`` — the paper's mean-shift over the
            neighbours' coordinates, predicting the centre of the densest mode.
        exact_pairs: Above this many train × test pairs the search uses an
            inverted-file index (faiss IVF, ``nlist`` ≈ 4·√n, 16 lists probed)
            instead of exact search, so its cost grows about linearly with the
            data instead of quadratically.
    """
    if variant not in ("weighted", "meanshift"):
        raise ValueError("variant must be 'weighted' or 'meanshift'")
    k = min(k, len(X_train))
    dist, idx = nearest_neighbours(_unit(X_train), _unit(X_test), k, exact_pairs=exact_pairs, seed=seed)
    pts = latlon_train[idx]  # (n, k, 2)
    if variant == "weighted":
        xyz = latlon_to_xyz(pts[..., 0], pts[..., 1])
        lat, lon = xyz_to_latlon((xyz * (1.0 / (dist + 1e-6))[..., None]).sum(1))
        return np.stack([lat, lon], 1)
    lat, lon = xyz_to_latlon(meanshift_modes(latlon_to_xyz(pts[..., 0], pts[..., 1])))
    return np.stack([lat, lon], 1)


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)


def nearest_neighbours(
    train: np.ndarray, test: np.ndarray, k: int, *, exact_pairs: int = 2_000_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distances, indices) of the ``k`` nearest unit vectors of ``train`` for each row of ``test``."""
    if len(train) * len(test) > exact_pairs:
        import faiss

        nlist = int(max(16, min(4 * np.sqrt(len(train)), len(train) // 39)))
        quantiser = faiss.IndexFlatIP(train.shape[1])
        index = faiss.IndexIVFFlat(quantiser, train.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(train)
        index.add(train)
        index.nprobe = 16
        sims, idx = index.search(test, k)
    else:
        sims = np.empty((len(test), k), np.float32)
        idx = np.empty((len(test), k), np.int64)
        for start in range(0, len(test), 1024):  # bounded memory
            s = test[start : start + 1024] @ train.T
            top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(s.shape[1]), (len(s), 1))
            order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
            idx[start : start + 1024] = np.take_along_axis(top, order, 1)
            sims[start : start + 1024] = np.take_along_axis(s, idx[start : start + 1024], 1)
    missing = idx < 0  # an IVF search can come back short of k: reuse the nearest found
    if missing.any():
        idx = np.where(missing, idx[:, :1], idx)
        sims = np.where(missing, sims[:, :1], sims)
    return np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0)), idx


def meanshift_modes(xyz: np.ndarray, bandwidth: float = 0.1, max_iter: int = 100) -> np.ndarray:
    """(n, 3) centre of the densest mode among each row's points (n, k, 3): the paper's mean-shift, vectorised.

    A flat kernel of ``bandwidth`` (0.1 on the unit sphere ≈ 640 km), seeded at
    every point, as scikit-learn's ``MeanShift``; of the modes it converges to,
    the one with the most points within ``bandwidth`` wins (the first on a tie).
    """
    modes = xyz.copy()
    for _ in range(max_iter):
        near = np.linalg.norm(modes[:, :, None, :] - xyz[:, None, :, :], axis=-1) <= bandwidth  # (n, seeds, points)
        new = (near[..., None] * xyz[:, None, :, :]).sum(2) / np.maximum(near.sum(2), 1)[..., None]
        done = np.abs(new - modes).max() < 1e-3 * bandwidth
        modes = new
        if done:
            break
    counts = (np.linalg.norm(modes[:, :, None, :] - xyz[:, None, :, :], axis=-1) <= bandwidth).sum(2)
    return modes[np.arange(len(xyz)), counts.argmax(1)]
