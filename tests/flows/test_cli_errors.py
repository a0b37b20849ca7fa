"""User errors from `worldnet run`: one line that says what to do, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from flows.cli import app
from worldnet.data.synthetic import SynthConfig, generate


def test_a_debias_that_would_drop_most_photos_is_one_line_and_exit_2(harness, tmp_path, monkeypatch):
    data = tmp_path / "europe-heavy"
    cities = ["Madrid", "PRS", "Rome", "Lisbon", "Boston"]  # four European cities and one American: balancing drops most
    generate(SynthConfig(out=data, cities=cities, per_city=16, size=(48, 36), eurocentric=False), progress=False)
    args = ["run", "--data-root", str(data), "--root", str(tmp_path / "root"), "--backbone", "tiny_random"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    # the real command, so that what Prefect's own log handlers print is seen too (on the session's Prefect server:
    # a start-up of its own would add 20 s and show nothing more)
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out and "Failed(" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--debias-max-drop" in errors[0] and "--debias none" in errors[0]
    # the way out it names works: the same command, in this process on the session's Prefect server (no second start-up)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WORLDNET_NO_GUARD", "1")  # the guard would watch this test process, not a command
    ok = CliRunner().invoke(app, [*args, "--debias", "none", "--only", "debias"])
    assert ok.exit_code == 0, ok.output[-2000:]


def test_bad_debias_options_are_refused_before_anything_starts(tmp_path):
    t = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--data-root", str(tmp_path), "--debias", "balance"])
    assert res.exit_code == 2
    assert "--debias balance is no de-bias strategy" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["run", "--data-root", str(tmp_path / "absent")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["run", "--data-root", str(tmp_path), "--head-mode", "best"])
    assert res.exit_code == 2 and "unknown head mode" in res.output
    assert time.perf_counter() - t < 10  # answered before Prefect or MLflow start


def test_mistakes_in_options_are_answered_before_anything_starts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    a_file = tmp_path / "root.txt"
    a_file.write_text("not a folder")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    cases = [
        (["--only", "bogus"], "--only bogus is not a stage"),
        (["--from", "trian"], "--from trian is not a stage"),
        (["--backbone", "resnet9000"], "--backbone resnet9000 is unknown"),
        (["--weights", str(a_file)], "ships its own weights: drop the weights file"),
        (["--backbone", "vgg19", "--weights", str(tmp_path / "none.pth")], "is not a file"),
        (["--root", str(a_file)], "is a file"),
        (["--input-height", "8"], "--input-height 8: choose from 16 to 2048 pixels"),
        (["--flip", "sideways"], "--flip sideways is unknown"),
        (["--members", "0"], "--members 0: the ensemble needs at least one MLP"),
        (["--feature-power", "0"], "--feature-power 0.0: choose a power in (0, 1]"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        cases.append((["--root", str(read_only / "wn")], "is not writable"))
    t = time.perf_counter()
    for extra, message in cases:
        res = CliRunner().invoke(app, ["run", "--data-root", str(data), *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert message in res.output and "Traceback" not in res.output, (extra, res.output)
    assert time.perf_counter() - t < 3 * len(cases)


def test_argument_errors_are_answered_without_loading_torch_prefect_or_mlflow(tmp_path):
    """What keeps a mistake's answer under a second: the checks import none of the heavy libraries (about 4 s of imports)."""
    probe = (
        "import sys\n"
        "from flows.cli import app\n"
        "for args in (['--only', 'bogus'], ['--backbone', 'nope'], ['--head-mode', 'x'], ['--debias', 'y'], ['--input-height', '1']):\n"
        "    try:\n"
        f"        app(['run', '--data-root', {str(tmp_path)!r}, *args])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 2, (args, exc.code)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'prefect', 'mlflow', 'timm', 'sklearn'}))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


def test_pipeline_defaults_are_the_trainers_defaults():
    from tasks.config import PipelineConfig
    from worldnet.features.names import View
    from worldnet.models.worldnet_model import TrainConfig

    cfg, train = PipelineConfig(), TrainConfig()
    for knob in ("classifier", "crossfit_weight_decay", "members", "feature_power"):
        assert getattr(cfg, knob) == getattr(train, knob), knob
    assert cfg.view(lambda: True) == View(None, True) and cfg.view(lambda: False) == View(None, False)  # flip=auto


def test_serve_refuses_a_bad_model_or_port_in_one_line(tmp_path):
    garbage = tmp_path / "m.pt"
    garbage.write_bytes(b"not a model")
    cases = [
        (["--model", str(tmp_path / "absent.pt")], "not found"),
        (["--model", str(garbage)], "is not a worldnet model file"),
        (["--model", str(garbage), "--port", "70000"], "is not a port"),
        (["--model", str(garbage), "--engine", "tensorrt"], "--engine tensorrt is unknown"),
    ]
    for extra, message in cases:
        res = CliRunner().invoke(app, ["serve", "--root", str(tmp_path / "root"), *extra])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (extra, res.output)


def test_numeric_options_are_refused_by_name_in_a_second(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("path,lat,lon\n")
    cases = [
        (["run", "--seed", "-1"], "--seed -1"),
        (["run", "--cluster", "kmeans", "--k", "-3"], "--k -3"),
        (["run", "--cluster", "regions"], "--cluster regions is unknown"),
        (["run", "--crossfit-weight-decay", "nan"], "--crossfit-weight-decay nan"),
        (["run", "--image-size", "100000x100000"], "at most 4096"),
        (["cv", "--folds", "1"], "--folds 1"),
        (["cv", "--folds", "1000"], "--folds 1000"),
    ]
    for args, message in cases:
        t = time.perf_counter()
        res = CliRunner().invoke(app, [*args, "--data-root", str(data), "--root", str(tmp_path / "root")])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)
        assert time.perf_counter() - t < 5, args


def test_data_roots_are_checked_before_anything_starts(tmp_path):
    twice = tmp_path / "a" / "photos"
    other = tmp_path / "b" / "photos"
    for folder in (twice, other):
        folder.mkdir(parents=True)
        (folder / "m.csv").write_text("path,lat,lon\n")
    res = CliRunner().invoke(app, ["run", "--data-root", str(twice), "--data-root", str(other)])
    assert res.exit_code == 2 and "name each once" in res.output
    (twice / "n.csv").write_text("path,lat,lon\n")
    res = CliRunner().invoke(app, ["run", "--data-root", str(twice)])
    assert res.exit_code == 2 and "name the one that lists the photos" in res.output


def _error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def test_serve_refuses_a_busy_port_and_an_upload_limit_that_is_no_number_before_loading_the_model(tmp_path):
    import socket

    garbage = tmp_path / "m.pt"
    garbage.write_bytes(b"not a model")  # never read: every check below answers first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            (["--port", str(port)], f"port {port} on 127.0.0.1 is in use: choose another --port"),
            (["--max-upload-mb", "nan"], "--max-upload-mb nan: choose a finite number of MB > 0"),
            (["--max-upload-mb", "inf"], "--max-upload-mb inf: choose a finite number of MB > 0"),
            (["--max-upload-mb", "0"], "--max-upload-mb 0.0: choose a finite number of MB > 0"),
            (["--max-photos", "0"], "--max-photos 0"),
            (["--max-request-megapixels", "nan"], "--max-request-megapixels nan: choose a finite number of megapixels > 0"),
            (["--max-request-megapixels", "-5"], "--max-request-megapixels -5.0: choose a finite number of megapixels > 0"),
        ]
        for extra, message in cases:
            t = time.perf_counter()
            res = CliRunner().invoke(app, ["serve", "--model", str(garbage), "--root", str(tmp_path / "root"), *extra])
            assert res.exit_code == 2 and "Traceback" not in res.output, (extra, res.output)
            assert _error_lines(res.output) == [f"error: {res.output.strip().removeprefix('error: ')}"], (extra, res.output)
            assert message in res.output, (extra, res.output)
            assert time.perf_counter() - t < 5, extra


