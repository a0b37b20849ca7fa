"""Fixtures shared by the feature tests."""

from __future__ import annotations

import numpy as np
import pytest

from worldnet.models.worldnet_model import TrainConfig, WorldNet, fit_worldnet


@pytest.fixture
def tiny_worldnet() -> WorldNet:
    """A worldNET over the tiny random backbone's 32-d features (2 centroids), trained in a second on random features.

    Tests that check what reaches the backbone set its ``frame`` or save it with a view; its answers do not matter.
    """
    rng = np.random.default_rng(0)
    cents = np.array([[40.0, -120.0], [45.0, -110.0]])
    X = rng.normal(size=(40, 32)).astype(np.float32)
    y = np.arange(40) % 2
    return fit_worldnet(X, y, cents[y], y.astype(str), X[:6], y[:6], cents, ["A", "B"], cfg=TrainConfig(head_epochs=2))
