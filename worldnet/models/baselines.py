"""The paper's baselines, each as described there.

* mean model — the spherical mean of the training locations, for every image;
* guess model — a seeded random training location per image;
* random guess — uniform on the sphere;
* direct regression — frozen backbone + 2×512 ReLU + sigmoid on coordinates
  normalised to 0–1, Adam lr 0.01 (the paper's VGG19 model);
* nn classifier — the k nearest training images in feature space, combined by
  a distance-weighted spherical mean, or the paper's mean-shift over the
  neighbours' coordinates (the densest mode wins).
"""

from __future__ import annotations

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
    """Features → 2×512 ReLU → 2 sigmoid outputs (normalised lat, lon)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 2), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def fit_direct_regression(
    X: np.ndarray, latlon: np.ndarray, *, epochs: int = 50, lr: float = 0.01, seed: int = 0
) -> tuple[DirectRegression, Standardiser]:
    """Train the paper's regression head (MSE on 0–1 coordinates, Adam lr 0.01)."""
    torch.manual_seed(seed)
    std = Standardiser.fit(X)
    Xt = std(X)
    target = torch.tensor(np.stack([(latlon[:, 0] + 90) / 180, (latlon[:, 1] + 180) / 360], 1), dtype=torch.float32)
    model = DirectRegression(X.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=g).split(64):
            opt.zero_grad()
            nn.functional.mse_loss(model(Xt[idx]), target[idx]).backward()
            opt.step()
    model.eval()
    return model, std


def predict_direct_regression(model: DirectRegression, std: Standardiser, X: np.ndarray) -> np.ndarray:
    """Denormalised (lat, lon) predictions."""
    with torch.no_grad():
        out = model(std(X)).numpy().astype(np.float64)
    return np.stack([out[:, 0] * 180 - 90, out[:, 1] * 360 - 180], 1)


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
