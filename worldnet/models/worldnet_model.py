"""worldNET: a centroid classifier, then an interpolation head over its distribution.

1. :class:`CentroidClassifier` — an MLP on frozen backbone features predicting a
   distribution over the K cluster centroids (cross-entropy), early-stopped on
   validation accuracy.
2. :class:`InterpolationHead` — with the classifier frozen, a 2-layer ReLU MLP
   maps the K probabilities to K logits → softmax weights; the prediction is the
   *spherical* composition of the centroids (normalise Σ wₖ·xyz(cₖ)), trained
   with the differentiable haversine loss. Composing unit vectors rather than
   degrees keeps it right across the antimeridian.

Training modes for the head:

* ``in_sample`` (the paper): probabilities of the training images themselves.
* ``crossfit``: probabilities from classifiers fitted on folds that exclude the
  images' own cities, so the head learns what the classifier says about a city
  it has never seen — exactly the unseen-city situation.

Why the crossfit head is regularised: its training rows are many images but few
*independent* examples — all images of a city share one out-of-fold probability
signature, so there are about as many examples as training cities (18 on the
synthetic unseen protocol). Unregularised, the K→hidden→K MLP memorises each
city's signature (training loss 1,300 km while held-out cities stay at
4,000 km). Weight decay on the MLP's weight matrices (not on its biases nor the
log-probability skip) pulls it towards the generic head ``softmax(τ·log p + b)``:
"how far to trust the classifier" (τ) and "where images are a priori" (b), both
learnable from a handful of cities. At the default strength (AdamW decay 100 at
learning rate 3e-3 shrinks those weights by 30% a step) the MLP's weights all
but vanish and the head is essentially that generic form; the strength was
chosen on city-grouped cross-validation of the synthetic world (see README).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from worldnet.geo.sphere import haversine_km_torch, latlon_to_xyz

HEAD_MODES = ("in_sample", "crossfit")


@dataclass
class TrainConfig:
    """Hyper-parameters shared by the worldNET parts (defaults suit ~2k images on CPU)."""

    hidden: int = 256
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 60
    patience: int = 10
    batch_size: int = 64
    head_hidden: int = 128
    head_lr: float = 3e-3
    head_epochs: int = 150
    #: AdamW weight decay on the head MLP's weight matrices, per head mode
    #: (in_sample: the paper, unregularised; crossfit: see the module docs).
    head_weight_decay: float = 0.0
    crossfit_weight_decay: float = 100.0
    crossfit_folds: int = 5
    seed: int = 0


@dataclass
class Standardiser:
    """Feature standardisation fitted on training features."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardiser:
        return cls(X.mean(0).astype(np.float32), (X.std(0) + 1e-6).astype(np.float32))

    def __call__(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((X - self.mean) / self.std).astype(np.float32))


class CentroidClassifier(nn.Module):
    """MLP: features → logits over K centroids."""

    def __init__(self, dim: int, k: int, hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class InterpolationHead(nn.Module):
    """Distribution over K centroids → weights → spherical composition (lat, lon)."""

    centroid_xyz: torch.Tensor

    def __init__(self, centroids_latlon: np.ndarray, hidden: int = 128):
        super().__init__()
        k = len(centroids_latlon)
        self.register_buffer(
            "centroid_xyz", torch.tensor(latlon_to_xyz(centroids_latlon[:, 0], centroids_latlon[:, 1]), dtype=torch.float32)
        )
        self.mlp = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.temperature = nn.Parameter(torch.tensor(1.0))

    def weights(self, probs: torch.Tensor) -> torch.Tensor:
        """Softmax weights over centroids; starts close to the classifier's own distribution."""
        logits = self.mlp(probs) + torch.log(probs.clamp_min(1e-8)) * self.temperature
        return torch.softmax(logits, dim=-1)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return compose(self.weights(probs), self.centroid_xyz)


def compose(weights: torch.Tensor, centroid_xyz: torch.Tensor) -> torch.Tensor:
    """(lat, lon) in degrees of the normalised weighted sum of centroid unit vectors."""
    v = weights @ centroid_xyz
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    lat = torch.rad2deg(torch.asin(v[:, 2].clamp(-1, 1)))
    lon = torch.rad2deg(torch.atan2(v[:, 1], v[:, 0]))
    return torch.stack([lat, lon], dim=-1)


def train_classifier(
    X: torch.Tensor, y: np.ndarray, X_val: torch.Tensor | None, y_val: np.ndarray | None, k: int, cfg: TrainConfig
) -> tuple[CentroidClassifier, dict[str, float]]:
    """Fit the classifier with Adam + cross-entropy, keeping the best validation epoch."""
    torch.manual_seed(cfg.seed)
    model = CentroidClassifier(X.shape[1], k, cfg.hidden, cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    g = torch.Generator().manual_seed(cfg.seed)
    best_acc, best_state, best_epoch, bad = -1.0, copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(cfg.max_epochs):
        model.train()
        for idx in torch.randperm(len(X), generator=g).split(cfg.batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), yt[idx], label_smoothing=0.05).backward()
            opt.step()
        if X_val is None or y_val is None or len(y_val) == 0:
            best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
            continue
        model.eval()
        with torch.no_grad():
            acc = float((model(X_val).argmax(1).numpy() == y_val).mean())
        if acc > best_acc:
            best_acc, best_state, best_epoch, bad = acc, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"val_accuracy": max(best_acc, 0.0), "best_epoch": float(best_epoch)}


