"""What a client connection may do with groups, decided from its roles.

Without roles a client may only send events to the event handler. ``webpubsub.joinLeaveGroup``
and ``webpubsub.sendToGroup`` grant the action for every group; a ``.<group>`` suffix grants it
for that group only; ``webpubsub.joinLeaveGroups.<pattern>`` and
``webpubsub.sendToGroups.<pattern>`` grant it for group names matching a pattern in which ``*``
matches within one dot-separated segment, ``**`` matches across segments, ``?`` matches one
character other than ``.``, and a backslash escapes the next character; a pattern with more than
five ``*`` (those of ``**`` included) or a trailing backslash grants nothing (the service's
documented wildcard group roles). Literal grants are case-sensitive.

The REST permission API changes them at run time: a grant for one group adds it, a revoke for
one group takes it away even when a role or pattern covered it, and a revoke without a group
takes the action away entirely. The client protocol consults the same object, so a revoked
permission is refused at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["GroupAction", "RolePermissions", "is_valid_group_name"]

MAX_GROUP_NAME_LENGTH = 1024
#: The most ``*`` one pattern may hold, those of ``**`` included.
MAX_PATTERN_STARS = 5


class GroupAction(Enum):
    JOIN_LEAVE = ("webpubsub.joinLeaveGroup", "webpubsub.joinLeaveGroups.")
    SEND = ("webpubsub.sendToGroup", "webpubsub.sendToGroups.")

    @property
    def role(self) -> str:
        return self.value[0]

    @property
    def pattern_prefix(self) -> str:
        return self.value[1]


def is_valid_group_name(name: object) -> bool:
    """Service rule: 1 to 1024 characters, not only whitespace."""
    return isinstance(name, str) and 0 < len(name) <= MAX_GROUP_NAME_LENGTH and not name.isspace()


@dataclass
class _Grants:
    everything: bool = False
    groups: set[str] = field(default_factory=set)
    patterns: list[re.Pattern[str]] = field(default_factory=list)
    #: Groups revoked one by one: they stay refused even if ``everything`` or a pattern covers them.
    revoked: set[str] = field(default_factory=set)

    def allows(self, group: str) -> bool:
        if group in self.revoked:
            return False
        return self.everything or group in self.groups or any(p.fullmatch(group) for p in self.patterns)


class RolePermissions:
    """Permissions of one connection; rebuilt whenever its roles change."""

    def __init__(self, roles: Iterable[str]) -> None:
        self._grants = {action: _Grants() for action in GroupAction}
        # Each role is classified once, by plain string prefixes: a chat connection holds two roles
        # per permitted group (hundreds with many rooms), and this runs for every connection.
        rules = [(self._grants[action], *_ROLE_PREFIXES[action]) for action in GroupAction]
        for role in roles:
            if not role.startswith("webpubsub."):
                continue
            for grants, everything, pattern_prefix, group_prefix in rules:
                if role.startswith(group_prefix):
                    group = role[len(group_prefix) :]
                    if is_valid_group_name(group):
                        grants.groups.add(group)
                    break
                if role.startswith(pattern_prefix):
                    pattern = _compile_pattern(role[len(pattern_prefix) :])
                    if pattern is not None:
                        grants.patterns.append(pattern)
                    break
                if role == everything:
                    grants.everything = True
                    break

    def allows(self, action: GroupAction, group: str) -> bool:
        return self._grants[action].allows(group)

    def allows_all(self, action: GroupAction) -> bool:
        grants = self._grants[action]
        return grants.everything and not grants.revoked

    def grant(self, action: GroupAction, group: str | None) -> None:
        """Add a permission at run time (the REST permission API)."""
        grants = self._grants[action]
        if group is None:
            self._grants[action] = _Grants(everything=True)
        else:
            grants.revoked.discard(group)
            grants.groups.add(group)

    def revoke(self, action: GroupAction, group: str | None) -> None:
        if group is None:
            self._grants[action] = _Grants()
        else:
            grants = self._grants[action]
            grants.groups.discard(group)
            grants.revoked.add(group)


#: Per action: the role granting every group, the prefix of pattern roles, the prefix of one-group roles.
_ROLE_PREFIXES = {action: (action.role, action.pattern_prefix, action.role + ".") for action in GroupAction}


def _compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """Translate a group-name pattern into a regular expression; None if it is malformed."""
    if not pattern or _unescaped_stars(pattern) > MAX_PATTERN_STARS:
        return None
    regex: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            if index + 1 == len(pattern):
                return None
            regex.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        if pattern.startswith("**", index):
            regex.append(".*")
            index += 2
            continue
        regex.append({"*": "[^.]*", "?": "[^.]"}.get(char, re.escape(char)))
        index += 1
    return re.compile("".join(regex), re.DOTALL)


def _unescaped_stars(pattern: str) -> int:
    count = 0
    index = 0
    while index < len(pattern):
        if pattern[index] == "\\":
            index += 2
            continue
        count += pattern[index] == "*"
        index += 1
    return count
