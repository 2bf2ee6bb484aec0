"""The group policy: least privilege, and a client can narrow its grant but never widen it."""

from __future__ import annotations

import pytest

from shared.errors import BadRequest, Forbidden
from shared.policy import MAX_REQUESTED_GROUPS, GroupPolicy, groups_in_roles, roles_for


def test_no_request_grants_every_permitted_group_and_joins_none() -> None:
    grant = GroupPolicy(["chat", "news"]).grant("alice")
    assert grant.groups == ("chat", "news")
    assert grant.join == ()
    assert grant.roles == (
        "webpubsub.joinLeaveGroup.chat",
        "webpubsub.sendToGroup.chat",
        "webpubsub.joinLeaveGroup.news",
        "webpubsub.sendToGroup.news",
    )


def test_requested_subset_is_granted_and_joined() -> None:
    grant = GroupPolicy(["chat", "news"]).grant("alice", ["news", "news"])
    assert grant.groups == ("news",)
    assert grant.join == ("news",)
    assert grant.roles == ("webpubsub.joinLeaveGroup.news", "webpubsub.sendToGroup.news")


def test_group_outside_the_policy_is_forbidden_by_name() -> None:
    with pytest.raises(Forbidden) as caught:
        GroupPolicy(["chat"]).grant("alice", ["chat", "admins"])
    assert "'admins'" in caught.value.message
    assert caught.value.code == "group_not_permitted"


@pytest.mark.parametrize("name", ["", "   ", "g" * 1025, "line\nbreak"])
def test_malformed_group_name_is_a_bad_request(name: str) -> None:
    with pytest.raises(BadRequest):
        GroupPolicy(["chat"]).grant("alice", [name])


def test_too_many_requested_groups_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        GroupPolicy(["chat"]).grant("alice", ["chat"] * (MAX_REQUESTED_GROUPS + 1))


def test_no_wildcard_or_hub_wide_role_is_ever_granted() -> None:
    """Roles without a group suffix would open every group of the hub."""
    for role in GroupPolicy(["chat", "*", "a.b"]).grant("alice").roles:
        assert role.startswith(("webpubsub.joinLeaveGroup.", "webpubsub.sendToGroup."))
        assert role not in {"webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"}


def test_per_user_policy_applies_through_the_override() -> None:
    class StaffOnly(GroupPolicy):
        def permitted_groups(self, user_id: str) -> tuple[str, ...]:
            return ("staff",) if user_id.startswith("staff-") else ()

    policy = StaffOnly([])
    assert policy.grant("staff-1").groups == ("staff",)
    with pytest.raises(Forbidden):
        policy.grant("guest", ["staff"])


def test_groups_round_trip_through_roles() -> None:
    assert groups_in_roles(roles_for(["a", "b.c"])) == ("a", "b.c")
    assert groups_in_roles(["webpubsub.sendToGroup", "other.role", "webpubsub.sendToGroup.x"]) == ("x",)


def test_a_grant_knows_its_roles_as_a_set_and_equals_a_grant_of_the_same_groups() -> None:
    grant = GroupPolicy(["chat", "news"]).grant("alice")
    assert grant.permitted_roles == frozenset(grant.roles)
    assert grant == GroupPolicy(["chat", "news"]).grant("bob")
    assert GroupPolicy(["chat"]).grant("alice") != grant


def test_a_policy_without_its_base_initialiser_still_grants() -> None:
    class Fixed(GroupPolicy):
        def __init__(self) -> None:  # no super().__init__: the override alone decides
            pass

        def permitted_groups(self, user_id: str) -> tuple[str, ...]:
            return ("team",)

    assert Fixed().grant("alice").roles == roles_for(["team"])
