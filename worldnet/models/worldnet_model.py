"""worldNET: a centroid classifier, then an interpolation head over its distribution.

1. :class:`CentroidClassifier` — on frozen backbone features, predicting a
   distribution over the K cluster centroids (cross-entropy). ``mlp`` (the
   default, the paper's): a one-hidden-layer MLP, early-stopped on validation
   accuracy; ``linear`` (see :mod:`worldnet.models.linear`): PCA whitening,
   then softmax regression on haversine-smoothed targets, fitted by L-BFGS.
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
chosen on city-grouped cross-validation of the synthetic world (see
docs/method.md, "Head modes on the synthetic world and OSV-5M").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from worldnet import defaults
from worldnet.features.names import View
from worldnet.geo.sphere import EARTH_RADIUS_KM, haversine_km_torch, is_worldwide, latlon_to_xyz
from worldnet.head_modes import HEAD_MODES
from worldnet.models.linear import fit_softmax, smoothed_targets, torch_threads, training_threads, whitening
from worldnet.models.retrieval import Retrieval, embed, fold_votes, mix_votes


@dataclass
class TrainConfig:
    """Hyper-parameters shared by the worldNET parts (defaults suit ~2k images on CPU)."""

    #: ``mlp`` (the paper's, on haversine-smoothed targets) or ``linear`` (PCA whitening + softmax regression, L-BFGS).
    classifier: str = defaults.CLASSIFIER
    #: Signed power applied to each feature before standardising (``sign(x)·|x|^p``; 1 = as extracted). See :func:`signed_power`.
    feature_power: float = defaults.FEATURE_POWER
    #: linear: principal components kept, L2 strength, and the haversine smoothing of targets (km; 0 = one-hot).
    pca_dim: int = 128
    l2: float = 1e-2
    #: None: the median distance between neighbouring centroids (155 km for the 34 cells of the US West, about 700 km for
    #: k-means clusters of worldwide photos; see :func:`centroid_spacing_km`).
    target_tau_km: float | None = None
    hidden: int = 256
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 60
    patience: int = 10
    batch_size: int = 64
    #: mlp: the batch grows with the data so that an epoch is at most this many steps.
    max_steps_per_epoch: int = 100
    #: mlp: at most this many rows seen in all (epochs = min(max_epochs, max_samples / rows)); no cap below ~33k rows.
    max_samples: int = 2_000_000
    #: mlp: train on the haversine-smoothed targets (else one-hot with label smoothing 0.05).
    mlp_soft_targets: bool = True
    #: mlp: independently initialised members, each trained apart, their probabilities averaged; as many as
    #: ``max_samples`` pays for at ``max_epochs`` (all of them on a few thousand photos, one from ~33k rows on).
    members: int = defaults.MEMBERS
    head_hidden: int = 128
    head_lr: float = 3e-3
    head_epochs: int = 150
    #: AdamW weight decay on the head MLP's weight matrices, per head mode
    #: (in_sample: the paper, unregularised; crossfit: see the module docs).
    head_weight_decay: float = 0.0
    crossfit_weight_decay: float = defaults.CROSSFIT_WEIGHT_DECAY
    crossfit_folds: int = 5
    #: crossfit on seen places: also fit the head on folds that hold out whole groups, so that it learns how far to
    #: trust the classifier on photos of a country or city it never saw (twice the fold classifiers).
    calibrate_on_groups: bool = False
    #: Weiszfeld steps from the head's weighted mean toward the weighted geometric median (0: the paper's mean; see
    #: :func:`compose`); None: :func:`median_steps_for` the training photos (10 for worldwide data, 0 for one region).
    median_steps: int | None = None
    #: Mix a vote of the nearest training photos into the classifier's distribution (:mod:`worldnet.models.retrieval`);
    #: None: on where the training photos are worldwide (:func:`~worldnet.geo.sphere.is_worldwide`), off in a region.
    retrieval: bool | None = None
    seed: int = 0


@dataclass
class Standardiser:
    """Feature standardisation fitted on training features, after an optional signed power (see :func:`signed_power`)."""

    mean: np.ndarray
    std: np.ndarray
    #: 1: the features as extracted (every model saved before this field existed).
    power: float = 1.0

    @classmethod
    def fit(cls, X: np.ndarray, power: float = 1.0) -> Standardiser:
        return cls.fit_transform(X, power)[0]

    @classmethod
    def fit_transform(cls, X: np.ndarray, power: float = 1.0) -> tuple[Standardiser, torch.Tensor]:
        """Fit on ``X`` and return it standardised, raising it to the power once rather than twice (560k rows: ~1 s)."""
        Xp = signed_power(X, power)
        std = cls(Xp.mean(0).astype(np.float32), (Xp.std(0) + 1e-6).astype(np.float32), float(power))
        return std, std._scale(Xp)

    def __call__(self, X: np.ndarray) -> torch.Tensor:
        return self._scale(signed_power(X, self.power))

    def _scale(self, Xp: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((Xp - self.mean) / self.std).astype(np.float32))


def signed_power(X: np.ndarray, power: float) -> np.ndarray:
    """``sign(x)·|x|^power``, elementwise: power normalisation of pooled CNN features (Perronnin et al., ECCV 2010).

    Pooled activations are bursty: a few channels fire strongly on whatever
    fills much of the photo (sky, asphalt). A power below 1 damps them, so
    that the many weak channels carrying place cues weigh in. At 0.5 it took
    worldNET's error on real Street View from 404 to 400 km (new places of
    seen cells) and from 456 to 444 km (unseen cells), and on the synthetic
    world from 300 to 225 km (seen cities); docs/method.md has the table.
    """
    if not 0 < power <= 1:
        raise ValueError(f"feature power must be in (0, 1] (1 leaves the features as extracted), got {power}")
    if power == 1:
        return X
    return (np.sign(X) * np.abs(X) ** power).astype(X.dtype, copy=False)


class MemberLinear(nn.Module):
    """``members`` independent (hidden → K) layers run as one batched product: (N, members·hidden) → (N, members, K)."""

    def __init__(self, hidden: int, k: int, members: int):
        super().__init__()
        self.in_features, self.out_features, self.members = hidden, k, members
        bound = 1.0 / hidden**0.5  # nn.Linear's initialisation, per member
        self.weight = nn.Parameter(torch.empty(members, hidden, k).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, k).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nmh,mhk->nmk", h.view(h.shape[0], self.members, -1), self.weight) + self.bias


class CentroidClassifier(nn.Module):
    """Features → logits over K centroids.

    Both kinds share one layout, ``net[1]`` (dim → hidden) then ``net[4]``
    (hidden → K), so they save and load alike: ``mlp`` has dropout and a ReLU
    between them; ``linear`` has neither, and ``net[1]`` is the fixed PCA
    whitening (``hidden`` = components kept).

    An ``mlp`` of several ``members`` is a deep ensemble in one module: each
    member has its own hidden units and output layer, and ``forward`` gives the
    log of their mean probability, so ``softmax(forward(x))`` is the ensemble's
    distribution. On a thousand real Street View photos one MLP's answer
    depends on its initialisation and on which epoch a small validation set
    picked; five averaged were better on both protocols (``docs/method.md``).
    """

    def __init__(self, dim: int, k: int, hidden: int = 256, dropout: float = 0.3, kind: str = "mlp", members: int = 1):
        super().__init__()
        if kind not in defaults.CLASSIFIERS:
            raise ValueError(f"unknown classifier {kind!r}; choose one of {', '.join(defaults.CLASSIFIERS)}")
        if members < 1 or (kind == "linear" and members != 1):
            raise ValueError(f"members must be >= 1 (1 for the linear classifier), got {members}")
        self.kind, self.dim, self.hidden, self.k, self.members = kind, dim, hidden, k, members
        if kind == "linear":
            self.net = nn.Sequential(nn.Identity(), nn.Linear(dim, hidden), nn.Identity(), nn.Identity(), nn.Linear(hidden, k))
        else:
            out: nn.Module = nn.Linear(hidden, k) if members == 1 else MemberLinear(hidden, k, members)
            self.net = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(dim, hidden * members), nn.ReLU(), nn.Dropout(dropout), out)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, members, K) logits of every member."""
        out: torch.Tensor = self.net(x)
        return out if self.members > 1 else out[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            out: torch.Tensor = self.net(x)
            return out
        return torch.logsumexp(torch.log_softmax(self.member_logits(x), dim=-1), dim=1) - float(np.log(self.members))


class InterpolationHead(nn.Module):
    """Distribution over K centroids → weights → spherical composition (lat, lon)."""

    centroid_xyz: torch.Tensor

    median_steps: torch.Tensor

    def __init__(self, centroids_latlon: np.ndarray, hidden: int = 128, median_steps: int = 0):
        super().__init__()
        k = len(centroids_latlon)
        #: 0: the paper's composition (the normalised weighted mean); n: n Weiszfeld steps on from it toward the
        #: weighted geometric median, the point of least expected distance (see :func:`compose`). Saved with the head.
        self.register_buffer("median_steps", torch.tensor(int(median_steps)))
        self.register_buffer(
            "centroid_xyz", torch.tensor(latlon_to_xyz(centroids_latlon[:, 0], centroids_latlon[:, 1]), dtype=torch.float32)
        )
        self.mlp = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.temperature = nn.Parameter(torch.tensor(1.0))
        #: How much more the head trusts a confident distribution than an unsure one (0: the same; see :meth:`trust`).
        self.temperature_slope = nn.Parameter(torch.tensor(0.0))

    def trust(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, 1) temperature on the classifier's log-probabilities, growing with its confidence (its top probability).

        A photo unlike the training photos (another collection, a country never
        seen) gets a flat, unsure distribution; with a lower temperature there,
        the head falls back on its prior (the MLP's bias: where photos are a
        priori) instead of following a guess far away. Learned on out-of-fold
        probabilities, where the classifier's confidence is as honest as at test.
        """
        conf = probs.max(dim=-1, keepdim=True).values
        # a negative temperature would mean "trust what the classifier rules out": on crossfit rows, whose
        # own city the fold classifier never saw, that fits the training rows and fails on every test photo
        return (self.temperature + self.temperature_slope * (conf - 0.5)).clamp_min(0.0)

    def weights(self, probs: torch.Tensor) -> torch.Tensor:
        """Softmax weights over centroids; starts close to the classifier's own distribution."""
        logits = self.mlp(probs) + torch.log(probs.clamp_min(1e-8)) * self.trust(probs)
        return torch.softmax(logits, dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # heads saved before the confidence slope existed trust every distribution alike
        state_dict.setdefault(prefix + "temperature_slope", torch.tensor(0.0))
        state_dict.setdefault(prefix + "median_steps", torch.tensor(0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return compose(self.weights(probs), self.centroid_xyz, int(self.median_steps))


def median_steps_for(latlon: np.ndarray, steps: int = 10) -> int:
    """Weiszfeld steps for data spread like ``latlon``: ``steps`` for worldwide photos (:func:`~worldnet.geo.sphere.is_worldwide`), else 0.

    Worldwide, the weighted mean of distant centroids lands in an ocean and the
    median helps: photos within 1,000 km of the truth went from 35% to 42% on
    ``street_world``. Within one region every centroid is near the truth's and
    the two agree, except that the median cost 1.5% on unseen cells of the US
    West, so a region keeps the paper's mean (docs/worldwide.md).
    """
    return steps if is_worldwide(latlon) else 0


def compose(weights: torch.Tensor, centroid_xyz: torch.Tensor, median_steps: int = 0) -> torch.Tensor:
    """(lat, lon) in degrees of the normalised weighted sum of centroid unit vectors, then ``median_steps`` toward the median.

    The weighted mean of unit vectors is the paper's composition; when the
    weights spread over several continents it lands between them, often in an
    ocean nobody photographs. The weighted geometric median is the point of
    least expected great-circle distance under those weights: spread weights
    give the centroid nearest the bulk of them, not the middle of the
    Atlantic. Each Weiszfeld step reweights every centroid by 1/distance
    and renormalises; a few steps from the mean suffice, and all stay
    differentiable, so the head trains through them.
    """
    v = weights @ centroid_xyz
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    for _ in range(median_steps):
        d = torch.arccos((v @ centroid_xyz.T).clamp(-1 + 1e-6, 1 - 1e-6))
        w = weights / d.clamp_min(1e-3)
        v = w @ centroid_xyz
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    lat = torch.rad2deg(torch.asin(v[:, 2].clamp(-1, 1)))
    lon = torch.rad2deg(torch.atan2(v[:, 1], v[:, 0]))
    return torch.stack([lat, lon], dim=-1)


def train_classifier(
    X: torch.Tensor,
    y: np.ndarray,
    X_val: torch.Tensor | None,
    y_val: np.ndarray | None,
    k: int,
    cfg: TrainConfig,
    targets: np.ndarray | None = None,
) -> tuple[CentroidClassifier, dict[str, float]]:
    """Fit the centroid classifier of kind ``cfg.classifier`` on standardised features.

    ``targets`` (N, K) are the linear classifier's soft targets (default: one-hot ``y``).
    """
    with torch_threads(training_threads(len(X))):
        if cfg.classifier == "linear":
            return _train_linear(X, y, X_val, y_val, k, cfg, targets)
        if cfg.classifier != "mlp":
            raise ValueError(f"unknown classifier {cfg.classifier!r}; choose one of {', '.join(defaults.CLASSIFIERS)}")
        return _train_mlp(X, y, X_val, y_val, k, cfg, targets if cfg.mlp_soft_targets else None)


def _train_linear(
    X: torch.Tensor,
    y: np.ndarray,
    X_val: torch.Tensor | None,
    y_val: np.ndarray | None,
    k: int,
    cfg: TrainConfig,
    targets: np.ndarray | None,
) -> tuple[CentroidClassifier, dict[str, float]]:
    proj, p = whitening(X, cfg.pca_dim)
    Z = X @ proj
    T = torch.from_numpy(targets if targets is not None else one_hot_targets(y, k))
    W, b = fit_softmax(Z, T, cfg.l2)
    model = CentroidClassifier(X.shape[1], k, p, kind="linear")
    whiten, out = model.net[1], model.net[4]
    if not (isinstance(whiten, nn.Linear) and isinstance(out, nn.Linear)):
        raise TypeError("the linear classifier's layout changed: net[1] and net[4] must be Linear")
    with torch.no_grad():
        whiten.weight.copy_(proj.T)
        whiten.bias.zero_()
        out.weight.copy_(W.T)
        out.bias.copy_(b)
    model.eval()
    metrics = {"best_epoch": 0.0, "val_accuracy": 0.0}
    if X_val is not None and y_val is not None and len(y_val):
        with torch.no_grad():
            metrics["val_accuracy"] = float((model(X_val).argmax(1).numpy() == y_val).mean())
    return model, metrics


def mlp_batch_size(n: int, cfg: TrainConfig) -> int:
    """``cfg.batch_size``, grown so that an epoch is at most ``cfg.max_steps_per_epoch`` steps.

    Training cost then grows linearly with the rows instead of faster, and a
    busy machine is not asked for thousands of tiny steps.
    """
    return max(cfg.batch_size, -(-n // cfg.max_steps_per_epoch))


def mlp_epochs(n: int, cfg: TrainConfig) -> int:
    """Epochs of the MLP on ``n`` rows: ``max_epochs``, fewer once ``max_samples`` rows would be exceeded."""
    return max(1, min(cfg.max_epochs, -(-cfg.max_samples // max(1, n))))


def mlp_members(n: int, cfg: TrainConfig) -> int:
    """Ensemble members the sample budget pays for: ``cfg.members`` on small data, one from ~33k rows on.

    Each member is trained apart, from its own seed, so each costs full passes
    over the data; the budget (``max_samples`` rows in all) keeps the cost of
    training flat in the data size, ensemble or not.
    """
    return max(1, min(cfg.members, cfg.max_samples // max(1, n * mlp_epochs(n, cfg))))


def one_hot_targets(y: np.ndarray, k: int, smoothing: float = 0.0) -> np.ndarray:
    """(N, K) one-hot rows of ``y``, label-smoothed as ``cross_entropy(label_smoothing=...)`` does."""
    t = np.full((len(y), k), smoothing / k, dtype=np.float32)
    t[np.arange(len(y)), np.asarray(y, dtype=np.int64)] += 1.0 - smoothing
    return t


def _train_mlp(
    X: torch.Tensor,
    y: np.ndarray,
    X_val: torch.Tensor | None,
    y_val: np.ndarray | None,
    k: int,
    cfg: TrainConfig,
    targets: np.ndarray | None = None,
) -> tuple[CentroidClassifier, dict[str, float]]:
    """The paper's classifier: AdamW + cross-entropy (on soft ``targets`` when given), keeping the best validation epoch.

    An ensemble (:func:`mlp_members`) trains its members side by side (:func:`_train_members`), each from its own
    seed and stopped at its own best epoch, in one module that runs them as a single batched product.
    """
    soft = torch.from_numpy(targets if targets is not None else one_hot_targets(y, k, 0.05))
    seeds = [cfg.seed + 7919 * i for i in range(mlp_members(len(X), cfg))]
    return _train_members(X, soft, X_val, y_val, k, cfg, seeds)


def _init_member(dim: int, k: int, cfg: TrainConfig, seed: int) -> tuple[nn.Linear, nn.Linear]:
    """A single MLP's two layers as initialised from ``seed`` (the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CentroidClassifier(dim, k, cfg.hidden, cfg.dropout)
    first, out = model.net[1], model.net[4]
    if not (isinstance(first, nn.Linear) and isinstance(out, nn.Linear)):
        raise TypeError("the MLP's layout changed: net[1] and net[4] must be Linear")
    return first, out


def _member_dropout(x: torch.Tensor, p: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Dropout of each member's slice of ``x`` (members, rows, width), its mask drawn from that member's generator."""
    if p <= 0:
        return x
    keep = torch.stack([torch.rand(x.shape[1:], generator=g) for g in gens]) >= p
    return x * keep / (1.0 - p)


def _train_members(
    X: torch.Tensor,
    soft: torch.Tensor,
    X_val: torch.Tensor | None,
    y_val: np.ndarray | None,
    k: int,
    cfg: TrainConfig,
    seeds: list[int],
) -> tuple[CentroidClassifier, dict[str, float]]:
    """One MLP per seed, trained side by side and early-stopped each on its own validation accuracy; packed in one module.

    Each member draws its initialisation, batch order and dropout from its own seed, as if trained alone: the loss
    is the sum of the members' losses, so each one's gradient is its own, and AdamW updates element by element. A
    member is the MLP its seed trains alone (a test checks it); one batched product a step for all of them is
    what makes an ensemble cheap on a CPU (``benchmarks/bench_members.py``).
    """
    m, n = len(seeds), len(X)
    layers = [_init_member(X.shape[1], k, cfg, s) for s in seeds]
    w1 = nn.Parameter(torch.stack([a.weight.detach().T for a, _ in layers]).contiguous())  # (members, dim, hidden)
    b1 = nn.Parameter(torch.stack([a.bias.detach() for a, _ in layers])[:, None, :].clone())
    w2 = nn.Parameter(torch.stack([b.weight.detach().T for _, b in layers]).contiguous())  # (members, hidden, K)
    b2 = nn.Parameter(torch.stack([b.bias.detach() for _, b in layers])[:, None, :].clone())
    params = [w1, b1, w2, b2]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    val = (X_val, torch.from_numpy(np.asarray(y_val, dtype=np.int64))) if X_val is not None and y_val is not None and len(y_val) else None

    def snapshot(i: int) -> list[torch.Tensor]:
        return [p[i].detach().clone() for p in params]

    best = [snapshot(i) for i in range(m)]
    best_acc, best_epoch, bad, done = [-1.0] * m, [0] * m, [0] * m, [False] * m
    batch = mlp_batch_size(n, cfg)
    for epoch in range(mlp_epochs(n, cfg)):
        perms = [torch.randperm(n, generator=g) for g in gens]
        for start in range(0, n, batch):
            idx = torch.stack([p[start : start + batch] for p in perms])
            h = torch.relu(torch.baddbmm(b1, _member_dropout(X[idx], cfg.dropout / 2, gens), w1))
            logits = torch.baddbmm(b2, _member_dropout(h, cfg.dropout, gens), w2)
            loss = -(soft[idx] * torch.log_softmax(logits, dim=-1)).sum(-1).mean(-1).sum()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        if val is None:
            best, best_epoch = [snapshot(i) for i in range(m)], [epoch] * m
            continue
        with torch.no_grad():
            h = torch.relu(torch.einsum("nd,mdh->mnh", val[0], w1) + b1)
            acc = (torch.baddbmm(b2, h, w2).argmax(-1) == val[1]).float().mean(-1).tolist()
        for i in range(m):
            if done[i]:
                continue
            if acc[i] > best_acc[i]:
                best[i], best_acc[i], best_epoch[i], bad[i] = snapshot(i), acc[i], epoch, 0
            else:
                bad[i] += 1
                done[i] = bad[i] >= cfg.patience
        if all(done):
            break
    model = _pack(best, X.shape[1], k, cfg)
    if m == 1:
        return model, {"val_accuracy": max(best_acc[0], 0.0), "best_epoch": float(best_epoch[0])}
    metrics = {"best_epoch": float(np.mean(best_epoch)), "val_accuracy": 0.0, "members": m}
    if val is not None:
        with torch.no_grad():
            metrics["val_accuracy"] = float((model(val[0]).argmax(1) == val[1]).float().mean())
    return model, metrics


def _pack(members: list[list[torch.Tensor]], dim: int, k: int, cfg: TrainConfig) -> CentroidClassifier:
    """Each member's (w1, b1, w2, b2) as trained by :func:`_train_members` → one :class:`CentroidClassifier`."""
    with torch.random.fork_rng(devices=[]):
        model = CentroidClassifier(dim, k, cfg.hidden, cfg.dropout, members=len(members))
    first, out = model.net[1], model.net[4]
    if not (isinstance(first, nn.Linear) and isinstance(out, nn.Linear | MemberLinear)):
        raise TypeError("the MLP's layout changed: net[1] must be Linear and net[4] Linear or MemberLinear")
    with torch.no_grad():
        first.weight.copy_(torch.cat([w1.T for w1, _, _, _ in members]))
        first.bias.copy_(torch.cat([b1[0] for _, b1, _, _ in members]))
        if isinstance(out, MemberLinear):
            out.weight.copy_(torch.stack([w2 for _, _, w2, _ in members]))
            out.bias.copy_(torch.stack([b2[0] for _, _, _, b2 in members]))
        else:
            out.weight.copy_(members[0][2].T)
            out.bias.copy_(members[0][3][0])
    return model.eval()


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
    with torch_threads(training_threads(len(probs))):
        return _train_head(probs, target_latlon, centroids_latlon, cfg, weight_decay)


def _train_head(
    probs: torch.Tensor, target_latlon: np.ndarray, centroids_latlon: np.ndarray, cfg: TrainConfig, weight_decay: float
) -> tuple[InterpolationHead, list[float]]:
    torch.manual_seed(cfg.seed)
    steps = median_steps_for(target_latlon) if cfg.median_steps is None else cfg.median_steps
    head = InterpolationHead(centroids_latlon, cfg.head_hidden, steps)
    t = torch.tensor(target_latlon, dtype=torch.float32)
    _start_at_best_temperature(head, probs, t)
    decayed: list[nn.Parameter] = []
    kept: list[nn.Parameter] = []
    for name, param in head.named_parameters():
        (decayed if name.startswith("mlp.") and name.endswith(".weight") else kept).append(param)
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}], lr=cfg.head_lr)
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


#: Temperatures tried before the head trains (1 = trust the classifier as it is, 0 = ignore it: the mean of the centroids).
START_TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def _start_at_best_temperature(head: InterpolationHead, probs: torch.Tensor, target: torch.Tensor) -> None:
    """Zero the MLP's output and set the temperature with the lowest training loss.

    The head then starts as ``softmax(tau * log p)``, the best pure
    re-tempering of the classifier, and training refines from there. A head
    started at tau = 1 needs hundreds of steps to reach a classifier that is
    far too sure (in-sample probabilities) or far too unsure (a regularised
    linear model out of fold).
    """
    last = head.mlp[2]
    if not isinstance(last, nn.Linear):
        raise TypeError("the head's MLP must end in a Linear layer")
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        losses = []
        for tau in START_TEMPERATURES:
            head.temperature.fill_(tau)
            pred = head(probs)
            losses.append(float(haversine_km_torch(pred[:, 0], pred[:, 1], target[:, 0], target[:, 1]).mean()))
        head.temperature.fill_(START_TEMPERATURES[int(np.argmin(losses))])


def crossfit_probs(
    X: torch.Tensor,
    y: np.ndarray,
    groups: np.ndarray,
    k: int,
    cfg: TrainConfig,
    targets: np.ndarray | None = None,
    epochs: int | None = None,
) -> torch.Tensor:
    """Out-of-group probabilities: each image scored by a classifier that never saw its group.

    ``groups`` mimic what the test images hold out: their city (unseen
    cities) or their place (unseen places of seen cities). ``epochs``: how
    long the full classifier trained (see :func:`fold_budget`).
    """
    out = torch.zeros(len(X), k)
    fold_cfg = fold_budget(cfg, epochs)
    for held in group_folds(groups, cfg.crossfit_folds, cfg.seed):
        fold_targets = targets[~held] if targets is not None else None
        model, _ = train_classifier(X[~held], y[~held], None, None, k, fold_cfg, fold_targets)
        out[held] = predict_proba(model, X[held])
    return out


def group_folds(groups: np.ndarray, n_folds: int, seed: int = 0) -> list[np.ndarray]:
    """Boolean masks of ``n_folds`` folds (fewer when there are fewer groups) that each hold out whole ``groups``, seeded."""
    uniq = np.array(sorted(set(groups.tolist())))
    rng = np.random.default_rng(seed)
    return [np.isin(groups, fold) for fold in np.array_split(uniq[rng.permutation(len(uniq))], min(n_folds, len(uniq)))]


def fold_budget(cfg: TrainConfig, epochs: int | None = None) -> TrainConfig:
    """A crossfit fold classifier's budget: the full classifier's ``epochs``, within a third of its epochs and samples.

    A fold classifier has no validation split to stop it. Trained for as many
    epochs as the full classifier's members chose, it gives the head
    probabilities as sharp as those the full classifier will give it at test;
    on real Street View that was 11 epochs instead of 20, at the same error
    (docs/method.md). The third caps the cost of the five folds, so crossfit
    stays within the full classifier's budget on large data.
    """
    c = copy.copy(cfg)
    c.max_epochs = max(5, cfg.max_epochs // 3)
    if epochs is not None:
        c.max_epochs = max(1, min(c.max_epochs, epochs))
    c.max_samples = max(1, cfg.max_samples // 3)
    return c


def trained_epochs(fit: ClassifierFit) -> int | None:
    """Epochs the fitted MLP's members needed (their mean best epoch + 1); None when unknown or not an MLP."""
    best = fit.metrics.get("best_epoch")
    if fit.classifier.kind != "mlp" or best is None:
        return None
    return int(round(best)) + 1


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
    #: (width, height) its training photos were framed to; None: the 4:3 default (400, 300).
    frame: tuple[int, int] | None = None
    #: How its backbone looked at them (input height, mirror averaging); None: the backbone's default.
    view: View | None = None
    #: The ``finetune`` stage's file (its bytes) when the backbone's last stages were fine-tuned, and its fingerprint.
    finetuned: bytes | None = None
    weights_id: str | None = None
    #: The nearest training photos' vote mixed into the classifier's distribution (worldwide data); None: the classifier's alone.
    retrieval: Retrieval | None = None

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) lat/lon before land snapping, and (N, K) distributions over the centroids (the classifier's, with retrieval's vote)."""
        probs = predict_proba(self.classifier, self.standardiser(X)).numpy()
        if self.retrieval is not None:
            probs = self.retrieval.blend(probs, X)
        with torch.no_grad():
            latlon = self.head(torch.from_numpy(probs)).numpy().astype(np.float64)
        return latlon, probs

    def locate(self, probs: np.ndarray) -> np.ndarray:
        """(N, 2) lat/lon before land snapping for (N, K) distributions over the centroids: the interpolation head alone."""
        with torch.no_grad():
            out: np.ndarray = self.head(torch.from_numpy(np.asarray(probs, dtype=np.float32))).numpy().astype(np.float64)
        return out


@dataclass
class ClassifierFit:
    """Stage 1 of worldNET: the feature standardiser and the frozen centroid classifier."""

    standardiser: Standardiser
    classifier: CentroidClassifier
    metrics: dict[str, float] = field(default_factory=dict)


def fit_classifier(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    k: int,
    cfg: TrainConfig | None = None,
    targets: np.ndarray | None = None,
) -> ClassifierFit:
    """Standardise features and train the centroid classifier (the MLP is early-stopped on ``X_val``).

    ``targets``: the linear classifier's soft targets (see :func:`classifier_targets`).
    """
    cfg = cfg or TrainConfig()
    std, Xt = Standardiser.fit_transform(X_train, cfg.feature_power)
    has_val = len(X_val) > 0
    clf, m = train_classifier(Xt, y_train, std(X_val) if has_val else None, y_val if has_val else None, k, cfg, targets)
    m["train_accuracy"] = float((predict_proba(clf, Xt).argmax(1).numpy() == y_train).mean())
    return ClassifierFit(std, clf, m)


def classifier_targets(latlon: np.ndarray, centroids_latlon: np.ndarray, labels: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """The classifier's training targets: haversine-smoothed over centroids (one-hot when ``target_tau_km`` is 0)."""
    tau = centroid_spacing_km(centroids_latlon) if cfg.target_tau_km is None else cfg.target_tau_km
    return smoothed_targets(latlon, centroids_latlon, labels, tau)


def centroid_spacing_km(centroids_latlon: np.ndarray) -> float:
    """The median distance from each centroid to its nearest neighbour: the smoothing scale of the classifier's targets.

    Smoothing at this scale lets a photo between two clusters count for both,
    and nothing farther. It follows the data: 150 km suits cells of one region
    (and was the fixed default there), while clusters of worldwide photos sit
    hundreds of km apart, where 600 km beat 150 (docs/worldwide.md).
    """
    c = np.asarray(centroids_latlon, dtype=np.float64)
    if len(c) < 2:
        return 0.0
    xyz = latlon_to_xyz(c[:, 0], c[:, 1])
    cos = np.clip(xyz @ xyz.T, -1.0, 1.0)
    np.fill_diagonal(cos, -1.0)
    return float(np.median(np.arccos(cos.max(axis=1))) * EARTH_RADIUS_KM)


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
    outer_groups: np.ndarray | None = None,
    head_rows: np.ndarray | None = None,
) -> WorldNet:
    """Stage 2: with the classifier frozen, train the interpolation head (see module docs for ``mode``).

    ``outer_groups`` (crossfit with ``cfg.calibrate_on_groups``): coarser groups (cities, countries) whose
    held-out folds add a second copy of the training rows, scored by classifiers that never saw their group.
    ``head_rows`` (a mask over the training rows): the rows the head is fitted on, all by default. With a
    fine-tuned backbone these are the rows it did not train on: their probabilities look like a new photo's
    (docs/method.md, "Fine-tuning"); the fold classifiers still learn from every row.
    """
    _check_head_mode(mode)
    cfg = cfg or TrainConfig()
    k = len(centroids_latlon)
    Xt = fit.standardiser(X_train)
    use_retrieval = is_worldwide(latlon_train) if cfg.retrieval is None else cfg.retrieval
    retrieval = Retrieval.fit(X_train, y_train, k, seed=cfg.seed) if use_retrieval else None
    fold_groups = [groups_train]  # what each copy of the training rows holds out (the head's rows, in order)
    if mode == "crossfit":
        targets = classifier_targets(latlon_train, centroids_latlon, y_train, cfg)
        probs = crossfit_probs(Xt, y_train, groups_train, k, cfg, targets, trained_epochs(fit))
        if cfg.calibrate_on_groups and outer_groups is not None and len(set(outer_groups.tolist())) >= 2:
            outer = crossfit_probs(Xt, y_train, outer_groups, k, cfg, targets, trained_epochs(fit))
            probs, latlon_train = torch.cat([probs, outer]), np.concatenate([latlon_train, latlon_train])
            fold_groups.append(outer_groups)
        weight_decay = cfg.crossfit_weight_decay
    else:
        probs, weight_decay = predict_proba(fit.classifier, Xt), cfg.head_weight_decay
    if retrieval is not None:  # each row's vote from the other folds' photos, as a new photo's comes from the training photos
        E = embed(X_train, retrieval.mean)
        v = np.concatenate(
            [fold_votes(E, y_train, group_folds(g, cfg.crossfit_folds, cfg.seed), k, retrieval.k, retrieval.tau) for g in fold_groups]
        )
        none = v.sum(axis=1) == 0  # no other fold to vote (a single group): the classifier's distribution alone
        v[none] = probs.numpy()[none]
        probs = torch.from_numpy(mix_votes(probs.numpy(), v, retrieval.mix))
    if head_rows is not None:
        keep = np.concatenate([head_rows] * (len(probs) // len(head_rows)))
        probs, latlon_train = probs[torch.from_numpy(keep)], latlon_train[keep]
    head, losses = train_head(probs, latlon_train, centroids_latlon, cfg, weight_decay)
    metrics = {**fit.metrics, "head_final_loss_km": losses[-1], "head_weight_decay": weight_decay}
    metrics["retrieval"] = float(retrieval is not None)
    return WorldNet(fit.standardiser, fit.classifier, head, centroids_latlon, centroid_names, mode, metrics, retrieval=retrieval)


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
    cfg = cfg or TrainConfig()
    targets = classifier_targets(latlon_train, centroids_latlon, y_train, cfg)
    fit = fit_classifier(X_train, y_train, X_val, y_val, len(centroids_latlon), cfg, targets)
    return fit_interpolation(fit, X_train, y_train, latlon_train, groups_train, centroids_latlon, centroid_names, mode, cfg)
