"""The fuzz suites declare at least 10,000 generated inputs in all, and every property-based test declares its own.

With the fixture of conftest.py, which fails any test that ran fewer inputs than it declares, this
proves that a run of the suite (CI's included) really generates that many.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from tests.support.fuzz import DECLARED

REQUIRED_IN_ALL = 10_000


def property_tests() -> list[Callable[..., None]]:
    modules = [
        importlib.import_module(f"tests.fuzz.{path.stem}")
        for path in sorted(Path(__file__).parent.glob("test_*.py"))
        if path.stem != Path(__file__).stem
    ]
    return [
        value
        for module in modules
        for name, value in vars(module).items()
        if name.startswith("test_") and hasattr(value, "hypothesis")
    ]


def test_every_property_based_test_declares_its_inputs() -> None:
    tests = property_tests()
    assert len(tests) >= 4  # config, negotiate, and the protocol's parser and dispatcher
    assert [test for test in tests if test not in DECLARED] == []


def test_at_least_10000_inputs_are_generated_in_all() -> None:
    assert sum(DECLARED[test] for test in property_tests()) >= REQUIRED_IN_ALL
