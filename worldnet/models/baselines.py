"""The paper's baselines, each as described there.

* mean model — the spherical mean of the training locations, for every image;
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
from sklearn.cluster import MeanShift
from sklearn.neighbors import NearestNeighbors
from torch import nn

from worldnet.geo.sphere import latlon_to_xyz, spherical_mean, uniform_sphere, xyz_to_latlon
from worldnet.models.worldnet_model import Standardiser


@dataclass
class MeanModel:
    """Always predicts the spherical mean of the training locations."""

    lat: float
    lon: float

    @classmethod
    def fit(cls, latlon: np.ndarray) -> MeanModel:
        return cls(*spherical_mean(latlon[:, 0], latlon[:, 1]))

    def predict(self, n: int) -> np.ndarray:
        return np.tile([self.lat, self.lon], (n, 1))


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
    from worldnet.models.linear import torch_threads

    rng = np.random.default_rng(seed)
    std = Standardiser.fit(X)
    lo, hi = coordinate_box(latlon)
    target = torch.tensor((latlon - lo) / (hi - lo), dtype=torch.float32)
    n_val = int(len(X) * val_fraction) if len(X) >= 20 else 0
    order = rng.permutation(len(X))
    val, tr = order[:n_val], order[n_val:]
    Xt = std(X)
    with torch_threads(1):
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
    X_train: np.ndarray, latlon_train: np.ndarray, X_test: np.ndarray, *, k: int = 10, variant: str = "weighted"
) -> np.ndarray:
    """k-nearest-neighbour geolocation in (L2-normalised) feature space.

    Args:
        variant: ``weighted`` — spherical mean of the neighbours weighted by
            1/distance; ``meanshift`` — the paper's mean-shift over the
            neighbours' coordinates, predicting the centre of the mode with the
            most neighbours.
    """
    if variant not in ("weighted", "meanshift"):
        raise ValueError("variant must be 'weighted' or 'meanshift'")
    k = min(k, len(X_train))

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)

    nbrs = NearestNeighbors(n_neighbors=k).fit(unit(X_train))
    dist, idx = nbrs.kneighbors(unit(X_test))
    out = np.zeros((len(X_test), 2))
    for i in range(len(X_test)):
        pts = latlon_train[idx[i]]
        if variant == "weighted":
            out[i] = spherical_mean(pts[:, 0], pts[:, 1], 1.0 / (dist[i] + 1e-6))
        else:
            xyz = latlon_to_xyz(pts[:, 0], pts[:, 1])
            ms = MeanShift(bandwidth=0.1).fit(xyz)  # ~640 km on the unit sphere
            top = np.bincount(ms.labels_).argmax()
            lat, lon = xyz_to_latlon(ms.cluster_centers_[top])
            out[i] = [float(lat), float(lon)]
    return out
