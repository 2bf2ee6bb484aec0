"""The grammar of the service's group roles, as one table both the doctor and the local service are tested with.

Pattern roles (`webpubsub.joinLeaveGroups.<pattern>`, `webpubsub.sendToGroups.<pattern>`) follow the
service's documented wildcard syntax (Azure Web PubSub, "Wildcard group roles", concept-wildcard-group-roles):
`?` one character but `.`, `*` zero or more characters but `.`, `**` zero or more of any, `\\` escapes
`\\`, `*` and `?`, `.` separates segments, and at most five `*` in one pattern (those of `**` included).
The first rows are the documentation's own examples; the rest pin the edges both implementations
must agree on (escapes, malformed patterns).
"""

from __future__ import annotations

from typing import NamedTuple


class PatternCase(NamedTuple):
    pattern: str
    group: str
    matches: bool


DOCUMENTED = [
    PatternCase("chat-*", "chat-1", True),
    PatternCase("chat-*", "chat-room", True),
    PatternCase("chat-*", "chat.1", False),
    PatternCase("chat-*", "xchat-1", False),
    PatternCase("clientA.*", "clientA.alpha", True),
    PatternCase("clientA.*", "clientA.1", True),
    PatternCase("clientA.*", "clientA.alpha.room1", False),
    PatternCase("clientA.*", "clientB.alpha", False),
    PatternCase("clientA.**", "clientA.alpha", True),
    PatternCase("clientA.**", "clientA.alpha.room1", True),
    PatternCase("clientA.**", "clientB.anything", False),
    PatternCase("clientA.rooms.?1", "clientA.rooms.a1", True),
    PatternCase("clientA.rooms.?1", "clientA.rooms.11", True),
    PatternCase("clientA.rooms.?1", "clientA.rooms.1", False),
    PatternCase("clientA.rooms.?1", "clientA.rooms.a.1", False),
    PatternCase("literal\\*star", "literal*star", True),
    PatternCase("literal\\*star", "literalXstar", False),
    PatternCase("project\\*123", "project*123", True),
    PatternCase("project\\*123", "projectX123", False),
]

EDGES = [
    PatternCase("a?c", "a.c", False),  # `?` never matches the separator
    PatternCase("what\\?", "what?", True),
    PatternCase("what\\?", "whatX", False),
    PatternCase("back\\\\slash", "back\\slash", True),
    PatternCase("trailing\\", "trailing\\", False),  # malformed: grants nothing
    PatternCase("trailing\\", "trailing", False),
    PatternCase("*.*.*", "a.b.c", True),
    PatternCase("a.**.b", "a.x.y.b", True),
    PatternCase("**", "any.thing", True),
    PatternCase("*-*-*-*-*", "a-b-c-d-e", True),  # five stars: the most allowed
    PatternCase("*-*-*-*-*-*", "a-b-c-d-e-f", False),  # six: the role grants nothing
    PatternCase("**.**.*", "a.b.c", True),
    PatternCase("**.**.**", "a.b.c", False),  # six stars, counted in pairs too
    PatternCase("\\*\\*\\*\\*\\*\\*", "******", True),  # escaped stars are not wildcards
    PatternCase("Chat", "chat", False),  # case-sensitive
]

PATTERN_CASES = DOCUMENTED + EDGES


class RoleCase(NamedTuple):
    role: str
    group: str
    join_leave: bool
    send: bool


ROLE_CASES = [
    RoleCase("webpubsub.joinLeaveGroup", "any.group", True, False),
    RoleCase("webpubsub.sendToGroup", "any.group", False, True),
    RoleCase("webpubsub.joinLeaveGroup.chat", "chat", True, False),
    RoleCase("webpubsub.joinLeaveGroup.chat", "chat2", False, False),
    RoleCase("webpubsub.sendToGroup.room.1", "room.1", False, True),
    RoleCase("webpubsub.sendToGroup.chat-*", "chat-1", False, False),  # a literal role is no pattern
    RoleCase("webpubsub.sendToGroup.chat-*", "chat-*", False, True),
    RoleCase("webpubsub.joinLeaveGroups.room.*", "room.1", True, False),
    RoleCase("webpubsub.sendToGroups.room.*", "room.1.a", False, False),
    RoleCase("webpubsub.sendToGroups.clientA.**", "clientA.alpha.room1", False, True),
]
