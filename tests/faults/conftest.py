"""The faults suite: dependencies that fail on demand (tests.support.failing), the app served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.apphost import ServedApp, serve_app


@pytest.fixture(scope="package")
def app() -> Iterator[ServedApp]:
    with serve_app() as served:
        yield served
