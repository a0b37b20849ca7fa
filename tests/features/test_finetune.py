"""Fine-tuning the last stages: honest rows, a resumable cache and training, weights that every engine uses."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from worldnet.data.ingest import ingest
from worldnet.data.shards import ShardSpec, shard_paths, write_shards
from worldnet.data.split import make_splits
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.features.backbones import build_backbone
from worldnet.features.engine import onnx_backbone
from worldnet.features.finetune import (
    FinetuneConfig,
    cache_activations,
    features_from_cache,
    finetune_rows,
    finetune_tail,
    load_finetuned,
    place_targets,
    save_finetuned,
    split_backbone,
)
from worldnet.features.names import View
from worldnet.features.onnx_graph import weights_fingerprint
from worldnet.features.preprocess import normalise_batch

CITIES = ["Madrid", "Bangkok", "Boston", "Melbourne"]
VIEW = View(64, True)  # small and mirrored: every code path, a second per epoch
BACKBONE = "efficientnet_lite0_random"  # Lite0's stages without its weights file: the same cuts, no ImageNet needed


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    generate(SynthConfig(out=root / "w", cities=CITIES, per_city=14, size=(64, 48)), progress=False)
    m, _ = ingest("gsv_cities", root / "w")
    t = m.join(make_splits(m, n_unseen=1), on="image_id")
    write_shards(t, root / "shards", ShardSpec(shard_size=16, width=64, height=48), workers=1, progress=False)
    return root, shard_paths(root / "shards")


def _labels(shards) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(s, columns=["image_id", "city", "lat", "lon", "place_id", "seen", "unseen"]) for s in shards])


def test_rows_train_only_where_every_protocol_trains_and_never_touch_a_test_photo():
    labels = pl.DataFrame(
        {
            "seen": ["train", "train", "train", "val", "test", "val"],
            "unseen": ["train", "test", "val", "train", "train", "val"],
        }
    )
    train, val = finetune_rows(labels, ["seen", "unseen"])
    assert train.tolist() == [True, False, False, False, False, False]
    assert val.tolist() == [False, False, True, True, False, True]  # validation somewhere, test nowhere
    train1, _ = finetune_rows(labels, ["seen"])
    assert train1.tolist() == [True, True, True, False, False, False]
    with pytest.raises(ValueError, match="training split of every protocol"):
        finetune_rows(labels.with_columns(pl.lit("test").alias("seen")), ["seen", "unseen"])


def test_the_cache_holds_photo_and_mirror_and_equals_the_backbone_front(world, tmp_path):
    _, shards = world
    bb = build_backbone(BACKBONE, frame=(64, 48), view=VIEW)
    acts = cache_activations(bb, 2, shards, tmp_path / "c", mirror=True, key="k", progress=False)
    labels = _labels(shards)
    assert acts.ids == labels["image_id"].to_list()
    assert acts.data.dtype == np.float16 and acts.data.shape[:2] == (labels.height, 2)
    # the features the tail makes from the cache are the backbone's own (float16 rounding aside)
    from worldnet.features.preprocess import decode_for

    raw = pl.read_parquet(shards[0], columns=["jpeg"])["jpeg"].to_list()[:3]
    x = torch.from_numpy(np.stack([decode_for(bb.spec, b) for b in raw]))
    with torch.inference_mode():
        want = bb(normalise_batch(x, bb.spec, channels_last=False)).numpy()
    got = features_from_cache(bb, acts, 2)[:3]
    np.testing.assert_allclose(got, want, rtol=0.02, atol=0.02)


def test_a_cache_of_another_key_or_a_rewritten_shard_is_recomputed(world, tmp_path):
    _, shards = world
    bb = build_backbone(BACKBONE, frame=(64, 48), view=VIEW)
    cache_activations(bb, 2, shards, tmp_path / "c", mirror=False, key="a", progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("act-*.npy")}
    cache_activations(bb, 2, shards, tmp_path / "c", mirror=False, key="a", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("act-*.npy")} == stamp  # reused
    acts = cache_activations(bb, 2, shards, tmp_path / "c", mirror=True, key="b", progress=False)
    assert acts.mirrored  # another key: recomputed, here with the mirror


def _train(world, tmp_path, cfg, **kw):
    _, shards = world
    bb = build_backbone(BACKBONE, frame=(64, 48), view=VIEW)
    acts = cache_activations(bb, cfg.stages, shards, tmp_path / "cache", mirror=True, key="k", progress=False)
    labels = _labels(shards)
    train, val = finetune_rows(labels, ["seen", "unseen"])
    t_tr, keep, t_va, _ = place_targets(labels.filter(pl.Series(train)), labels.filter(pl.Series(val)), "city", 0, 0)
    rows_tr, rows_va = np.flatnonzero(train), np.flatnonzero(val)[keep]
    res = finetune_tail(bb, acts, rows_tr, t_tr, rows_va, t_va, cfg, progress=False, **kw)
    return bb, acts, res


def test_training_moves_the_trained_stages_only_and_is_reproducible(world, tmp_path):
    cfg = FinetuneConfig(stages=2, epochs=2, patience=5, lr=1e-3)
    before = build_backbone(BACKBONE, frame=(64, 48), view=VIEW)
    bb, _, res = _train(world, tmp_path / "a", cfg)
    front0, tail0 = split_backbone(before, 2)
    front1, tail1 = split_backbone(bb, 2)
    for a, b in zip(front0.state_dict().values(), front1.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # frozen stages untouched
    assert any(not torch.equal(a, b) for a, b in zip(tail0.state_dict().values(), tail1.state_dict().values(), strict=True))
    assert len(res.history) == 2 and all(np.isfinite(h["train_loss"]) for h in res.history)
    _, _, again = _train(world, tmp_path / "b", cfg)
    for k, v in res.state.items():
        assert torch.equal(v, again.state[k]), k  # same seed, same weights


def test_a_killed_training_resumes_to_the_same_weights(world, tmp_path):
    cfg = FinetuneConfig(stages=1, epochs=3, patience=5, lr=1e-3)
    _, _, whole = _train(world, tmp_path / "whole", cfg)
    ckpt = tmp_path / "ckpt.pt"
    _, _, first = _train(world, tmp_path / "part", cfg, checkpoint=ckpt, stop_after=1)
    assert len(first.history) == 1 and ckpt.is_file()
    _, _, rest = _train(world, tmp_path / "part", cfg, checkpoint=ckpt)
    assert rest.resumed_from == 1 and len(rest.history) == 3
    for k, v in whole.state.items():
        assert torch.allclose(v, rest.state[k], atol=1e-6), k


def test_saved_stages_rebuild_the_backbone_and_name_their_own_onnx_graph(world, tmp_path):
    cfg = FinetuneConfig(stages=2, epochs=1)
    bb, _, res = _train(world, tmp_path, cfg)
    path = save_finetuned(tmp_path / "ft.pt", BACKBONE, 2, res.state, {"note": "test"})
    tuned = load_finetuned(path)
    assert tuned.stages == 2 and tuned.meta == {"note": "test"}
    from worldnet.features.finetune import apply_finetuned

    rebuilt = apply_finetuned(build_backbone(BACKBONE, frame=(64, 48), view=VIEW), tuned)
    h, w = bb.spec.input_size
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8))
    with torch.inference_mode():
        np.testing.assert_allclose(
            rebuilt(normalise_batch(x, rebuilt.spec, channels_last=False)).numpy(),
            bb(normalise_batch(x, bb.spec, channels_last=False)).numpy(),
            atol=1e-5,
        )
    graph = onnx_backbone(rebuilt, tmp_path / "graphs", "fp")  # exported and checked against torch, as every graph
    assert graph(x.numpy()).shape == (2, rebuilt.spec.dim)
    with pytest.raises(ValueError, match="not a worldnet fine-tuned backbone"):
        load_finetuned(tmp_path / "graphs" / graph.path.split("/")[-1])


def test_fine_tuned_weights_change_the_fingerprint(tmp_path):
    a = save_finetuned(tmp_path / "a.pt", "efficientnet_lite0", 1, {"w": torch.zeros(2)}, {})
    b = save_finetuned(tmp_path / "b.pt", "efficientnet_lite0", 1, {"w": torch.ones(2)}, {})
    base = weights_fingerprint("efficientnet_lite0")
    fa, fb = weights_fingerprint("efficientnet_lite0", str(a)), weights_fingerprint("efficientnet_lite0", str(b))
    assert fa.startswith(base + "-ft") and fb.startswith(base + "-ft") and fa != fb
    b.write_bytes(a.read_bytes())  # rewritten in place: hashed again
    assert weights_fingerprint("efficientnet_lite0", str(b)) == fa


def test_bad_settings_are_value_errors_that_name_the_setting():
    with pytest.raises(ValueError, match="stages"):
        FinetuneConfig(stages=0)
    with pytest.raises(ValueError, match="crop"):
        FinetuneConfig(crop=0.01)
    bb = build_backbone("tiny_random")
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        split_backbone(bb, 1)


def test_calibration_split_holds_out_whole_places_of_the_training_rows():
    from worldnet.features.finetune import calibration_split

    labels = pl.DataFrame({"image_id": [str(i) for i in range(40)], "city": ["A"] * 40, "place_id": [i // 4 for i in range(40)]})
    labels = labels.with_columns(lat=pl.lit(0.0), lon=pl.lit(0.0))
    train = np.arange(40) < 32
    tune = calibration_split(labels, train, 0.25, seed=0)
    assert not tune[32:].any()  # never beyond the training rows
    held = train & ~tune
    assert held.sum() == 8  # a quarter of the 8 training places, every view of each
    for p in set(labels["place_id"].to_numpy()[held].tolist()):
        assert not tune[labels["place_id"].to_numpy() == p].any()
    with pytest.raises(ValueError, match="share"):
        calibration_split(labels, train, 1.0)


def test_each_cv_fold_fine_tunes_on_its_own_training_photos_only(world, tmp_path):
    from worldnet.features.finetune import fold_finetuner

    _, shards = world
    bb = build_backbone(BACKBONE, frame=(64, 48), view=VIEW)
    acts = cache_activations(bb, 1, shards, tmp_path / "c", mirror=True, key="k", progress=False)
    labels = _labels(shards)
    seen_by: list[np.ndarray] = []
    import worldnet.features.finetune as ft

    real = ft.finetune_tail

    def spy(backbone, acts_, train_rows, *a, **kw):  # noqa: ANN001, ANN202
        seen_by.append(train_rows)
        return real(backbone, acts_, train_rows, *a, **kw)

    ft.finetune_tail = spy  # type: ignore[assignment]
    try:
        fn = fold_finetuner(lambda: build_backbone(BACKBONE, frame=(64, 48), view=VIEW), acts, labels, FinetuneConfig(stages=1, epochs=1))
        test = labels["city"].to_numpy() == CITIES[0]
        train, val = ~test & (np.arange(labels.height) % 5 != 0), ~test & (np.arange(labels.height) % 5 == 0)
        X, tuned = fn(train, val)
    finally:
        ft.finetune_tail = real  # type: ignore[assignment]
    assert X.shape == (labels.height, bb.spec.dim) and np.isfinite(X).all()
    assert set(seen_by[0].tolist()) == set(np.flatnonzero(tuned).tolist())
    assert not tuned[test].any() and not tuned[val].any() and (train & ~tuned).any()  # some training places left for the head


def test_the_crossfit_head_fits_on_photos_the_backbone_did_not_train_on():
    from worldnet.protocol import MIN_HEAD_ROWS, head_rows_for

    n = 2 * MIN_HEAD_ROWS + 10
    labels = pl.DataFrame({"seen": ["train"] * n})
    tuned = np.arange(n) < MIN_HEAD_ROWS + 10
    rows = head_rows_for(labels, "seen", tuned)
    assert rows is not None and rows.tolist() == (~tuned).tolist()
    assert head_rows_for(labels, "seen", np.arange(n) < n - 5) is None  # too few left: all rows, as without fine-tuning
    assert head_rows_for(labels, "seen", None) is None
