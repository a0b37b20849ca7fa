"""prefect.yaml against a real Prefect server: deploy, trigger a stage deployment, wait for it.

Slow (a server, a worker and a flow-run subprocess start): ``make test-all`` or ``pytest -m slow``.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from worldnet.data.synthetic import SynthConfig, generate

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_declares_nightly_schedule_and_every_stage():
    from tasks.config import STAGES

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(STAGES) | {"nightly"} == set(deps)
    assert deps["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    import flows.pipeline as fp

    for d in deps.values():
        path, attr = d["entrypoint"].split(":")
        assert path == "flows/pipeline.py" and hasattr(fp, attr), d["entrypoint"]


def test_prefect_yaml_and_the_readme_table_read_as_the_stage_declaration_says():
    from flows.declared import drifted, stage_table

    assert drifted() == [], "run `python -m flows.declared --write`"
    assert "| finetune | `worldnet.features.finetune.finetune_tail`" in stage_table()


def test_a_changed_declaration_is_drift():
    from dataclasses import replace

    from flows.declared import deployment_yaml, stage_table
    from tasks.config import PIPELINE

    renamed = (replace(PIPELINE[0], name="ingest_v2"), *PIPELINE[1:])
    assert deployment_yaml(renamed) != deployment_yaml() and stage_table(renamed) != stage_table()
    assert (REPO / "prefect.yaml").read_text().count(deployment_yaml()) == 1


def test_every_stage_output_is_a_catalog_entry_its_stage_produces_and_every_input_is_named():
    from tasks.config import PIPELINE
    from worldnet.catalog import Catalog

    cat = Catalog.from_yaml(REPO / ".never-written")
    for s in PIPELINE:
        for name in s.inputs:
            cat.entry(name)  # a KeyError names the missing entry
        for name in s.outputs:
            assert str(cat.entry(name)["produced_by"]).startswith(s.name), (name, s.name)


def test_each_stage_task_is_found_from_its_declaration():
    from tasks.config import PIPELINE, stage_task

    for s in PIPELINE:
        assert callable(stage_task(s.name).fn), s.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(env, *args, timeout=300, check=True):
    exe = str(Path(sys.executable).parent / "prefect")
    return subprocess.run([exe, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=check)


def _run_and_wait(env: dict[str, str], deployment: str, params: dict[str, object]) -> None:
    """Trigger ``deployment`` with ``params`` and wait until its run completes."""
    run = _prefect(
        env, "deployment", "run", deployment, "--params", json.dumps(params), "--watch", "--watch-timeout", "300", timeout=360, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Completed" in run.stdout, run.stdout


@pytest.mark.slow
def test_real_server_deploys_and_runs_a_stage_deployment(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                pytest.fail("prefect server did not become healthy in 120 s")
            time.sleep(1)
        _prefect(env, "work-pool", "create", "worldnet", "--type", "process")
        deployed = _prefect(env, "--no-prompt", "deploy", "--all")
        assert "worldnet-nightly" in deployed.stdout or deployed.returncode == 0, deployed.stdout + deployed.stderr
        listing = _prefect(env, "deployment", "ls").stdout
        assert "nightly" in listing and "ingest" in listing

        data = tmp_path / "world"
        generate(SynthConfig(out=data, cities=["Madrid", "Boston"], per_city=6, size=(48, 36)), progress=False)
        params = {"cfg": {"data_root": str(data), "root": str(tmp_path / "root"), "backbone": "tiny_random", "progress": False}}
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "worldnet"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _run_and_wait(env, "worldnet-ingest/ingest", params)
        assert (tmp_path / "root" / "01_raw" / "manifest.parquet").is_file()

        # a deployment parameter puts the per-shard tasks on Dask (here a 1-worker LocalCluster)
        _run_and_wait(env, "worldnet-shard/shard", {**params, "task_runner": "dask", "dask_workers": 1})
        assert list((tmp_path / "root" / "02_intermediate" / "shards").glob("shard-*.parquet"))
    finally:
        for p in (worker, server):
            if p is not None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp_path / "prefect-home", ignore_errors=True)
