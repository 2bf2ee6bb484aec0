"""The OData ``filter`` of the REST send and group APIs, parsed and evaluated per connection.

The service's filter language (reference-odata-filter): identifiers ``userId``, ``connectionId``
(strings) and ``groups`` (the connection's groups), names case-insensitive; string, integer,
``null``, ``true`` and ``false`` literals (``''`` escapes a quote); ``eq ne gt ge lt le``;
``in`` with a parenthesised list or with ``groups``; ``and or not`` and parentheses; functions
``length``, ``startswith``, ``endswith``, ``contains``, ``tolower`` and ``toupper``. Anything else
is a :class:`FilterError`, which the REST API answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["ConnectionFilter", "FilterError", "parse_filter"]

MAX_FILTER_LENGTH = 4096
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))"
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda left, right: bool(left == right),
    "ne": lambda left, right: bool(left != right),
    "gt": lambda left, right: _ordered(left, right) and left > right,
    "ge": lambda left, right: _ordered(left, right) and left >= right,
    "lt": lambda left, right: _ordered(left, right) and left < right,
    "le": lambda left, right: _ordered(left, right) and left <= right,
}
_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "length": (1, lambda value: len(value) if isinstance(value, str) else None),
    "startswith": (2, lambda value, prefix: _strings(value, prefix) and value.startswith(prefix)),
    "endswith": (2, lambda value, suffix: _strings(value, suffix) and value.endswith(suffix)),
    "contains": (2, lambda value, part: _strings(value, part) and part in value),
    "tolower": (1, lambda value: value.lower() if isinstance(value, str) else None),
    "toupper": (1, lambda value: value.upper() if isinstance(value, str) else None),
}
_IDENTIFIERS = ("userid", "connectionid", "groups")


class FilterError(ValueError):
    """The filter is not valid in the service's OData subset; the message says where."""


@dataclass(frozen=True)
class _Connection:
    connection_id: str
    user_id: str | None
    groups: Collection[str]


_Node = Callable[[_Connection], Any]


@dataclass(frozen=True)
class ConnectionFilter:
    """A parsed filter: ``matches`` tells whether a connection is selected."""

    text: str
    _evaluate: _Node

    def matches(self, connection_id: str, user_id: str | None, groups: Collection[str]) -> bool:
        return self._evaluate(_Connection(connection_id, user_id, groups)) is True


def parse_filter(text: str) -> ConnectionFilter:
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    parser = _Parser(_tokens(text))
    node = parser.expression()
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek()!r}")
    return ConnectionFilter(text, _boolean(node))


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise FilterError(f"unexpected character at position {position}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and self.tokens[self.position][0] == "name" and token.lower() in words:
            self.position += 1
            return token.lower()
        return None

    def _expect(self, punct: str) -> None:
        if self.peek() != punct:
            raise FilterError(f"expected {punct!r}")
        self.position += 1

    def expression(self) -> _Node:
        left = self._and()
        while self._keyword("or"):
            right = self._and()
            left = _or(left, right)
        return left

    def _and(self) -> _Node:
        left = self._unary()
        while self._keyword("and"):
            right = self._unary()
            left = _and(left, right)
        return left

    def _unary(self) -> _Node:
        if self._keyword("not"):
            operand = self._unary()
            return lambda connection: not _truth(operand(connection))
        return self._comparison()

    def _comparison(self) -> _Node:
        left = self._primary()
        operator = self._keyword(*_COMPARISONS)
        if operator is not None:
            right = self._primary()
            compare = _COMPARISONS[operator]
            return lambda connection: compare(left(connection), right(connection))
        if self._keyword("in"):
            if self.peek() == "(":
                self._expect("(")
                items = [self._primary()]
                while self.peek() == ",":
                    self._expect(",")
                    items.append(self._primary())
                self._expect(")")
                return lambda connection: left(connection) in [item(connection) for item in items]
            collection = self._primary()
            return lambda connection: _contains(collection(connection), left(connection))
        return left

    def _primary(self) -> _Node:
        if self.position >= len(self.tokens):
            raise FilterError("the filter ends too early")
        kind, value = self.tokens[self.position]
        self.position += 1
        if value == "(":
            inner = self.expression()
            self._expect(")")
            return inner
        if kind == "string":
            literal = value[1:-1].replace("''", "'")
            return lambda _: literal
        if kind == "number":
            number = int(value)
            return lambda _: number
        if kind != "name":
            raise FilterError(f"unexpected {value!r}")
        lowered = value.lower()
        constants = {"null": None, "true": True, "false": False}
        if lowered in constants:
            constant = constants[lowered]
            return lambda _: constant
        if lowered in _IDENTIFIERS:
            return _identifier(lowered)
        if lowered in _FUNCTIONS and self.peek() == "(":
            return self._call(lowered)
        raise FilterError(f"unknown identifier or function {value!r}")

    def _call(self, name: str) -> _Node:
        arity, function = _FUNCTIONS[name]
        self._expect("(")
        arguments = [self.expression()]
        while self.peek() == ",":
            self._expect(",")
            arguments.append(self.expression())
        self._expect(")")
        if len(arguments) != arity:
            raise FilterError(f"{name} takes {arity} argument{'s' if arity > 1 else ''}")
        return lambda connection: function(*(argument(connection) for argument in arguments))


def _identifier(name: str) -> _Node:
    if name == "userid":
        return lambda connection: connection.user_id
    if name == "connectionid":
        return lambda connection: connection.connection_id
    return lambda connection: tuple(connection.groups)


def _or(left: _Node, right: _Node) -> _Node:
    return lambda connection: _truth(left(connection)) or _truth(right(connection))


def _and(left: _Node, right: _Node) -> _Node:
    return lambda connection: _truth(left(connection)) and _truth(right(connection))


def _boolean(node: _Node) -> _Node:
    return lambda connection: node(connection) is True


def _truth(value: Any) -> bool:
    return value is True


def _contains(collection: Any, item: Any) -> bool:
    return isinstance(collection, tuple) and item in collection


def _ordered(left: Any, right: Any) -> bool:
    both_numbers = all(isinstance(value, int) and not isinstance(value, bool) for value in (left, right))
    return both_numbers or _strings(left, right)


def _strings(*values: Any) -> bool:
    return all(isinstance(value, str) for value in values)
