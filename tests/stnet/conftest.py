"""Fixtures shared by the tests of stkit.stnet: ``smoke``, the smoke-size config and its STNet in eval mode."""

from __future__ import annotations

import pytest
import torch

from stkit.stnet import build_model
from tests.stnet.test_model import SMOKE


@pytest.fixture(scope="module")
def smoke():
    torch.manual_seed(0)
    cfg = SMOKE
    return cfg, build_model(cfg).eval()
