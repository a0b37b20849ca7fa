"""The interpolation head's spherical composition and the haversine loss it trains on."""

import numpy as np
import torch

from worldnet.geo.sphere import haversine_km, haversine_km_torch, latlon_to_xyz
from worldnet.models.worldnet_model import InterpolationHead, compose


def _xyz(latlon):
    a = np.asarray(latlon, float)
    return torch.tensor(latlon_to_xyz(a[:, 0], a[:, 1]), dtype=torch.float64)


def test_composition_across_the_antimeridian_stays_there():
    c = _xyz([[0.0, 179.0], [0.0, -179.0]])
    out = compose(torch.tensor([[0.5, 0.5]], dtype=torch.float64), c)
    # a lat/lon average would give lon 0, half the world away
    assert abs(abs(float(out[0, 1])) - 180.0) < 1e-6 and abs(float(out[0, 0])) < 1e-6


def test_one_hot_weights_return_the_centroid_and_mixtures_lie_on_the_great_circle():
    cents = [[48.85, 2.35], [40.71, -74.0], [-33.87, 151.21]]
    c = _xyz(cents)
    for i, (lat, lon) in enumerate(cents):
        w = torch.zeros(1, 3, dtype=torch.float64)
        w[0, i] = 1
        got = compose(w, c)[0]
        assert haversine_km(float(got[0]), float(got[1]), lat, lon) < 1e-6
    # 50/50 of Paris and New York: equidistant from both, on the shorter arc
    mid = compose(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64), c)[0]
    d1 = haversine_km(float(mid[0]), float(mid[1]), *cents[0])
    d2 = haversine_km(float(mid[0]), float(mid[1]), *cents[1])
    assert abs(d1 - d2) < 1e-6
    assert abs(d1 + d2 - haversine_km(*cents[0], *cents[1])) < 1e-6


def test_head_weights_are_a_distribution_and_start_near_the_classifier():
    head = InterpolationHead(np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]]), hidden=8)
    probs = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), -1)
    w = head.weights(probs)
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    assert (w > 0).all()


def test_haversine_loss_gradient_matches_finite_differences_through_the_composition():
    torch.manual_seed(0)
    c = _xyz([[51.5, -0.1], [40.4, -3.7], [35.7, 139.7], [-23.5, -46.6]])
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[48.9, 2.3], [10.0, 100.0], [-10.0, -50.0]], dtype=torch.float64)

    def loss(z):
        p = compose(torch.softmax(z, -1), c)
        return haversine_km_torch(p[:, 0], p[:, 1], target[:, 0], target[:, 1]).mean()

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-4)
    # and the gradient points downhill
    g = torch.autograd.grad(loss(logits), logits)[0]
    with torch.no_grad():
        assert loss(logits - 1e-3 * g) < loss(logits)