def test_synth_refuses_unknown_cities_and_sizes_it_cannot_render_by_name_and_writes_nothing(tmp_path):
    out = tmp_path / "world"
    cases = [
        (["--cities", "Madrid", "--cities", "Paris"], "unknown cities ['Paris'] (Paris is PRS here); known cities are: Bangkok"),
        (["--cities", "Madrid", "--size", "8x300"], "--size 8x300: each side must be from 16 to 4096 px"),
        (["--cities", "Madrid", "--size", "5000x300"], "--size 5000x300: each side must be from 16 to 4096 px"),
        (["--cities", "Madrid", "--size", "200x150x3"], "--size must look like 400x300"),
        (["--cities", "Madrid", "--per-city", "0"], "--per-city 0"),
    ]
    for extra, message in cases:
        res = CliRunner().invoke(app, ["synth", "--out", str(out), *extra])
        assert res.exit_code == 2 and "Traceback" not in res.output, (extra, res.output)
        errors = _error_lines(res.output)
        assert len(errors) == 1 and message in errors[0], (extra, res.output)
        assert not out.exists(), extra


def test_synth_renders_sides_that_are_not_multiples_of_four(tmp_path):
    from PIL import Image

    out = tmp_path / "world"
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--cities", "Madrid", "--per-city", "2", "--size", "202x150"])
    assert res.exit_code == 0, res.output
    photos = sorted((out / "Images" / "Madrid").glob("*.jpg"))
    assert photos  # at least 4 a city, whatever --per-city says
    for p in photos:
        with Image.open(p) as im:
            assert im.size == (202, 150)
    assert sorted(p.name for p in out.iterdir()) == ["Dataframes", "Images"]  # no staging folder left


