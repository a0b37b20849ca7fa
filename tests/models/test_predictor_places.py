"""Several photos of one place, one answer: the views' distributions combined (normalised geometric mean), then the head."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worldnet.models.predictor import VIEW_FLOOR, Predictor, combine_views, save_worldnet
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet

CENTROIDS = np.array([[40.4, -3.7], [13.7, 100.5], [42.4, -71.1]])
NAMES = ["Madrid", "Bangkok", "Boston"]


#: Each cluster's photos are noise over a colour of their own, so the classifier is sure of some photos and torn on others.
COLOURS = np.array([[200, 60, 50], [60, 180, 70], [50, 80, 200]])


def _jpeg(colour, seed: int, size=(96, 72)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour)[None, None, :] + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    """A worldNET over the tiny random backbone (3 clusters, 64x48 frame), its linear classifier fitted in a second on the
    features of 60 coloured photos: red is Madrid, green Bangkok, blue Boston."""
    cfg = TrainConfig(classifier="linear", pca_dim=16, head_epochs=20, target_tau_km=150.0, retrieval=False)  # the classifier's own
    rng = np.random.default_rng(0)
    # the backbone does not depend on the model: load it with a model fitted on random features, then fit the real one
    Xr, yr = rng.normal(size=(30, 32)).astype(np.float32), np.arange(30) % 3
    first = fit_worldnet(Xr, yr, CENTROIDS[yr], yr.astype(str), Xr[:6], yr[:6], CENTROIDS, NAMES, cfg=cfg)
    first.frame = (64, 48)
    backbone = Predictor.load(save_worldnet(first, tmp_path_factory.mktemp("model") / "first.pt", backbone="tiny_random")).backbone
    y = np.arange(60) % 3
    X = Predictor(first, backbone).features([_jpeg(COLOURS[c], seed=i) for i, c in enumerate(y)])
    latlon = CENTROIDS[y] + rng.normal(scale=0.2, size=(60, 2))
    wn = fit_worldnet(X, y, latlon, y.astype(str), X[:15], y[:15], CENTROIDS, NAMES, cfg=cfg)
    wn.frame = (64, 48)
    return Predictor.load(save_worldnet(wn, tmp_path_factory.mktemp("model") / "worldnet.pt", backbone="tiny_random"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """A red photo (Madrid, sure), a red-blue one (torn between Madrid and Boston), a green one and a blue one."""
    folder = tmp_path_factory.mktemp("photos")
    colours = [COLOURS[0], (COLOURS[0] + COLOURS[2]) // 2, COLOURS[1], COLOURS[2]]
    paths = []
    for i, colour in enumerate(colours):
        (folder / f"view{i}.jpg").write_bytes(_jpeg(colour, seed=100 + i))
        paths.append(str(folder / f"view{i}.jpg"))
    return paths


def _dist(pred) -> np.ndarray:
    """A prediction's distribution over all three clusters (top_k=3), in centroid order."""
    d = dict(pred.top_clusters)
    return np.array([d[n] for n in NAMES])


def test_combine_views_is_the_normalised_geometric_mean():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], np.float32)
    by_hand = np.cbrt(p[0] * p[1] * p[2])
    np.testing.assert_allclose(combine_views(p), by_hand / by_hand.sum(), rtol=1e-6)
    assert combine_views(p).dtype == np.float32 and abs(combine_views(p).sum() - 1) < 1e-6
    # not the mixture: the mean of probabilities would favour Madrid (0.37); every view allowing Bangkok wins here
    assert np.argmax(p.mean(0)) == 0 and np.argmax(combine_views(p)) == 1
    np.testing.assert_array_equal(combine_views(p[:1]), p[0])  # one view is its own distribution, bit for bit
    np.testing.assert_allclose(combine_views(np.repeat(p[:1], 5, axis=0)), p[0], rtol=1e-6)
    # a view that rules a cluster out lowers it by a bounded amount (the head's floor), never to zero
    vetoed = combine_views(np.array([[0.0, 0.5, 0.5], [0.98, 0.01, 0.01]], np.float32))
    assert vetoed[0] > 0 and np.isclose(vetoed[0] / vetoed[1], np.sqrt(VIEW_FLOOR * 0.98 / (0.5 * 0.01)), rtol=1e-4)
    with pytest.raises(ValueError, match="views, centroids"):
        combine_views(np.zeros((0, 3)))


def test_a_place_of_one_photo_answers_exactly_as_the_photo(predictor, photos):
    (single,) = predictor.predict_paths(photos[:1])
    place = predictor.predict_place(photos[:1], place="corner")
    assert place.status == "ok" and place.used == photos[:1] and place.prediction is not None
    assert place.prediction.path == "corner"
    assert (place.prediction.lat, place.prediction.lon, place.prediction.top_clusters, place.prediction.snapped_km) == (
        single.lat,
        single.lon,
        single.top_clusters,
        single.snapped_km,
    )
    assert place.views[0].prediction == single  # the photo's own answer is unchanged too


