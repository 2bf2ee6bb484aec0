"""The chat page's view of the room in a real browser against the local stack: who is online, and
what the server itself says.

Presence comes from the app's `GET /api/groups/{group}/users` (the page polls it while joined), so
these tests change who is connected and watch the list follow, page by page; server messages go
through the publish API (`POST /api/messages`) and must read as the server's, not a user's.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from playwright.sync_api import Locator, Route, expect

from tests.support.browser import RECONNECT_TIMEOUT_MS, AppSettings, ChatPage, LocalStack

OpenChat = Callable[..., ChatPage]
# The page polls every 5 s and the app caches for 2 s: a change shows within about 8 s.
PRESENCE_TIMEOUT_MS = 15_000


def joined(group: str, open_chat: OpenChat, **options: object) -> ChatPage:
    user = open_chat(**options)
    user.expect_connected()
    user.join(group)
    return user


def online(user: ChatPage) -> Locator:
    return user.page.get_by_test_id("presence-list").locator("li")


def online_user(user: ChatPage, user_id: str) -> Locator:
    return user.page.get_by_test_id("presence-list").locator(f'li[data-user-id="{user_id}"]')


def test_presence_lists_who_is_online_and_follows_joins_and_leaves(
    app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    alice = joined(group, open_chat)
    bob = joined(group, open_chat)

    expect(online(alice)).to_have_count(2, timeout=PRESENCE_TIMEOUT_MS)
    expect(alice.page.get_by_test_id("presence-title")).to_have_text(f"Online in {group}")
    expect(online_user(alice, alice.user_id)).to_have_text(f"{alice.user_id} (you) 1 connection")
    expect(online_user(alice, bob.user_id)).to_have_text(f"{bob.user_id} 1 connection")
    expect(alice.page.get_by_test_id("presence-summary")).to_have_text("2 people, 2 connections")

    # Bob opens a second tab as the same user: one person, two connections.
    second_tab = bob.page.context.new_page()
    second_tab.add_init_script(f"sessionStorage.setItem('chat-user-id', {bob.user_id!r})")
    second_tab.goto(bob.page.url)
    bob_again = ChatPage(second_tab)
    bob_again.expect_connected()
    bob_again.join(group)
    expect(online_user(alice, bob.user_id)).to_have_text(f"{bob.user_id} 2 connections", timeout=PRESENCE_TIMEOUT_MS)
    expect(alice.page.get_by_test_id("presence-summary")).to_have_text("2 people, 3 connections")

    second_tab.close()
    expect(online_user(alice, bob.user_id)).to_have_text(f"{bob.user_id} 1 connection", timeout=PRESENCE_TIMEOUT_MS)
    bob.page.close()
    expect(online(alice)).to_have_count(1, timeout=PRESENCE_TIMEOUT_MS)
    expect(online_user(alice, alice.user_id)).to_be_visible()
    expect(alice.page.get_by_test_id("presence-summary")).to_have_text("1 person, 1 connection")
    assert alice.problems == []


def test_presence_follows_every_page_of_the_list(app_settings: AppSettings, open_chat: OpenChat, group: str) -> None:
    """The page's requests are cut to one user per page: it must follow `next` to show both."""
    requested: list[dict[str, str]] = []

    def one_per_page(route: Route) -> None:
        url = urlsplit(route.request.url)
        query = {**dict(parse_qsl(url.query)), "top": "1"}
        requested.append(query)
        route.continue_(url=url._replace(query=urlencode(query)).geturl())

    bob = joined(group, open_chat)
    alice = joined(group, open_chat, before_load=lambda page: page.route("**/api/groups/**", one_per_page))
    expect(online(alice)).to_have_count(2, timeout=PRESENCE_TIMEOUT_MS)
    assert {query.get("after") for query in requested} >= {None, min(alice.user_id, bob.user_id)}
    assert all(query["userId"] == alice.user_id for query in requested)


def test_presence_says_so_when_the_app_stops_allowing_the_group(
    app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    alice = joined(group, open_chat)
    expect(online(alice)).to_have_count(1, timeout=PRESENCE_TIMEOUT_MS)

    app_settings(NEGOTIATE_GROUPS="somewhere-else")  # the operator narrows the policy
    summary = alice.page.get_by_test_id("presence-summary")
    expect(summary).to_have_text(
        f"You may not see who is in {group}: User {alice.user_id!r} may not use group {group!r} on hub 'chat', "
        "so may not see who is in it.",
        timeout=PRESENCE_TIMEOUT_MS,
    )
    expect(online(alice)).to_have_count(0)


def publish(stack: LocalStack, body: dict[str, object]) -> None:
    response = httpx.post(f"{stack.host_url}/api/messages", json=body, timeout=10)
    assert response.status_code == 202, response.text


def test_server_messages_are_shown_as_the_servers(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    app_settings(PUBLISH_AUTH="none")
    alice = joined(group, open_chat)
    bob = joined(group, open_chat)
    bob.send("a user's message")
    expect(alice.messages_with("a user's message")).to_have_count(1)

    publish(stack, {"to": {"group": group}, "data": "The room closes at six.", "dataType": "text"})
    publish(stack, {"to": {"user": alice.user_id}, "data": {"text": "Only for you."}, "dataType": "json"})
    publish(stack, {"to": {"all": True}, "data": "AAEC", "dataType": "binary"})

    announcement = alice.messages_with("The room closes at six.")
    expect(announcement).to_have_count(1, timeout=RECONNECT_TIMEOUT_MS)
    expect(announcement).to_have_attribute("data-kind", "server")
    expect(announcement.locator(".sender")).to_have_text("Server")
    expect(alice.messages_with("Only for you.")).to_have_attribute("data-kind", "server")
    expect(alice.messages_with("3 bytes of binary data")).to_have_attribute("data-kind", "server")
    expect(bob.messages_with("The room closes at six.")).to_have_count(1)
    expect(bob.messages_with("Only for you.")).to_have_count(0)

    users_message = alice.messages_with("a user's message")
    expect(users_message).to_have_attribute("data-kind", "user")
    expect(users_message.locator(".sender")).to_have_text(bob.user_id)

    # Each kind has its own look: the server's messages are not styled like a user's.
    def background(item: Locator) -> str:
        return str(item.evaluate("element => getComputedStyle(element).backgroundColor"))

    assert background(announcement) != background(users_message)
    assert alice.problems == []
