"""Which groups a user may use and which roles that takes.

One policy serves negotiate (what goes into the token) and the connect event (what the service
grants the connection), so the two can never disagree. Least privilege: a user gets roles only
for the groups it may use, and a client may narrow that set but never widen it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.config import MAX_GROUP_NAME_LENGTH
from shared.errors import BadRequest, Forbidden

JOIN_LEAVE_ROLE_PREFIX = "webpubsub.joinLeaveGroup."
SEND_ROLE_PREFIX = "webpubsub.sendToGroup."
MAX_REQUESTED_GROUPS = 100


def roles_for(groups: Sequence[str]) -> tuple[str, ...]:
    """The two roles a connection needs per group: join/leave it, and send to it."""
    roles: list[str] = []
    for group in groups:
        roles.append(JOIN_LEAVE_ROLE_PREFIX + group)
        roles.append(SEND_ROLE_PREFIX + group)
    return tuple(roles)


def groups_in_roles(roles: Sequence[str]) -> tuple[str, ...]:
    """The groups that appear in per-group roles, in first-seen order."""
    found: list[str] = []
    for role in roles:
        for prefix in (JOIN_LEAVE_ROLE_PREFIX, SEND_ROLE_PREFIX):
            if role.startswith(prefix):
                group = role[len(prefix) :]
                if group and group not in found:
                    found.append(group)
    return tuple(found)


def validate_group_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_GROUP_NAME_LENGTH or not name.isprintable():
        shown = name[:64]
        raise BadRequest(
            f"group {shown!r} is not a valid group name (1-{MAX_GROUP_NAME_LENGTH} printable characters)",
            code="invalid_group",
        )
    return name


@dataclass(frozen=True, slots=True)
class Grant:
    """What one connection may do: use `groups`, and join `join` as soon as it connects.

    `roles` (two per group) and `permitted_roles` are worked out once, when the grant is made:
    every connect event reads them, and a policy hands the same grant to every user.
    """

    groups: tuple[str, ...]
    join: tuple[str, ...] = ()
    roles: tuple[str, ...] = field(init=False, repr=False, compare=False)
    permitted_roles: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roles = roles_for(self.groups)
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "permitted_roles", frozenset(roles))


class GroupPolicy:
    """Every user may use the same configured groups (NEGOTIATE_GROUPS).

    Subclass and override `permitted_groups` for per-user rules; negotiate and connect both
    call it, so a rule written once applies to both.
    """

    def __init__(self, groups: Sequence[str]):
        self._groups = tuple(groups)
        self._everything = Grant(groups=self._groups)  # what every user gets without asking

    def permitted_groups(self, user_id: str) -> tuple[str, ...]:
        return self._groups

    def grant(self, user_id: str, requested: Sequence[str] | None = None) -> Grant:
        """Roles for every permitted group, or for exactly the requested subset (joined at connect).

        Raises BadRequest for a malformed group name and Forbidden naming a group outside the policy.
        """
        permitted = self.permitted_groups(user_id)
        if requested is None:
            # The same permitted groups (every user, unless a subclass decides per user): the same grant.
            everything: Grant | None = getattr(self, "_everything", None)
            if everything is not None and permitted is everything.groups:
                return everything
            return Grant(groups=permitted)
        if len(requested) > MAX_REQUESTED_GROUPS:
            raise BadRequest(f"at most {MAX_REQUESTED_GROUPS} groups may be requested", code="too_many_groups")
        chosen: list[str] = []
        for name in requested:
            validate_group_name(name)
            if name not in permitted:
                raise Forbidden(f"group {name[:64]!r} is not permitted for this user", code="group_not_permitted")
            if name not in chosen:
                chosen.append(name)
        return Grant(groups=tuple(chosen), join=tuple(chosen))
