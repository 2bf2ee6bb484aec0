"""Every template is readable by pycep-parser 0.5.1, the parser checkov pins.

checkov exits 0 when it cannot parse a template and simply scans nothing in it, so readability
is checked here directly, and the constructs known to break that parser are named by a lint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep_lint import lint
from tests.infra.templates import INFRA_DIR, bicep_files, parse, parse_text

TEMPLATES = bicep_files()


def readable(text: str) -> bool:
    try:
        parse_text(text)
    except Exception:
        return False
    return True


def resource(*lines: str) -> str:
    return "resource r 'Microsoft.Example/things@2024-01-01' = {\n" + "".join(f"{line}\n" for line in lines) + "}\n"


def test_infra_has_the_expected_templates() -> None:
    names = {path.relative_to(INFRA_DIR).as_posix() for path in TEMPLATES}
    assert {"main.bicep", "modules/function.bicep", "modules/webpubsub.bicep", "modules/hub.bicep"} <= names


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.name)
def test_template_parses_with_the_parser_checkov_uses(path: Path) -> None:
    template = parse(path)
    assert template.get("resources") or template.get("modules"), f"{path.name} declares nothing"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.name)
def test_template_uses_no_syntax_that_parser_cannot_read(path: Path) -> None:
    assert lint(path.read_text(encoding="utf-8")) == []


# The lint itself: each rule fires on the construct it names, and stays quiet otherwise.

CLEAN = resource(
    "  // checkov:skip lines and other comments, a few at a time",
    "  name: 'https://example.com/a//b'",
    "  properties: {",
    "    a: '${x}'",
    "  }",
)


def test_lint_passes_ordinary_bicep() -> None:
    assert lint(CLEAN) == []
    assert readable(CLEAN)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("var base = {\n  a: 1\n}\nvar merged = {\n  ...base\n  b: 2\n}\n", "spread"),
        ("type mode = 'entra' | 'keyvault'\n", "union"),
        ("type settings = {\n  name: string?\n}\n", "nullable member"),
        ("type settings = {\n  @minLength(1)\n  name: string\n}\n", "decorated member"),
        ("@description('x')\ntype settings = {\n  name: string\n}\n", "decorated user-defined type"),
        ("param name string?\n", "nullable parameter"),
    ],
)
def test_lint_names_unreadable_constructs(source: str, message: str) -> None:
    problems = lint(source)
    assert any(message in problem for problem in problems), problems


def test_lint_counts_comment_lines_in_an_object() -> None:
    spread_out = ["  name: 'r'"]
    for index in range(10):
        spread_out += [f"  // note {index}", f"  p{index}: {index}"]
    problems = lint(resource(*spread_out))
    assert any("more than 9 comment lines" in problem for problem in problems), problems


def test_lint_matches_where_the_parser_trips_on_comment_runs() -> None:
    four_between = resource("  name: 'r'", *[f"  // c{i}" for i in range(4)], "", "  kind: 'k'")
    five_between = resource("  name: 'r'", *[f"  // c{i}" for i in range(3)], "", "  // c3", "  // c4", "  kind: 'k'")
    nine_leading = resource(*[f"  // c{i}" for i in range(9)], "  name: 'r'")
    assert (lint(four_between), readable(four_between)) == ([], True)
    assert (bool(lint(five_between)), readable(five_between)) == (True, False)
    assert (lint(nine_leading), readable(nine_leading)) == ([], True)
