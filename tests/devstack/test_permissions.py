"""The local service's group permissions follow the service's documented role grammar (tests/support/roles.py)."""

from __future__ import annotations

import pytest

from devstack.webpubsub.permissions import GroupAction, RolePermissions
from tests.support.roles import PATTERN_CASES, ROLE_CASES, PatternCase, RoleCase


@pytest.mark.parametrize("case", PATTERN_CASES, ids=lambda case: f"{case.pattern}~{case.group}")
def test_pattern_roles_match_as_documented(case: PatternCase) -> None:
    for action in GroupAction:
        permissions = RolePermissions([action.pattern_prefix + case.pattern])
        assert permissions.allows(action, case.group) is case.matches


@pytest.mark.parametrize("case", ROLE_CASES, ids=lambda case: f"{case.role}~{case.group}")
def test_roles_grant_what_they_name(case: RoleCase) -> None:
    permissions = RolePermissions([case.role])
    assert permissions.allows(GroupAction.JOIN_LEAVE, case.group) is case.join_leave
    assert permissions.allows(GroupAction.SEND, case.group) is case.send
