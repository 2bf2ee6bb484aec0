"""Property-based tests declare how many generated inputs they must run (`@generated_inputs(n)`).

`max_examples` is an upper bound: a settings profile (Hypothesis loads its `ci` profile by itself
when it detects CI, and HYPOTHESIS_PROFILE can load another), a filter that rejects most inputs,
or a strategy whose space runs out could make a test run far fewer without a sign. So each test
declares its count, and the fixture in tests/fuzz/conftest.py counts the calls of the test body and
fails the test that ran fewer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import settings, strategies as st

Test = TypeVar("Test", bound=Callable[..., None])

#: Strings UTF-8 cannot encode: lone surrogates (high, low, a pair in the wrong order) among other
#: characters. Valid JSON carries them as `\\ud800` escapes, so they reach the app inside valid UTF-8.
lone_surrogates = st.characters(categories=["Cs"])
unencodable_text = st.one_of(
    st.sampled_from(["\ud800", "\udfff", "\ude00\ud83d", "a\udc00b"]),
    st.text(st.one_of(lone_surrogates, st.characters()), min_size=1, max_size=24),
)

#: The declared count of each property-based test function, as pytest collects it.
DECLARED: dict[Callable[..., None], int] = {}


def generated_inputs(count: int, **options: Any) -> Callable[[Test], Test]:
    """`@settings(max_examples=count, deadline=None, **options)`, and `count` recorded as the test's floor."""

    def declare(test: Test) -> Test:
        configured: Test = settings(max_examples=count, deadline=None, **options)(test)
        DECLARED[configured] = count
        return configured

    return declare
