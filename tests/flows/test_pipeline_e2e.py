"""The whole chain on a tiny world: real Prefect (test harness), real SQLite MLflow, real registry."""

import io
import json
from dataclasses import replace

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from flows.pipeline import pipeline, select_stages
from tasks.config import STAGES, PipelineConfig
from tasks.records import root_id
from tests.flows.conftest import small_cfg
from worldnet.catalog import Catalog, MissingArtifactError
from worldnet.data.ingest import StrictModeError
from worldnet.data.synthetic import SynthConfig, generate


def test_stage_selection():
    assert select_stages(only="report") == ["report"]
    assert select_stages(from_stage="report") == ["report", "register"]
    with pytest.raises(ValueError, match="unknown stage"):
        select_stages(only="nope")


def test_missing_artifact_names_its_stage(tmp_path):
    cat = Catalog.from_yaml(tmp_path, data_root=str(tmp_path), backbone="x")
    with pytest.raises(MissingArtifactError, match="'split' stage"):
        cat.load("splits")


def test_pipeline_end_to_end(harness, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data"
    generate(SynthConfig(out=data, cities=["Madrid", "PRS", "Bangkok", "Boston", "Melbourne"], per_city=16, size=(64, 48)), progress=False)
    png_as_jpg = sorted((data / "Images" / "Madrid").glob("*.jpg"))[0]  # a PNG under a .jpg name: read like any photo
    buf = io.BytesIO()
    Image.open(png_as_jpg).save(buf, format="PNG")
    png_as_jpg.write_bytes(buf.getvalue())
    truncated = sorted((data / "Images" / "Boston").glob("*.jpg"))[0]  # passes ingest's header check, fails to decode
    truncated.write_bytes(truncated.read_bytes()[:300])
    n_rows = sum(len(f.read_text().splitlines()) - 1 for f in (data / "Dataframes").glob("*.csv"))
    cfg = replace(small_cfg(data, tmp_path / "root"), shard_size=32, members=PipelineConfig().members)  # the shipped ensemble
    mlflow_store(cfg.root)
    out = pipeline(cfg)
    cat = cfg.catalog()
    # one input line: read, kept, rejected by reason, where the rejects are; the report repeats it
    want = f"input: {n_rows} read, {n_rows - 1} kept, 1 rejected (1 corrupt_image); rejects: {cat.path('shard_rejects')}"
    assert out["input"] == want
    assert want in (cat.path("report") / "report.md").read_text()
    assert str(png_as_jpg) in cat.load("manifest_raw")["path"].to_list()
    assert cat.load("shard_rejects")["path"].to_list() == [str(truncated)]
    for name in ("manifest_raw", "rejects", "manifest_debiased", "splits", "image_shards", "feature_shards", "report"):
        assert cat.exists(name), name
    for proto in ("seen", "unseen"):
        assert cat.exists("predictions", protocol=proto)
        assert "worldNET" in cat.load("metrics", protocol=proto)["model"].to_list()
    assert (cat.path("report") / "report.md").read_text().count("## Figure 4") == 2

    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    parent = client.get_run(out["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = {r.data.tags["stage"] for r in children}
    assert set(STAGES) <= stages
    ingest_run = next(r for r in children if r.data.tags["stage"] == "ingest")
    assert ingest_run.data.metrics["rows"] > 0
    assert any(k.startswith("input.") for k in next(r for r in children if r.data.tags["stage"] == "split").data.tags)
    champion = client.get_model_version_by_alias("worldnet", "champion")
    assert str(champion.version) == out["register"]["version"]

    res = CliRunner().invoke(app, ["predict", str(png_as_jpg), "--root", cfg.root, "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads([ln for ln in res.output.splitlines() if ln.startswith("{")][0])
    assert -90 <= line["lat"] <= 90 and -180 <= line["lon"] <= 180
    bad = CliRunner().invoke(app, ["predict", str(tmp_path / "nope.jpg"), "--root", cfg.root])
    assert bad.exit_code == 1

    # rerun one stage: a deleted upstream artifact comes back from MLflow, upstream is proven up to date
    lost = cat.path("baseline_predictions", protocol="seen")
    before = lost.read_bytes()
    lost.unlink()
    metrics_before = cat.load("metrics", protocol="seen")
    again = pipeline(cfg, only="evaluate")
    assert lost.read_bytes() == before
    assert any(r.endswith("seen/baselines.parquet") for r in again["restored"])
    upstream = [s for s in STAGES[: STAGES.index("evaluate")]]
    assert {again["states"][s] for s in upstream} == {"Up to date"}, again["states"]
    assert again["states"]["evaluate"] == "Completed"
    assert cat.load("metrics", protocol="seen").equals(metrics_before)

    # --strict also fails on what only the shard stage finds; the error names the reason
    with pytest.raises(StrictModeError, match="1 × corrupt_image"):
        pipeline(replace(cfg, strict=True), only="shard")

    # a run a killed process left RUNNING is marked FAILED by the next run on the root
    exp = client.get_experiment_by_name("worldnet").experiment_id
    orphan = client.create_run(exp, tags={"worldnet.root_id": root_id(cat.root), "stage": "train_classifier"}).info.run_id
    later = pipeline(cfg, only="report")
    assert later["abandoned_runs"] == [orphan]
    assert client.get_run(orphan).info.status == "FAILED" and "killed" in client.get_run(orphan).data.tags["worldnet.abandoned"]

    # a second registration with the same scores on the same split stays challenger
    reg = pipeline(cfg, only="register")["register"]
    assert reg["decision"].startswith("kept as challenger (not better"), reg
    assert str(client.get_model_version_by_alias("worldnet", "champion").version) == out["register"]["version"]
    assert str(client.get_model_version_by_alias("worldnet", "challenger").version) == reg["version"]


@pytest.mark.real_data
def test_predict_real_photo(harness, mlflow_store, tmp_path, shared_data, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data"
    generate(SynthConfig(out=data, cities=["Madrid", "Bangkok", "Boston", "Melbourne"], per_city=12, size=(64, 48)), progress=False)
    cfg = PipelineConfig(
        data_root=str(data),
        root=str(tmp_path / "root"),
        backbone="tiny_random",
        n_unseen=1,
        image_width=64,
        image_height=48,
        members=1,
        progress=False,
    )
    mlflow_store(cfg.root)
    pipeline(cfg)
    photo = sorted((shared_data / "osv5m_sample" / "images").glob("*.jpg"))[0]
    res = CliRunner().invoke(app, ["predict", str(photo), "--root", cfg.root, "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads([ln for ln in res.output.splitlines() if ln.startswith("{")][0])
    assert line["continent"] and -90 <= line["lat"] <= 90
    # a moved catalog root predicts the same answer, and nothing is written back under the old path
    moved = tmp_path / "moved"
    (tmp_path / "root").rename(moved)
    res = CliRunner().invoke(app, ["predict", str(photo), "--root", str(moved), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads([ln for ln in res.output.splitlines() if ln.startswith("{")][0])
    assert (again["lat"], again["lon"]) == (line["lat"], line["lon"])
    assert not (tmp_path / "root").exists()
    # a damaged copy of the registered file is refused in one line, never served
    registered = sorted((moved / "mlartifacts" / "models").rglob("*.pt"))
    assert registered
    raw = bytearray(registered[0].read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    registered[0].write_bytes(bytes(raw))
    res = CliRunner().invoke(app, ["predict", str(photo), "--root", str(moved)])
    assert res.exit_code == 2 and "does not match the sha256 recorded when it was registered" in res.output, res.output
    assert "Traceback" not in res.output
