"""A backbone's spec known without building it (the answer path) is the spec its builder gives."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worldnet.features.backbones import build_backbone
from worldnet.features.names import View
from worldnet.features.specs import BASE_SPECS, backbone_spec

VIEWS = [(None, None), ((64, 48), None), ((600, 300), View(None, True)), ((400, 300), View(224, False)), (None, View(160, True))]


@pytest.mark.parametrize(
    "name", ["tiny_random", "efficientnet_lite0", "efficientnet_lite0_random", "efficientnet_lite1", "efficientnet_lite2"]
)
def test_the_spec_without_building_is_the_built_spec(name):
    for frame, view in VIEWS:
        assert backbone_spec(name, frame, view) == build_backbone(name, frame=frame, view=view).spec, (name, frame, view)


def test_every_backbone_has_a_spec():
    from worldnet.features.names import BACKBONE_NAMES

    assert set(BASE_SPECS) == set(BACKBONE_NAMES)
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_spec("resnet9000")


def test_the_answer_path_modules_import_no_torch():
    modules = [
        "worldnet.models.fast",
        "worldnet.models.numpy_model",
        "worldnet.models.predictor",
        "worldnet.features.onnx_graph",
        "worldnet.features.preprocess",
        "worldnet.data.frame",
        "worldnet.geo.land",
        "worldnet.catalog",
        "tasks.model_cache",
    ]
    probe = f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n" + (
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'torchvision', 'mlflow', 'prefect', 'polars', 'scipy'}))"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
