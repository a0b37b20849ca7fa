"""The ``finetune`` stage in the pipeline: recorded and cached, its stages used by extraction, the saved model and every engine."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from flows.pipeline import run_pipeline
from tasks.config import FINETUNE_CPU_PHOTO_EPOCHS, FINETUNE_MIN_EPOCHS, FINETUNE_MIN_PHOTOS, finetune_epochs, resolve_finetune
from tests.flows.conftest import small_cfg
from worldnet.features.finetune import load_finetuned
from worldnet.features.onnx_graph import weights_fingerprint
from worldnet.storage import sorted_glob

STAGES_TO_HEAD = [
    "ingest",
    "debias",
    "split",
    "shard",
    "finetune",
    "extract_features",
    "cluster",
    "train_classifier",
    "train_interpolation",
]


def _cfg(world, root, **kw):
    # pretrained Lite0 at a tiny view: the real stages, a few seconds of work
    base = replace(small_cfg(world, root), backbone="efficientnet_lite0", input_height=32, finetune_epochs=1, **kw)
    return base


def test_auto_fine_tunes_pretrained_lite_with_enough_photos_only():
    assert resolve_finetune("auto", "efficientnet_lite0", FINETUNE_MIN_PHOTOS, "cpu")[0]
    assert not resolve_finetune("auto", "efficientnet_lite0", FINETUNE_MIN_PHOTOS - 1, "cpu")[0]
    assert not resolve_finetune("auto", "tiny_random", 10_000, "cpu")[0]
    assert not resolve_finetune("auto", "efficientnet_lite0", 10**6, "cpu")[0]
    assert resolve_finetune("auto", "efficientnet_lite0", 10**6, "cuda")[0]
    assert not resolve_finetune("off", "efficientnet_lite0", 10**6, "cuda")[0]
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        resolve_finetune("on", "vgg19", 10, "cpu")
    with pytest.raises(ValueError, match="auto, on, off"):
        resolve_finetune("yes", "efficientnet_lite0", 10, "cpu")


def test_a_cpu_fine_tunes_within_its_photo_epoch_budget_and_cv_counts_every_fold():
    most = FINETUNE_CPU_PHOTO_EPOCHS // FINETUNE_MIN_EPOCHS  # the largest set a CPU fine-tunes by default
    assert resolve_finetune("auto", "efficientnet_lite0", most, "cpu")[0]
    off, why = resolve_finetune("auto", "efficientnet_lite0", most + 1, "cpu")
    assert not off and "photo-epochs" in why
    assert not resolve_finetune("auto", "efficientnet_lite0", most // 5 + 1, "cpu", backbones=5)[0]  # cv: one per fold
    assert resolve_finetune("on", "efficientnet_lite0", 10**6, "cpu", backbones=5)[0]
    assert finetune_epochs(None, 726, "cpu") == 8  # gsv_uswest's training photos: no cap
    assert finetune_epochs(None, 2558, "cpu") == 4  # street_world's
    assert finetune_epochs(None, most, "cpu") == FINETUNE_MIN_EPOCHS
    assert finetune_epochs(None, 10**6, "cuda") == 8
    assert finetune_epochs(2, 10**6, "cpu") == 2  # asked for: as asked


def test_fine_tuned_stages_reach_features_model_and_predictors_and_a_rerun_redoes_nothing(harness, world, tmp_path):
    cfg = _cfg(world, tmp_path / "root", finetune="on")
    out = run_pipeline(cfg, stages=STAGES_TO_HEAD)
    cat = cfg.catalog()
    tuned = load_finetuned(cat.path("finetuned_backbone"))
    assert tuned.stages == cfg.finetune_stages and out["finetune"]["finetuned"] is True
    labels_train = set(tuned.meta["train_ids"])  # type: ignore[arg-type]
    splits = cat.load("splits")
    trained = splits.filter(splits["image_id"].is_in(list(labels_train)))
    assert set(trained["seen"].to_list()) == {"train"} and set(trained["unseen"].to_list()) == {"train"}  # never a val or test photo
    # the feature shards say they are the fine-tuned backbone's
    sidecars = [json.loads(p.read_text()) for p in sorted_glob(cat.path("feature_shards"), "feat-*.json")]
    local = str(cat.path("finetuned_backbone"))
    assert {s["weights"] for s in sidecars} == {weights_fingerprint("efficientnet_lite0", local)}
    # the saved model carries the stages; the torch and the fast path answer alike
    from worldnet.models.fast import load_fast
    from worldnet.models.predictor import Predictor, load_worldnet

    model = cat.path("worldnet_model", protocol="seen", mode="crossfit")
    wn, _, _ = load_worldnet(model)
    assert wn.finetuned == cat.path("finetuned_backbone").read_bytes()
    photos = sorted((world / "Images").rglob("*.jpg"))[:3]
    slow = Predictor.load(model, engine="torch")
    fast = load_fast(model, graph_dirs=[cat.path("onnx_graphs")])
    for a, b in zip(slow.predict_paths([str(p) for p in photos]), fast.predict_paths([str(p) for p in photos]), strict=True):
        assert abs(a.lat - b.lat) < 0.05 and abs(a.lon - b.lon) < 0.05
    # a rerun: every stage up to date, the fine-tune cache untouched
    again = run_pipeline(cfg, stages=STAGES_TO_HEAD)
    assert set(again["states"].values()) == {"Up to date"}


def test_off_keeps_the_frozen_features_exactly(harness, world, tmp_path):
    off = _cfg(world, tmp_path / "off", finetune="off")
    run_pipeline(off, stages=["ingest", "debias", "split", "shard", "finetune", "extract_features"])
    cat = off.catalog()
    assert load_finetuned(cat.path("finetuned_backbone")).stages == 0
    sidecars = [json.loads(p.read_text()) for p in sorted_glob(cat.path("feature_shards"), "feat-*.json")]
    assert all("weights" not in s for s in sidecars)  # provenance as before fine-tuning existed: old features stay valid
    X = np.concatenate([np.load(p.with_suffix(".npy")) for p in sorted_glob(cat.path("feature_shards"), "feat-*.parquet")])
    assert np.isfinite(X).all()
