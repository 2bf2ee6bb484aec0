"""The measuring helpers: figure lines, percentiles, and interleaved comparisons."""

from __future__ import annotations

import pytest

from bench.measure import Figure, compare, percentile


def test_a_figure_is_one_line_with_value_target_and_verdict_then_indented_details() -> None:
    figure = Figure("negotiate", "1.08x", "<= 1.2x", True, ("app 60 µs", "floor 55 µs"))
    assert figure.lines() == ["negotiate: 1.08x (target <= 1.2x) met", "  app 60 µs", "  floor 55 µs"]
    assert Figure("import", "1.40x", "<= 1.3x", False).lines() == ["import: 1.40x (target <= 1.3x) MISSED"]


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.5, 50.0), (0.99, 99.0), (1.0, 100.0), (0.0, 1.0), (0.01, 1.0)],
)
def test_percentile_is_the_nearest_rank(fraction: float, expected: float) -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert percentile(values, fraction) == expected


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_compare_interleaves_batches_and_alternates_which_goes_first() -> None:
    calls: list[str] = []
    result = compare(lambda: calls.append("app"), lambda: calls.append("floor"), rounds=4, calls=10)
    warm_up = 2 + 2  # a fifth of the batch, each
    batches = [calls[start] for start in range(warm_up, len(calls), 10)]
    assert batches == ["app", "floor", "floor", "app", "app", "floor", "floor", "app"]
    assert calls.count("app") == calls.count("floor") == 2 + 4 * 10
    assert (result.rounds, result.calls) == (4, 10)
    assert result.measured > 0
    assert result.floor > 0
