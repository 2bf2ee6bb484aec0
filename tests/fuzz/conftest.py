"""Every property-based test here runs the number of generated inputs it declares, or fails.

`max_examples` is an upper bound: a settings profile (Hypothesis loads its `ci` profile by itself
when it detects CI, and HYPOTHESIS_PROFILE can load another), a filter that rejects most inputs,
or a strategy whose space runs out could make a test run far fewer without a sign. So each test
declares its count with `@generated_inputs(n)`, and the fixture below counts the calls of the test
body (through Hypothesis's replaceable `inner_test`) and fails the test that ran fewer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import settings

Test = TypeVar("Test", bound=Callable[..., None])

#: The declared count of each property-based test function, as pytest collects it.
DECLARED: dict[Callable[..., None], int] = {}


def generated_inputs(count: int, **options: Any) -> Callable[[Test], Test]:
    """`@settings(max_examples=count, deadline=None, **options)`, and `count` recorded as the test's floor."""

    def declare(test: Test) -> Test:
        configured: Test = settings(max_examples=count, deadline=None, **options)(test)
        DECLARED[configured] = count
        return configured

    return declare


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
