"""Auxiliary-method tests: the nets are tiny, so one CPU thread (torch and BLAS) is fastest and avoids
idle-spinning thread pools on a shared 2-core machine."""

from __future__ import annotations

import pytest

from workers.aux.common.runtime import cpu_threads


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    with cpu_threads(1):
        yield
