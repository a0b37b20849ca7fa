"""A run killed with ``kill -9`` leaves no process behind, and the next run records it as failed in MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from prefect.settings import PREFECT_API_URL

from flows.guard import POLL_SECONDS, _start_time, descendants
from tasks.records import root_id
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.storage import as_path


def _alive(procs: dict[int, str]) -> dict[int, str]:
    return {p: t for p, t in procs.items() if _start_time(p) == t}


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the guard reads /proc (Linux)")
def test_kill_9_leaves_no_process_and_the_next_run_marks_its_runs_failed(harness, tmp_path):
    data, root = tmp_path / "data", tmp_path / "root"
    generate(SynthConfig(out=data, cities=["Madrid", "Boston", "Bangkok"], per_city=8, size=(48, 36)), progress=False)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    args = [sys.executable, "-m", "flows.cli", "run", "--data-root", str(data), "--root", str(root), "--backbone", "tiny_random"]
    cli = subprocess.Popen([*args, "--debias", "none"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    assert cli.stdout is not None
    for line in cli.stdout:  # the first stage's line: Prefect's server is up and MLflow runs are open
        seen.append(line)
        if line.startswith("[1/"):
            break
    assert seen and seen[-1].startswith("[1/"), "".join(seen)
    children = descendants(cli.pid)
    assert any("uvicorn" in _cmdline(p) for p in children), "Prefect's temporary server is not a child"
    cli.send_signal(signal.SIGKILL)
    cli.wait()

    deadline = time.monotonic() + 30
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), f"left behind: {[_cmdline(p) for p in _alive(children)]}"

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")  # not the global URI: other tests run here
    rid = root_id(as_path(root))
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, f"tags.`worldnet.root_id` = '{rid}' and attributes.status = 'RUNNING'")
    assert len(running) >= 1  # at least the pipeline's parent run was open when the process died

    # the next run on the session's Prefect server (what it marks failed is MLflow's; a second start-up adds 20 s)
    env_next = {**env, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    again = subprocess.run([*args, "--debias", "none", "--only", "ingest"], env=env_next, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"marked {len(running)} MLflow runs FAILED" in again.stdout
    assert {client.get_run(r.info.run_id).info.status for r in running} == {"FAILED"}
    time.sleep(2 * POLL_SECONDS + 0.5)  # the guards of both runs have seen their command go and exited
    assert not _guards_of_dead_commands()


def _guards_of_dead_commands() -> list[str]:
    out = []
    for entry in os.scandir("/proc"):
        try:
            argv = _cmdline(int(entry.name)).split("\0")
        except (OSError, ValueError):
            continue
        if (
            "flows.guard" in argv
            and _start_time(int(entry.name)) is not None
            and _start_time(int(argv[argv.index("flows.guard") + 1])) is None
        ):
            out.append(entry.name)
    return out


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()
