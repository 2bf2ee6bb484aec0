"""Every property-based test here runs the number of generated inputs it declares (tests.support.fuzz), or fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fuzz import DECLARED


@pytest.fixture(autouse=True)
def _counted_inputs(request: pytest.FixtureRequest) -> Iterator[None]:
    handle = getattr(request.function, "hypothesis", None)
    if handle is None:  # not a property-based test
        yield
        return
    assert request.function in DECLARED, f"{request.function.__name__}: declare its inputs with @generated_inputs(n)"
    inner = handle.inner_test
    calls = 0

    def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        inner(*args, **kwargs)

    handle.inner_test = counted
    try:
        yield
    finally:
        handle.inner_test = inner
    required = DECLARED[request.function]
    assert calls >= required, f"{request.function.__name__} ran {calls} generated inputs, not {required}"
