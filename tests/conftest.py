"""Fixtures shared by all tests; the helpers tests import live in tests/support."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from shared.runtime import reset_runtime
from tests.support.issuer import Issuer


@pytest.fixture(autouse=True)
def _isolated_runtime() -> Iterator[None]:
    """No test sees another's environment or runtime (settings, SDK clients, health monitor)."""
    saved = dict(os.environ)
    reset_runtime()
    yield
    os.environ.clear()
    os.environ.update(saved)
    reset_runtime()


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    """Stand-in servers and sockets (tests.support.standins) the test starts, all closed when it ends."""
    with ExitStack() as stack:
        yield stack
