"""``worldnet cv`` as a flow: the recorded stages of ``run``, shared both ways, then grouped folds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flows.cv import cv_flow
from flows.pipeline import run_pipeline
from tests.flows.conftest import small_cfg


def test_cv_records_its_stages_and_a_run_after_it_extracts_nothing(harness, mlflow_store, world, tmp_path):
    root = tmp_path / "root"
    mlflow_store(root)
    cfg = replace(small_cfg(world, root), head_mode="crossfit")
    res = cv_flow(cfg, group="city", folds=2)
    assert res["images"] == cfg.catalog().load("manifest_debiased").height and res["groups"] == 4  # every photo, once
    assert {"worldNET", "nn classifier", "best constant"} <= set(res["metrics"]["model"].to_list())
    assert res["stages"]["states"]["extract_features"] == "Completed"
    again = cv_flow(cfg, group="country", folds=2)  # another grouping: the same features, nothing recomputed
    assert {again["stages"]["states"][s] for s in ("shard", "extract_features")} == {"Up to date"}
    out = run_pipeline(replace(cfg, head_mode="auto"))  # run's own defaults: de-biasing on, fine-tuning auto (off here)
    assert out["states"]["extract_features"] == "Up to date", out["reasons"]
    assert out["states"]["evaluate"] == "Completed"


def test_cv_refuses_a_grouping_it_cannot_keep_whole(harness, world, tmp_path):
    with pytest.raises(ValueError, match="group='continent' keeps no groups whole; choose one of country, city"):
        cv_flow(small_cfg(world, tmp_path / "root"), group="continent", folds=2)


@pytest.mark.real_data
def test_osv5m_five_fold_by_country_prints_the_table(harness, mlflow_store, shared_data, tmp_path):
    mlflow_store(tmp_path)  # a copy of an empty store: the flow's stages, not MLflow's migrations
    from typer.testing import CliRunner

    from flows.cli import app

    res = CliRunner().invoke(app, ["cv", "--data-root", str(shared_data / "osv5m_sample" / "metadata.csv"), "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    print(res.output[res.output.index("5-fold") :])
    assert "121 images" in res.output and "country groups" in res.output
    table = {ln.split("|")[1].strip(): ln for ln in res.output.splitlines() if ln.startswith("| ") and not ln.startswith("| model |")}
    assert {"mean model", "worldNET", "worldNET (in-sample)", "nn classifier"} <= set(table)

    def mean_km(row: str) -> float:
        return float(table[row].split("|")[5].split("(")[0].replace(",", ""))

    # the bar: worldNET (the crossfit head, cv's default) no worse than the mean model on mean km
    assert mean_km("worldNET") <= mean_km("mean model")
