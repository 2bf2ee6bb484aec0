"""The chat page in a real browser against the local stack: chat, recovery, reconnection, refresh.

Each test is one thing a user would notice if it broke: two people chatting, each message with its
time and "delivered"; why Send is off before a group is joined; a group outside the policy refused
at once, naming the allowed ones; a dropped connection coming back without losing messages; a
connection the service refuses to take back (1008) replaced by a fresh negotiate with the group
rejoined; a refused connect (401) retried with a new URL; a lost network coming back; a token
renewed before it expires without any visible change; negotiate failures told in words, once;
outages of the app and of the service told apart; and the sign-in link behind App Service
Authentication.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from playwright.sync_api import Locator, Page, Route, WebSocketRoute, expect

from tests.support.browser import RECONNECT_TIMEOUT_MS, AppSettings, ChatPage, LocalStack
from tests.support.fakes import UnavailableAtFirst

OpenChat = Callable[..., ChatPage]


def wait_for(condition: Callable[[], bool], page: Page, what: str, timeout_ms: int = RECONNECT_TIMEOUT_MS) -> None:
    """Poll a condition on the test side (service state), letting the page run in between."""
    for _ in range(timeout_ms // 100):
        if condition():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting until {what}")


def two_users_in(group: str, open_chat: OpenChat) -> tuple[ChatPage, ChatPage]:
    alice, bob = open_chat(), open_chat()
    for user in (alice, bob):
        user.expect_connected()
        user.join(group)
    return alice, bob


def the_connection_of(stack: LocalStack, user: ChatPage) -> dict[str, object]:
    connections = stack.live_connections_of(user.user_id)
    assert len(connections) == 1, connections
    return connections[0]


def sent_at(message: Locator) -> datetime:
    """The time a message line shows, as its <time datetime>; the shown text is the local hh:mm."""
    time = message.locator("time")
    expect(time).to_have_text(re.compile(r"^\d{1,2}:\d{2}( ?[AP]M)?$"))
    return datetime.fromisoformat(str(time.get_attribute("datetime")))


def test_two_users_chat_and_see_their_messages_delivered(
    app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    started = datetime.now(UTC)
    alice, bob = two_users_in(group, open_chat)
    assert alice.user_id != bob.user_id

    alice.send("hello bob")
    expect(bob.messages_with("hello bob")).to_have_count(1)
    mine = alice.messages_with("hello bob")
    expect(mine).to_have_attribute("data-state", "acked")
    expect(mine.locator(".ack")).to_have_text("✓ delivered")
    bob.send("hi alice")
    expect(alice.messages_with("hi alice")).to_have_count(1)
    expect(alice.messages_with("hi alice")).to_contain_text(bob.user_id)
    # Every line says when: the time it was sent (yours) or received (others').
    for message in (mine, bob.messages_with("hello bob"), alice.messages_with("hi alice")):
        assert started - timedelta(seconds=1) <= sent_at(message) <= datetime.now(UTC)

    # The page connected without asking anything, with one negotiate carrying its generated user id.
    assert len(alice.negotiations) == 1
    assert dict(parse_qsl(urlsplit(alice.negotiations[0]).query)) == {"userId": alice.user_id}
    # The strict Content-Security-Policy allowed everything the page needed, and nothing failed.
    assert alice.problems == []
    assert bob.problems == []


def test_send_says_why_it_is_off_until_a_group_is_joined(
    app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    alice = open_chat()
    hint = alice.page.get_by_test_id("send-hint")
    alice.expect_connected()
    expect(hint).to_have_text("Join a group above to send messages to it.")
    expect(alice.page.get_by_test_id("send-button")).to_be_disabled()
    expect(alice.page.get_by_test_id("send-button")).to_have_accessible_description(
        "Join a group above to send messages to it."
    )
    expect(alice.page.get_by_test_id("message-input")).to_have_attribute("placeholder", "Join a group first")
    expect(alice.page.get_by_test_id("group-input")).to_have_value(group)  # the policy's group, ready to join

    alice.join(group)
    expect(hint).to_be_hidden()
    expect(alice.page.get_by_test_id("message-input")).to_have_attribute("placeholder", f"Message to {group}")


def test_join_outside_the_policy_is_refused_at_once_naming_the_allowed_groups(
    app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    """The page knows from its own token which groups it may join: it does not ask the service (and
    wait out the client's retries of the refusal) to find out."""
    app_settings(NEGOTIATE_GROUPS=f"{group},lobby")
    sent_frames: list[str] = []
    alice = open_chat(
        before_load=lambda page: page.on(
            "websocket", lambda socket: socket.on("framesent", lambda frame: sent_frames.append(str(frame)))
        )
    )
    alice.expect_connected()
    alice.page.get_by_test_id("group-input").fill("not-permitted")
    alice.page.get_by_test_id("join-button").click()
    expect(alice.page.get_by_test_id("error")).to_have_text(
        f"You may not join not-permitted. Groups you may join: {group}, lobby."
    )
    expect(alice.page.get_by_test_id("send-button")).to_be_disabled()
    expect(alice.page.get_by_test_id("join-button")).to_be_enabled()
    assert not [frame for frame in sent_frames if "joinGroup" in frame]

    alice.join("lobby")  # one of the named groups works, and the error goes away
    expect(alice.page.get_by_test_id("error")).to_be_hidden()


def test_dropped_connection_recovers_without_losing_messages(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    alice, bob = two_users_in(group, open_chat)
    before = the_connection_of(stack, alice)

    stack.drop(str(before["connectionId"]))
    bob.send("sent while alice was away")
    expect(alice.messages_with("sent while alice was away")).to_have_count(1, timeout=RECONNECT_TIMEOUT_MS)

    alice.send("alice is back")
    expect(bob.messages_with("alice is back")).to_have_count(1, timeout=RECONNECT_TIMEOUT_MS)
    after = the_connection_of(stack, alice)
    assert after["connectionId"] == before["connectionId"]  # recovered, not replaced
    assert len(alice.negotiations) == 1  # recovery reuses the still valid URL
    alice.expect_connected()


def test_network_loss_reads_reconnecting_then_recovers_the_same_connection(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    """Alice's network goes away: her socket ends and, offline, every attempt to recover fails.

    The status must say so at once (the official client is silent while it recovers), sending is
    off meanwhile, and when the network is back the same connection resumes with what she missed.
    """
    alice, bob = two_users_in(group, open_chat)
    before = the_connection_of(stack, alice)

    alice.page.context.set_offline(True)
    stack.drop(str(before["connectionId"]))
    expect(alice.page.get_by_test_id("status")).to_have_text("reconnecting")
    expect(alice.page.get_by_test_id("send-button")).to_be_disabled()
    expect(alice.page.get_by_test_id("send-hint")).to_have_text(
        "Sending is paused until the connection is back; the page reconnects by itself."
    )
    # Offline, the page cannot tell the service from the network: the socket is what failed.
    expect(alice.page.get_by_test_id("status-detail")).to_have_text(
        "The Web PubSub service cannot be reached or refused the connection (close code 1006); retrying automatically."
    )
    bob.send("sent while alice was offline")
    alice.page.wait_for_timeout(2_500)  # two recovery attempts, both refused by the missing network
    assert stack.live_connections_of(alice.user_id) == []
    expect(alice.page.get_by_test_id("status")).to_have_text("reconnecting")

    alice.page.context.set_offline(False)
    alice.expect_connected()
    expect(alice.page.get_by_test_id("status-detail")).to_be_hidden()
    expect(alice.messages_with("sent while alice was offline")).to_have_count(1)
    assert the_connection_of(stack, alice)["connectionId"] == before["connectionId"]
    alice.send("back online")
    expect(bob.messages_with("back online")).to_have_count(1)
    assert len(alice.negotiations) == 1  # recovery needs no new URL
    assert alice.status_history() == ["connecting", "connected", "reconnecting", "connected"]


def test_close_1008_negotiates_again_and_rejoins_the_group(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    alice, bob = two_users_in(group, open_chat)
    before = the_connection_of(stack, alice)

    stack.close_with_1008(str(before["connectionId"]))
    wait_for(lambda: len(alice.negotiations) == 2, alice.page, "the page negotiated again")
    alice.expect_connected()
    wait_for(
        lambda: [item["groups"] for item in stack.live_connections_of(alice.user_id)] == [[group]],
        alice.page,
        "the new connection is back in the group",
    )
    assert the_connection_of(stack, alice)["connectionId"] != before["connectionId"]

    bob.send("welcome back")
    expect(alice.messages_with("welcome back")).to_have_count(1)
    assert "reconnecting" in alice.status_history()  # the user was told while it happened


def test_refused_connect_gets_a_new_url(app_settings: AppSettings, open_chat: OpenChat, group: str) -> None:
    """The service answers 401 to a URL whose token it does not accept; the page negotiates again."""
    spoiled: list[str] = []

    def spoil_first_token(route: Route) -> None:
        if spoiled:
            route.continue_()
            return
        response = route.fetch()
        access = response.json()
        url = urlsplit(access["url"])
        query = dict(parse_qsl(url.query))
        query["access_token"] = "not-a-token"
        access["url"] = url._replace(query=urlencode(query)).geturl()
        spoiled.append(access["url"])
        route.fulfill(response=response, body=json.dumps(access))

    alice = open_chat(before_load=lambda page: page.route("**/api/negotiate*", spoil_first_token))
    alice.expect_connected()
    assert spoiled
    assert len(alice.negotiations) == 2
    alice.join(group)


def test_token_is_renewed_before_it_expires_without_the_user_noticing(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    """One-minute tokens; the browser's clock is moved ahead instead of waiting for it.

    The page schedules the renewal from the token's lifetime (expiresOn minus the negotiate
    response's Date), so moving the page's clock is what a real minute would do to it. The
    service does not close connections whose token expires (it checks tokens at connect only), so
    what matters is that the page is on a new connection, with a new token, before the old
    token's expiresOn, in the same group, and the status never changed. The page's clock is
    stopped 50 s in, so all of that must happen while the page's time is before expiresOn.
    """
    app_settings(TOKEN_LIFETIME_MINUTES="1")
    loaded_at = datetime.now(UTC)
    alice = open_chat(before_load=lambda page: page.clock.install(time=loaded_at))
    bob = open_chat()
    for user in (alice, bob):
        user.expect_connected()
        user.join(group)
    before = the_connection_of(stack, alice)

    alice.page.clock.fast_forward("00:40")  # not yet: a quarter of the lifetime is 15 s
    alice.page.wait_for_timeout(500)
    assert len(alice.negotiations) == 1

    alice.page.clock.pause_at(loaded_at + timedelta(seconds=50))
    wait_for(lambda: len(alice.negotiations) == 2, alice.page, "the page negotiated again")

    def on_a_new_connection() -> bool:
        live = stack.live_connections_of(alice.user_id)
        return len(live) == 1 and live[0]["connectionId"] != before["connectionId"]

    wait_for(on_a_new_connection, alice.page, "the page left the old connection for a new one")
    assert the_connection_of(stack, alice)["groups"] == [group]
    page_time_ms = alice.page.evaluate("Date.now()")
    assert page_time_ms < (loaded_at + timedelta(seconds=60)).timestamp() * 1000  # before expiresOn
    alice.page.clock.resume()

    bob.send("still here?")
    expect(alice.messages_with("still here?")).to_have_count(1)
    alice.send("yes")
    expect(bob.messages_with("yes")).to_have_count(1)
    assert alice.status_history() == ["connecting", "connected"]
    assert alice.problems == []


def test_without_a_signed_in_user_the_page_offers_sign_in(app_settings: AppSettings, open_chat: OpenChat) -> None:
    """Behind App Service Authentication negotiate answers 401 until the user signs in."""
    app_settings(NEGOTIATE_AUTH="appservice", WEBSITE_AUTH_ENABLED="true")
    alice = open_chat()
    expect(alice.page.get_by_test_id("status")).to_have_text("signed out")
    link = alice.page.get_by_test_id("sign-in").get_by_role("link")
    expect(link).to_have_attribute("href", "/.auth/login/aad?post_login_redirect_uri=/api/client")
    assert "userId=" not in alice.negotiations[0]  # only anonymous (local) negotiate takes a user id
    wait_for(lambda: len(alice.negotiations) >= 3, alice.page, "the page negotiated three times")
    expect(alice.page.get_by_test_id("activity").locator("li", has_text="Sign in to chat.")).to_have_count(1)


def test_negotiate_503_is_told_in_words_and_the_page_connects_when_it_passes(
    app_settings: AppSettings, open_chat: OpenChat
) -> None:
    app_settings(wrap_token_source=lambda real: UnavailableAtFirst(real, failures=1))
    alice = open_chat()
    detail = alice.page.get_by_test_id("status-detail")
    expect(detail).to_have_text(
        "The app cannot connect you for now (HTTP 503): Azure Key Vault is unavailable; retry later. "
        "Retrying automatically."
    )
    alice.expect_connected()  # after the Retry-After second, with a new negotiate
    expect(detail).to_be_hidden()
    assert len(alice.negotiations) == 2


def test_negotiate_401_without_sign_in_is_told_in_words(app_settings: AppSettings, open_chat: OpenChat) -> None:
    """Bearer mode: the page has no token to send, so negotiate refuses it and the page says why."""
    app_settings(
        NEGOTIATE_AUTH="bearer",
        NEGOTIATE_BEARER_ISSUER="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0",
        NEGOTIATE_BEARER_AUDIENCE="api://chat",
    )
    alice = open_chat()
    expect(alice.page.get_by_test_id("status")).to_have_text("signed out")
    error = alice.page.get_by_test_id("error")
    expect(error).to_contain_text("You are not signed in (HTTP 401): ")
    expect(error).to_contain_text(
        "This page cannot sign in by itself: the app expects a caller it can identify (NEGOTIATE_AUTH=bearer). "
        "Use a client that signs you in; see docs/clients.md."
    )
    expect(alice.page.get_by_test_id("join-button")).to_be_disabled()
    expect(alice.page.get_by_test_id("send-hint")).to_have_text("Sign in to send messages.")

    # The page keeps trying (a sign-in elsewhere may fix it), but tells the same refusal once.
    wait_for(lambda: len(alice.negotiations) >= 3, alice.page, "the page negotiated three times")
    expect(error).to_have_count(1)
    logged = alice.page.get_by_test_id("activity").locator("li", has_text="You are not signed in")
    expect(logged).to_have_count(1)


def test_negotiate_403_from_the_platform_is_told_in_words(app_settings: AppSettings, open_chat: OpenChat) -> None:
    """A 403 in front of the app (access restrictions, an authorization rule) comes as an HTML page."""

    def forbid(route: Route) -> None:
        route.fulfill(status=403, content_type="text/html", body="<html><body>403 - Forbidden</body></html>")

    alice = open_chat(before_load=lambda page: page.route("**/api/negotiate*", forbid))
    expect(alice.page.get_by_test_id("status-detail")).to_have_text(
        "You are not allowed to chat here (HTTP 403): Negotiate answered HTTP 403. Retrying, in case access is granted."
    )
    expect(alice.page.get_by_test_id("status")).to_have_text("connecting")
    expect(alice.page.get_by_test_id("join-button")).to_be_disabled()


def test_an_outage_of_the_app_is_told_as_the_apps_and_the_page_retries(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    """The connection ends for good (1008) while the app cannot be reached: the page must say that it
    is the app, not the service, and that it keeps trying."""
    alice, _ = two_users_in(group, open_chat)
    alice.page.route("**/api/negotiate*", lambda route: route.abort())
    stack.close_with_1008(str(the_connection_of(stack, alice)["connectionId"]))

    detail = alice.page.get_by_test_id("status-detail")
    expect(detail).to_have_text(
        "Cannot reach the app: The app could not be reached (Failed to fetch). Check the network; retrying.",
        timeout=RECONNECT_TIMEOUT_MS,
    )
    expect(alice.page.get_by_test_id("status")).to_have_text("reconnecting")
    alice.page.unroute("**/api/negotiate*")
    alice.expect_connected()
    expect(detail).to_be_hidden()


def test_an_outage_of_the_service_is_told_as_the_services_and_the_page_retries(
    stack: LocalStack, app_settings: AppSettings, open_chat: OpenChat, group: str
) -> None:
    """The socket drops and the service takes no new one while the app is fine: the page must name
    the service, and come back on its own once the service does."""
    alice, bob = two_users_in(group, open_chat)
    service_down = [True]

    def service(socket: WebSocketRoute) -> None:
        if service_down[0]:
            socket.close(code=1011, reason="down on purpose")
        else:
            socket.connect_to_server()

    alice.page.route_web_socket(re.compile(r"^wss?://"), service)
    stack.drop(str(the_connection_of(stack, alice)["connectionId"]))

    detail = alice.page.get_by_test_id("status-detail")
    expect(detail).to_have_text(
        re.compile(
            r"^The Web PubSub service cannot be reached or refused the connection \(close code \d+\); "
            r"retrying automatically\.$"
        ),
        timeout=RECONNECT_TIMEOUT_MS,
    )
    expect(alice.page.get_by_test_id("status")).to_have_text("reconnecting")
    service_down[0] = False
    alice.expect_connected()
    expect(detail).to_be_hidden()
    bob.send("the service is back")
    expect(alice.messages_with("the service is back")).to_have_count(1)
