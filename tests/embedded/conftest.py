from __future__ import annotations

import pytest

from meterline.runtime import set_runtime
from tests.support import embedded_runtime, new_key


@pytest.fixture
def runtime(tmp_path):
    """An embedded runtime in a temp dir, installed as the process runtime for the functions."""
    rt = embedded_runtime(tmp_path / "data")
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture
def api_key(runtime) -> str:
    return new_key(runtime)