def test_copies_of_one_photo_answer_as_the_photo(predictor, photos):
    (single,) = predictor.predict_paths(photos[:1], top_k=3)
    place = predictor.predict_place([photos[0]] * 3, top_k=3)
    assert place.prediction is not None and len(place.used) == 3
    np.testing.assert_allclose(_dist(place.prediction), _dist(single), rtol=1e-5)
    assert abs(place.prediction.lat - single.lat) < 1e-3 and abs(place.prediction.lon - single.lon) < 1e-3


def test_two_views_combine_into_their_geometric_mean_and_differ_from_each(predictor, photos):
    a, b = predictor.predict_paths(photos[:2], top_k=3)
    pa, pb = _dist(a), _dist(b)
    assert pa[0] > 0.8 and 0.3 < pb[0] < 0.7 and 0.3 < pb[2] < 0.7, (pa, pb)  # sure of Madrid; torn
    place = predictor.predict_place(photos[:2], top_k=3)
    assert place.prediction is not None and place.used == photos[:2]
    by_hand = np.sqrt(pa * pb)
    by_hand /= by_hand.sum()
    combined = _dist(place.prediction)
    np.testing.assert_allclose(combined, by_hand, rtol=1e-4)
    assert np.abs(combined - (pa + pb) / 2).max() > 0.05  # not the mixture of the two
    assert np.abs(combined - pa).max() > 1e-4 and np.abs(combined - pb).max() > 1e-4
    # the place goes through the head like any distribution: the hand-made one lands in the same spot
    (hand,) = predictor.predict_distributions(by_hand[None].astype(np.float32), ["hand"], top_k=3)
    assert abs(hand.lat - place.prediction.lat) < 1e-3 and abs(hand.lon - place.prediction.lon) < 1e-3
    # the order of the views does not matter
    swapped = predictor.predict_place(photos[1::-1], top_k=3).prediction
    assert swapped is not None and abs(swapped.lat - place.prediction.lat) < 1e-6 and abs(swapped.lon - place.prediction.lon) < 1e-6


def test_unreadable_views_are_reported_and_the_others_answer(predictor, photos, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    missing = str(tmp_path / "gone.jpg")
    place = predictor.predict_place([photos[0], missing, str(text), photos[1]], top_k=3)
    assert [v.status for v in place.views] == ["ok", "unreadable", "unreadable", "ok"]
    assert "no such file" in place.views[1].error and "notes.jpg" in place.views[2].error
    assert place.status == "ok" and place.used == [photos[0], photos[1]]
    readable = predictor.predict_place([photos[0], photos[1]], top_k=3)
    assert place.prediction is not None and readable.prediction is not None
    assert abs(place.prediction.lat - readable.prediction.lat) < 1e-6 and abs(place.prediction.lon - readable.prediction.lon) < 1e-6
    d = place.as_dict()
    assert d["n_photos"] == 4 and d["n_views"] == 2 and d["views_used"] == [photos[0], photos[1]]
    assert [v["status"] for v in d["views"]] == ["ok", "unreadable", "unreadable", "ok"]  # type: ignore[index, union-attr]


def test_uploaded_views_keep_their_own_answers_and_a_place_with_none_readable_says_so(predictor, photos):
    good = [open(p, "rb").read() for p in photos[:2]]  # noqa: SIM115 - read whole, closed by the GC
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 200, 30)).save(buf, format="JPEG")
    datas = [good[0], b"hello, text", buf.getvalue()[:300], good[1]]
    names = ["a.jpg", "notes.jpg", "cut.jpg", "b.jpg"]
    place = predictor.answer_place(datas, names, top_k=2)
    each = predictor.answer(datas, names, top_k=2)
    assert [v.as_dict() for v in place.views] == [a.as_dict() for a in each]  # per-photo answers as without --place
    assert [v.status for v in place.views] == ["ok", "not_an_image", "corrupt_image", "ok"]
    assert place.status == "ok" and place.used == ["a.jpg", "b.jpg"] and len(place.prediction.top_clusters) == 2  # type: ignore[union-attr]
    nothing = predictor.answer_place([b"", b"text"], ["empty.jpg", "notes.jpg"])
    assert nothing.status == "no_readable_view" and nothing.prediction is None and nothing.used == []
    assert "empty.jpg: empty" in nothing.error and "notes.jpg: not_an_image" in nothing.error
    assert "lat" not in nothing.as_dict() and nothing.as_dict()["n_views"] == 0
