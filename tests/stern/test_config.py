"""Tests of stkit.stern.config: STERNConfig and STNConfig check their fields and round-trip."""

import pytest

from stkit.stern import STERN, STERNConfig
from stkit.stern.config import STNConfig


def test_configs_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="backbone"):
        STERNConfig("alexnet")
    with pytest.raises(ValueError, match="s_min"):
        STNConfig(s_min=0.99)
    with pytest.raises(TypeError, match="STERNConfig"):
        STERN("small")
    cfg = STERNConfig("small", glimpse_size=[32, 32], stn=STNConfig("faithful", loc_pool=2))
    assert cfg.glimpse_size == (32, 32)
    assert STERNConfig.from_dict(cfg.to_dict()) == cfg
    assert STERNConfig.from_dict(STERNConfig(stn=None).to_dict()).stn is None


def test_config_checks_the_range():
    with pytest.raises(ValueError, match="s_max"):
        STNConfig(s_min=0.3, init_scale=0.9, s_max=0.8)
