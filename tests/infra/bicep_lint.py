"""Finds Bicep syntax that pycep-parser 0.5.1 (the parser checkov 3.3.30 pins) cannot read.

checkov reports a template it cannot parse as a "parsing error" and still exits 0, so an
unreadable template silently escapes every check. Besides parsing each template (see
test_syntax.py), this lint names the constructs known to break that parser, with a line number:

- object spread (`{...base, extra: 1}`);
- user-defined types with union (`'a' | 'b'`), nullable (`string?`) or decorated members, and
  decorators on a type declaration; nullable parameter types (`param x string?`);
- comment lines inside an object or array: ten or more in one object (the project's rule), and
  what the grammar actually trips on, measured against pycep 0.5.1: more than 9 full-line
  comments before the first element of an object or array, or more than 4 between two elements
  (blank lines in between do not reset the count).

The scanner knows single-quoted strings (with \\' escapes), ''' multi-line strings and comments;
it does not follow string literals nested inside ${...} interpolations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_COMMENT_LINES_IN_OBJECT = 9
MAX_LEADING_COMMENT_RUN = 9
MAX_COMMENT_RUN_BETWEEN_ELEMENTS = 4

NULLABLE_PARAM = re.compile(r"^param\s+\w+\s+\w+\?")
TYPE_STATEMENT = re.compile(r"^type\s+\w+\s*=")


@dataclass
class _Container:
    opener: str
    line: int
    seen_element: bool = False
    run: int = 0
    comment_lines: int = 0
    reported: bool = False


@dataclass
class _State:
    in_string: bool = False
    in_multiline_string: bool = False
    in_block_comment: bool = False
    stack: list[_Container] = field(default_factory=list)


def _code_of_line(line: str, state: _State, line_number: int) -> str:
    """The line with strings and comments blanked out; updates the container stack."""
    code: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        if state.in_block_comment:
            if line.startswith("*/", i):
                state.in_block_comment = False
                i += 2
                continue
            i += 1
            continue
        if state.in_multiline_string:
            if line.startswith("'''", i):
                state.in_multiline_string = False
                i += 3
                continue
            i += 1
            continue
        if state.in_string:
            if char == "\\":
                i += 2
                continue
            if char == "'":
                state.in_string = False
            i += 1
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state.in_block_comment = True
            i += 2
            continue
        if line.startswith("'''", i):
            state.in_multiline_string = True
            i += 3
            code.append("''")
            continue
        if char == "'":
            state.in_string = True
            code.append("''")
            i += 1
            continue
        if char in "{[(":
            state.stack.append(_Container(opener=char, line=line_number))
        elif char in "}])" and state.stack:
            state.stack.pop()
            if state.stack:
                # The closing bracket ends an element of the enclosing container.
                state.stack[-1].seen_element = True
                state.stack[-1].run = 0
        code.append(char)
        i += 1
    return "".join(code)


def lint(text: str) -> list[str]:
    """Problems found in a Bicep source, as 'line N: message' strings; empty when clean."""
    problems: list[str] = []
    state = _State()
    pending_decorator = False
    in_type_statement = False
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        starts_in_code = not (state.in_string or state.in_multiline_string or state.in_block_comment)
        if starts_in_code and stripped.startswith("//") and state.stack:
            for container in state.stack:
                container.comment_lines += 1
                if container.comment_lines > MAX_COMMENT_LINES_IN_OBJECT and not container.reported:
                    container.reported = True
                    problems.append(
                        f"line {line_number}: the object or array opened on line {container.line} holds "
                        f"more than {MAX_COMMENT_LINES_IN_OBJECT} comment lines"
                    )
            innermost = state.stack[-1]
            innermost.run += 1
            limit = MAX_COMMENT_RUN_BETWEEN_ELEMENTS if innermost.seen_element else MAX_LEADING_COMMENT_RUN
            if innermost.run == limit + 1:
                problems.append(
                    f"line {line_number}: more than {limit} comment lines in a row inside the object or array "
                    f"opened on line {innermost.line}"
                )
            continue
        if starts_in_code and not stripped:
            continue
        if starts_in_code and state.stack:
            state.stack[-1].seen_element = True
            state.stack[-1].run = 0

        at_top_level = starts_in_code and not state.stack
        code = _code_of_line(line, state, line_number)
        code_stripped = code.strip()

        if "..." in code:
            problems.append(f"line {line_number}: object or array spread (...) is not readable by pycep 0.5.1")
        if at_top_level and NULLABLE_PARAM.match(code_stripped):
            problems.append(f"line {line_number}: nullable parameter type")
        if at_top_level and TYPE_STATEMENT.match(code_stripped):
            if pending_decorator:
                problems.append(f"line {line_number}: decorated user-defined type")
            in_type_statement = True
        if in_type_statement:
            if "|" in code:
                problems.append(f"line {line_number}: union in a user-defined type")
            if "?" in code:
                problems.append(f"line {line_number}: nullable member in a user-defined type")
            if "@" in code and not (at_top_level and TYPE_STATEMENT.match(code_stripped)):
                problems.append(f"line {line_number}: decorated member in a user-defined type")
            if not state.stack:
                in_type_statement = False
        if at_top_level and code_stripped:
            pending_decorator = code_stripped.startswith("@")
    return problems
