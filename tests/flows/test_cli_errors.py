"""User errors from `worldnet run`: one line that says what to do, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from typer.testing import CliRunner

from flows.cli import app
from worldnet.data.synthetic import SynthConfig, generate


def test_a_debias_that_would_drop_most_photos_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "europe-heavy"
    cities = ["Madrid", "PRS", "Rome", "Lisbon", "Boston"]  # four European cities and one American: balancing drops most
    generate(SynthConfig(out=data, cities=cities, per_city=16, size=(48, 36), eurocentric=False), progress=False)
    args = ["run", "--data-root", str(data), "--root", str(tmp_path / "root"), "--backbone", "tiny_random"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    # the real command, so that what Prefect's own log handlers print is seen too
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out and "Failed(" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--debias-max-drop" in errors[0] and "--debias none" in errors[0]
    ok = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--debias", "none", "--only", "debias"], env=env, capture_output=True)
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_bad_debias_options_are_refused_before_anything_starts(tmp_path):
    t = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--data-root", str(tmp_path), "--debias", "balance"])
    assert res.exit_code == 2
    assert "unknown de-bias strategy 'balance'" in res.output and "Traceback" not in res.output
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
        (["--only", "bogus"], "--only 'bogus' is not a stage"),
        (["--from", "trian"], "--from 'trian' is not a stage"),
        (["--backbone", "resnet9000"], "--backbone 'resnet9000' is unknown"),
        (["--weights", str(a_file)], "drop --weights"),
        (["--backbone", "vgg19", "--weights", str(tmp_path / "none.pth")], "is not a file"),
        (["--root", str(a_file)], "is a file"),
        (["--input-height", "8"], "--input-height must be between 16 and 2048"),
        (["--flip", "sideways"], "--flip 'sideways' is unknown"),
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
        (["--model", str(garbage), "--engine", "tensorrt"], "--engine 'tensorrt' is unknown"),
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
        (["run", "--cluster", "regions"], "--cluster 'regions' is unknown"),
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
