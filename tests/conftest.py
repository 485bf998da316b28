"""Shared fixtures of the test suite (the folders below mirror the stkit package).

- ``smoke_buv``: the smoke-size synthetic BUV folder (seed 0), generated once per session.

Test helpers that are plain functions (file writers of the real datasets' layouts) live
in ``tests/cxr_fixtures.py``.
"""

import pytest

from data_prep.synthetic_buv import ensure_buv


@pytest.fixture(scope="session")
def smoke_buv(tmp_path_factory):
    return ensure_buv(tmp_path_factory.mktemp("buv"), "smoke", seed=0)

