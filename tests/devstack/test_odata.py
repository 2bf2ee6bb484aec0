"""The OData filter language of the REST send and group APIs (reference-odata-filter)."""

from __future__ import annotations

import pytest

from devstack.webpubsub.odata import FilterError, parse_filter


@pytest.mark.parametrize(
    ("text", "selected"),
    [
        ("userId eq 'ann'", {"c1"}),
        ("UserId EQ 'ann'", {"c1"}),  # identifiers and operators in any case
        ("userId ne 'ann'", {"c2", "c3"}),
        ("userId eq null", {"c3"}),
        ("userId ne null", {"c1", "c2"}),
        ("'vip' in groups", {"c1", "c2"}),
        ("not ('vip' in groups)", {"c3"}),
        ("userId in ('ann', 'o''brien')", {"c1", "c2"}),
        ("length(userId) gt 3", {"c2"}),
        ("length(userId) le 3 or 'vip' in groups", {"c1", "c2"}),
        ("startswith(userId, 'o') and endswith(userId, 'n')", {"c2"}),
        ("contains(connectionId, '3')", {"c3"}),
        ("tolower(toupper(userId)) eq 'ann'", {"c1"}),
        # and binds tighter than or
        ("userId eq 'ann' or userId eq 'o''brien' and 'none' in groups", {"c1"}),
        ("(userId eq 'ann' or userId eq 'o''brien') and 'vip' in groups", {"c1", "c2"}),
        ("true", {"c1", "c2", "c3"}),
        ("length(userId) gt 'x'", set()),  # comparing a number with a string selects nothing
    ],
)
def test_filters_select_as_documented(text: str, selected: set[str]) -> None:
    connections = [("c1", "ann", {"vip"}), ("c2", "o'brien", {"vip", "team"}), ("c3", None, set())]
    parsed = parse_filter(text)
    assert {cid for cid, user, groups in connections if parsed.matches(cid, user, groups)} == selected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "userId eq",
        "userId eq 'a' or",
        "(userId eq 'a'",
        "color eq 'red'",
        "userId eq 'unterminated",
        "a ~ b",
        "length(userId, 'x') eq 1",
        "userId eq 'a' 'b'",
        "x" * 5000,
    ],
)
def test_invalid_filters_raise_filter_error(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)