def predict_proba(model: CentroidClassifier, X: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities of a frozen classifier."""
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(X), dim=-1)


def train_head(
    probs: torch.Tensor, target_latlon: np.ndarray, centroids_latlon: np.ndarray, cfg: TrainConfig, weight_decay: float = 0.0
) -> tuple[InterpolationHead, list[float]]:
    """Fit the interpolation head with the haversine loss (full-batch AdamW).

    ``weight_decay`` shrinks only the MLP's weight matrices, so a strongly
    regularised head keeps its biases (a prior over centroids) and its
    log-probability skip (trust in the classifier).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    torch.manual_seed(cfg.seed)
    head = InterpolationHead(centroids_latlon, cfg.head_hidden)
    decayed: list[nn.Parameter] = []
    kept: list[nn.Parameter] = []
    for name, param in head.named_parameters():
        (decayed if name.startswith("mlp.") and name.endswith(".weight") else kept).append(param)
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}], lr=cfg.head_lr)
    t = torch.tensor(target_latlon, dtype=torch.float32)
    losses = []
    for _ in range(cfg.head_epochs):
        opt.zero_grad()
        pred = head(probs)
        loss = haversine_km_torch(pred[:, 0], pred[:, 1], t[:, 0], t[:, 1]).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    head.eval()
    return head, losses


def crossfit_probs(X: torch.Tensor, y: np.ndarray, groups: np.ndarray, k: int, cfg: TrainConfig) -> torch.Tensor:
    """Out-of-group probabilities: each image scored by a classifier that never saw its city."""
    uniq = np.array(sorted(set(groups.tolist())))
    rng = np.random.default_rng(cfg.seed)
    folds = np.array_split(uniq[rng.permutation(len(uniq))], min(cfg.crossfit_folds, len(uniq)))
    out = torch.zeros(len(X), k)
    fold_cfg = copy.copy(cfg)
    for fold in folds:
        held = np.isin(groups, fold)
        model, _ = train_classifier(X[~held], y[~held], None, None, k, _fixed_epochs(fold_cfg))
        out[held] = predict_proba(model, X[held])
    return out


def _fixed_epochs(cfg: TrainConfig) -> TrainConfig:
    c = copy.copy(cfg)
    c.max_epochs = max(5, cfg.max_epochs // 3)
    return c


@dataclass
class WorldNet:
    """A trained worldNET: everything needed to go from features to coordinates."""

    standardiser: Standardiser
    classifier: CentroidClassifier
    head: InterpolationHead
    centroids_latlon: np.ndarray
    centroid_names: list[str]
    mode: str
    metrics: dict[str, float] = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) lat/lon before land snapping, and (N, K) classifier probabilities."""
        probs = predict_proba(self.classifier, self.standardiser(X))
        with torch.no_grad():
            latlon = self.head(probs).numpy().astype(np.float64)
        return latlon, probs.numpy()


@dataclass
class ClassifierFit:
    """Stage 1 of worldNET: the feature standardiser and the frozen centroid classifier."""

    standardiser: Standardiser
    classifier: CentroidClassifier
    metrics: dict[str, float] = field(default_factory=dict)


def fit_classifier(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, k: int, cfg: TrainConfig | None = None
) -> ClassifierFit:
    """Standardise features and train the centroid classifier (early-stopped on ``X_val``)."""
    cfg = cfg or TrainConfig()
    std = Standardiser.fit(X_train)
    Xt = std(X_train)
    has_val = len(X_val) > 0
    clf, m = train_classifier(Xt, y_train, std(X_val) if has_val else None, y_val if has_val else None, k, cfg)
    m["train_accuracy"] = float((predict_proba(clf, Xt).argmax(1).numpy() == y_train).mean())
    return ClassifierFit(std, clf, m)


def _check_head_mode(mode: str) -> None:
    if mode not in HEAD_MODES:
        raise ValueError(f"unknown head mode {mode!r}; choose one of {', '.join(HEAD_MODES)}")


def fit_interpolation(
    fit: ClassifierFit,
    X_train: np.ndarray,
    y_train: np.ndarray,
    latlon_train: np.ndarray,
    groups_train: np.ndarray,
    centroids_latlon: np.ndarray,
    centroid_names: list[str],
    mode: str = "in_sample",
    cfg: TrainConfig | None = None,
) -> WorldNet:
    """Stage 2: with the classifier frozen, train the interpolation head (see module docs for ``mode``)."""
    _check_head_mode(mode)
    cfg = cfg or TrainConfig()
    k = len(centroids_latlon)
    Xt = fit.standardiser(X_train)
    if mode == "crossfit":
        probs, weight_decay = crossfit_probs(Xt, y_train, groups_train, k, cfg), cfg.crossfit_weight_decay
    else:
        probs, weight_decay = predict_proba(fit.classifier, Xt), cfg.head_weight_decay
    head, losses = train_head(probs, latlon_train, centroids_latlon, cfg, weight_decay)
    metrics = {**fit.metrics, "head_final_loss_km": losses[-1], "head_weight_decay": weight_decay}
    return WorldNet(fit.standardiser, fit.classifier, head, centroids_latlon, centroid_names, mode, metrics)


def fit_worldnet(
    X_train: np.ndarray,
    y_train: np.ndarray,
    latlon_train: np.ndarray,
    groups_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    centroids_latlon: np.ndarray,
    centroid_names: list[str],
    mode: str = "in_sample",
    cfg: TrainConfig | None = None,
) -> WorldNet:
    """Train classifier then head; ``groups_train`` (city per row) drives crossfit folds."""
    _check_head_mode(mode)
    fit = fit_classifier(X_train, y_train, X_val, y_val, len(centroids_latlon), cfg)
    return fit_interpolation(fit, X_train, y_train, latlon_train, groups_train, centroids_latlon, centroid_names, mode, cfg)
