"""Feature extraction: aligned, resumable after a SIGKILL, same output whichever decode path."""

import textwrap

import numpy as np
import pytest
import torch

from tests.resume import assert_kill_and_rerun_identical
from worldnet.data.ingest import ingest
from worldnet.data.shards import ShardSpec, write_shards
from worldnet.data.split import make_splits
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.features.backbones import build_backbone
from worldnet.features.extract import extract_features, load_features
from worldnet.features.preprocess import normalise_batch

CITIES = ["Madrid", "Bangkok", "Boston", "Melbourne"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    generate(SynthConfig(out=root / "w", cities=CITIES, per_city=12, size=(64, 48)), progress=False)
    m, _ = ingest("gsv_cities", root / "w")
    t = m.join(make_splits(m, n_unseen=1), on="image_id")
    write_shards(t, root / "shards", ShardSpec(shard_size=8, width=64, height=48), workers=1, progress=False)
    return root / "shards", t


def test_features_are_aligned_with_image_ids(shards, tmp_path):
    shards_dir, table = shards
    res = extract_features(build_backbone("tiny_random"), shards_dir, tmp_path / "f", progress=False)
    X, labels = load_features(tmp_path / "f")
    assert res.images == table.height == X.shape[0]
    assert labels["image_id"].to_list() == sorted(table["image_id"].to_list())
    assert np.isfinite(X).all() and X.std(0).max() > 0


def test_decode_processes_give_the_same_features_as_in_process_decoding(shards, tmp_path):
    shards_dir, _ = shards
    b = build_backbone("tiny_random")
    extract_features(b, shards_dir, tmp_path / "a", loader_workers=0, batch_size=5, progress=False)
    extract_features(b, shards_dir, tmp_path / "b", loader_workers=2, batch_size=3, progress=False)
    Xa, la = load_features(tmp_path / "a")
    Xb, lb = load_features(tmp_path / "b")
    assert la.equals(lb)
    np.testing.assert_allclose(Xa, Xb, atol=2e-3)  # float16 storage; batch size changes summation order only


def test_killed_extraction_resumes_to_identical_feature_shards(shards, tmp_path):
    shards_dir, _ = shards
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import worldnet.features.extract as ex
        from worldnet.features.backbones import build_backbone
        kill_after = int(sys.argv[2]) if len(sys.argv) > 2 else -1
        real = ex._write_feature_shard
        count = [0]
        def wrapped(*a):
            if count[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            count[0] += 1
            return real(*a)
        ex._write_feature_shard = wrapped
        ex.extract_features(build_backbone("tiny_random"), "{shards_dir}", sys.argv[1], progress=False)
        """
    )
    a = assert_kill_and_rerun_identical(script, tmp_path, kill_after=2, pattern="feat-*")
    assert len(a) == 3 * len(list(shards_dir.glob("shard-*.parquet")))  # .npy, provenance .json, .parquet index


def test_rerun_skips_complete_shards(shards, tmp_path):
    shards_dir, _ = shards
    b = build_backbone("tiny_random")
    first = extract_features(b, shards_dir, tmp_path / "f", progress=False)
    again = extract_features(b, shards_dir, tmp_path / "f", progress=False)
    assert first.written > 0 and again.written == 0 and again.skipped == first.written


def test_missing_shards_say_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="'shard' stage"):
        extract_features(build_backbone("tiny_random"), tmp_path, tmp_path / "f", progress=False)


def test_normalise_batch_matches_the_textbook_formula():
    spec = build_backbone("tiny_random").spec
    u8 = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    want = (u8.permute(0, 3, 1, 2).float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    got = normalise_batch(u8, spec)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want)


def test_only_named_shards_are_embedded_and_unknown_ones_are_named(shards, tmp_path):
    shards, _ = shards
    bb = build_backbone("tiny_random")
    res = extract_features(bb, shards, tmp_path / "f", only=["shard-00001.parquet"], threads=1, progress=False)
    assert res.written == 1 and sorted(p.name for p in (tmp_path / "f").glob("*.npy")) == ["feat-00001.npy"]
    with pytest.raises(FileNotFoundError, match="shard-09999.parquet"):
        extract_features(bb, shards, tmp_path / "f", only=["shard-09999.parquet"], progress=False)


#: CUDA (float16 autocast) vs CPU (float32), both stored as float16: the tolerance docs/scale-out.md states.
CUDA_MEAN_ABS_TOL = 1e-2
CUDA_MIN_COSINE = 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the CPU paths are tested above)")
def test_cuda_features_match_cpu_within_the_stated_tolerance(shards, tmp_path):
    shards, _ = shards
    bb = build_backbone("efficientnet_lite0")
    extract_features(bb, shards, tmp_path / "cpu", device="cpu", progress=False)
    extract_features(bb, shards, tmp_path / "cuda", device="cuda", progress=False)
    a, b = load_features(tmp_path / "cpu")[0], load_features(tmp_path / "cuda")[0]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert np.abs(a - b).mean() < CUDA_MEAN_ABS_TOL and cos.min() > CUDA_MIN_COSINE