def test_a_failed_synth_leaves_no_dataframes_without_images(tmp_path, monkeypatch):
    import pytest

    import worldnet.data.synthetic as synthetic

    def broken(*args, **kwargs):
        raise RuntimeError("renderer broke")

    out = tmp_path / "world"
    monkeypatch.setattr(synthetic, "render", broken)
    with pytest.raises(RuntimeError, match="renderer broke"):
        generate(SynthConfig(out=out, cities=["Madrid"], per_city=4, size=(32, 24), workers=1), progress=False)
    assert not out.exists()  # it made the folder, and took it away again
    kept = tmp_path / "existing"
    (kept / "notes.txt").parent.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="renderer broke"):
        generate(SynthConfig(out=kept, cities=["Madrid"], per_city=4, size=(32, 24), workers=1), progress=False)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def _sqlite_store(path) -> bytes:
    """A small real SQLite database of several pages (not MLflow's: only its file format is checked)."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("create table runs (id integer primary key, name text)")
        db.executemany("insert into runs (name) values (?)", [(f"run {i} " * 20,) for i in range(400)])
    db.close()
    return path.read_bytes()


def test_a_damaged_mlflow_store_is_one_line_that_says_move_it_aside_and_it_is_left_as_it_is(tmp_path, monkeypatch):
    from tasks.store_check import DamagedStoreError, check_sqlite_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    healthy = tmp_path / "healthy.db"
    good = _sqlite_store(healthy)
    assert len(good) >= 3 * 4096
    check_sqlite_store(healthy)  # a whole database passes
    (tmp_path / "empty.db").write_bytes(b"")
    check_sqlite_store(tmp_path / "empty.db")  # an empty file is a new store
    damages = {
        "header zeroed": (b"\x00" * 16 + good[16:], "not a SQLite database"),
        "truncated": (good[:300], "not a SQLite database"),
        "cut short": (good[:4096], f"cut short: 4096 of {len(good)} bytes"),
    }
    for name, (data, why) in damages.items():
        root = tmp_path / name.replace(" ", "-")
        root.mkdir()
        store = root / "mlflow.db"
        store.write_bytes(data)
        t = time.perf_counter()
        res = CliRunner().invoke(app, ["run", "--root", str(root), "--data-root", str(tmp_path)])
        assert res.exit_code == 2 and "Traceback" not in res.output, (name, res.output)
        assert _error_lines(res.output) == [
            f"error: the MLflow store {store} is damaged ({why}): move it aside (mv {store} {store}.bad) and rerun; "
            "the catalog's artifacts are kept"
        ], (name, res.output)
        assert time.perf_counter() - t < 5, name  # answered before Prefect or MLflow start
        assert store.read_bytes() == data, name  # never modified
    # where MLflow is pointed at the store (predict, serve, every pipeline run), before it opens it
    from flows.cli_errors import user_errors
    from tasks.tracking import configure_mlflow

    assert DamagedStoreError in user_errors() and issubclass(DamagedStoreError, ValueError)
    root = tmp_path / "header-zeroed"
    try:
        configure_mlflow(root)
        raise AssertionError("configure_mlflow opened a damaged store")
    except DamagedStoreError as exc:
        assert "mlflow.db is damaged (not a SQLite database)" in str(exc)
    assert (root / "mlflow.db").read_bytes() == b"\x00" * 16 + good[16:]


def test_a_full_disk_or_missing_s3_credentials_is_one_line():
    import errno
    from pathlib import Path

    from flows.cli_errors import environment_error

    class OperationalError(Exception):  # as sqlalchemy.exc names it; matched by name, so nothing is imported
        pass

    class NoCredentialsError(Exception):  # as botocore.exceptions names it
        pass

    class MlflowException(Exception):  # noqa: N818 - as mlflow names it
        pass

    store = Path("/data/wn/mlflow.db")
    full = OSError(errno.ENOSPC, "No space left on device", "/data/wn/03_features/shard-00001.npy")
    line, code = environment_error(full, "/data/wn", store) or ("", 0)
    assert code == 1 and line.startswith("no space left on the disk holding /data/wn/03_features/shard-00001.npy: free some")
    line, code = environment_error(OSError(errno.ENOSPC, "No space left on device"), "/data/wn", store) or ("", 0)
    assert code == 1 and "the disk holding /data/wn:" in line
    try:  # SQLite's full disk, wrapped by MLflow as it does
        try:
            raise OperationalError("(sqlite3.OperationalError) database or disk is full")
        except OperationalError as inner:
            raise MlflowException("failed to log metric") from inner
    except MlflowException as exc:
        line, code = environment_error(exc, "/data/wn", store) or ("", 0)
    assert code == 1 and line.startswith("no space left on the disk holding the MLflow store /data/wn/mlflow.db")
    line, code = environment_error(NoCredentialsError("Unable to locate credentials"), "s3://bucket/wn", store) or ("", 0)
    assert code == 2
    assert line == "no credentials for s3://bucket/wn: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (AWS_PROFILE)"
    assert environment_error(RuntimeError("a bug"), "/data/wn", store) is None
    assert environment_error(OSError(errno.EIO, "I/O error"), "/data/wn", store) is None


def _fake_pipeline(monkeypatch, raises: BaseException | None = None) -> dict:
    """Stand in for the pipeline: what ``run`` passes it is kept; it returns an empty result or raises ``raises``."""
    import flows.cli
    import flows.pipeline

    seen: dict = {}

    def run_pipeline(cfg, **kwargs):
        seen["cfg"], seen["kwargs"] = cfg, kwargs
        if raises is not None:
            raise raises
        return {"timings": {}}

    monkeypatch.setattr(flows.pipeline, "run_pipeline", run_pipeline)
    monkeypatch.setattr(flows.cli, "start_guard", lambda: None)
    return seen


def test_a_full_disk_during_a_run_is_one_line_and_exit_1(tmp_path, monkeypatch):
    import errno

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "m.csv").write_text("path,lat,lon\n")
    where = tmp_path / "root" / "02_intermediate" / "shards" / "shard-00000.parquet"
    _fake_pipeline(monkeypatch, OSError(errno.ENOSPC, "No space left on device", str(where)))
    res = CliRunner().invoke(app, ["run", "--data-root", str(data), "--root", str(tmp_path / "root"), "--backbone", "tiny_random"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert _error_lines(res.output) == [
        f"error: no space left on the disk holding {where}: free some (or choose another --root) and rerun; finished stages are kept"
    ]


def test_only_a_stage_reuses_the_data_root_its_ingest_record_names(tmp_path, monkeypatch):
    from tasks.records import StageRecord, recorded_data_root, write_record
    from worldnet.storage import as_path

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "root"
    assert recorded_data_root(str(root)) is None  # no record: the default, as before
    for given in ([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "a")):
        params = {"data_root": given, "dataset_kind": "auto", "strict": False}
        write_record(as_path(root), StageRecord("ingest", "k", {}, params, "c", {}, "rid", "", {}, 0.0))
        assert recorded_data_root(str(root)) == given
        for stage_option in (["--only", "train_classifier"], ["--from", "cluster"]):
            seen = _fake_pipeline(monkeypatch)
            res = CliRunner().invoke(app, ["run", "--root", str(root), "--backbone", "tiny_random", *stage_option])
            assert res.exit_code == 0, res.output
            assert seen["cfg"].data_root == given, stage_option  # as recorded, list or string: the ingest key is unchanged
            assert "as the ingest record under" in res.output
    seen = _fake_pipeline(monkeypatch)  # --data-root given: that one
    other = tmp_path / "other"
    res = CliRunner().invoke(app, ["run", "--root", str(root), "--backbone", "tiny_random", "--only", "ingest", "--data-root", str(other)])
    assert res.exit_code == 0 and seen["cfg"].data_root == str(other), res.output


def test_library_errors_name_parameters_and_the_cli_names_the_flag():
    import pytest

    from flows.cli_errors import flagged
    from worldnet.data.debias import check_debias_options
    from worldnet.features.names import View

    with pytest.raises(ValueError) as err:
        View(8, False)
    assert str(err.value).startswith("input_height=8") and flagged(str(err.value)).startswith("--input-height 8")
    with pytest.raises(ValueError) as err:
        check_debias_options("none", max_drop=2.0)
    assert "max_drop=2" in str(err.value) and flagged(str(err.value)).startswith("--debias-max-drop 2")
    assert flagged("strict=True: 3 rows rejected; run without strict=True") == "--strict: 3 rows rejected; run without --strict"
    assert flagged("url?x=1 and other=2") == "url?x=1 and other=2"  # only the parameters a flag sets
