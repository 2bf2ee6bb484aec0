"""The whole product on one machine, driven by headless Chromium.

The local Functions host (devstack.host) serves the app's own routes, the local Web PubSub
service (devstack.webpubsub) sends its events back to the host's /api/eventhandler, and
Playwright drives Debian's Chromium (browser downloads do not work on these machines, so
Playwright's own builds are never used). Servers and browser start once per module; every test
gets its own app settings, its own group and fresh browser contexts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, expect, sync_playwright

import function_app
from devstack.host import build_host
from devstack.servers import ServerThread
from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from shared.config import load_settings
from shared.runtime import Runtime, use_runtime
from shared.tokens import TokenSource

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HUB = "chat"
# Reconnecting includes a jittered backoff of up to a second or two; give it room.
RECONNECT_TIMEOUT_MS = 15_000

# Records every text the status element shows, from the first paint on.
STATUS_RECORDER = """
window.__statusHistory = [];
document.addEventListener("DOMContentLoaded", () => {
  const status = document.querySelector('[data-testid="status"]');
  const record = () => window.__statusHistory.push(status.textContent);
  record();
  new MutationObserver(record).observe(status, { childList: true, characterData: true, subtree: true });
});
"""


@dataclass
class LocalStack:
    """The running host and service, plus the hooks tests use to misbehave on purpose."""

    host_url: str
    service: RunningWebPubSub

    @property
    def page_url(self) -> str:
        return f"{self.host_url}/api/client"

    def live_connections_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's connections that have a socket (not those only kept for recovery)."""
        manager = self.service.service.connections
        snapshot = self.service.service.call(manager.snapshot)
        return [item for item in snapshot if item["userId"] == user_id and item["attached"]]

    def drop(self, connection_id: str) -> None:
        """Close the socket but keep the connection recoverable, as a service restart does."""
        manager = self.service.service.connections
        assert self.service.service.call(lambda: manager.drop_transport(connection_id))

    def close_with_1008(self, connection_id: str) -> None:
        """End the connection for good with 1008, as the service does when it will not take it back."""
        manager = self.service.service.connections

        def close() -> None:
            connection = manager.get(HUB, connection_id)
            assert connection is not None
            manager.close(connection, "closed by the test", code=1008)

        self.service.service.call(close)


def base_settings(service: RunningWebPubSub) -> dict[str, str]:
    """Local development settings pointing at this service."""
    return {
        "WEBPUBSUB_HUB": HUB,
        "WEBPUBSUB_CREDENTIAL": "connectionstring",
        "WEBPUBSUB_CONNECTION_STRING": service.connection_string,
        "NEGOTIATE_AUTH": "anonymous",
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    host = ServerThread(build_host(function_app.app, route_prefix="api"), name="functions")
    host_url = f"http://127.0.0.1:{host.port}"
    handler = EventHandlerSettings(url_template=f"{host_url}/api/eventhandler")
    service = LocalWebPubSub(ServiceSettings(event_handlers=(handler,))).run_in_thread()
    # Also in the environment, as `make run` has them: events that arrive after a test ended (a
    # closed page's `disconnected`) then still meet valid settings instead of a missing setting.
    saved = dict(os.environ)
    os.environ.update(base_settings(service))
    try:
        host.start()
        yield LocalStack(host_url, service)
    finally:
        service.stop()
        host.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`apt-get install -y chromium`).")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def group() -> str:
    """A group of this test's own, so tests never see each other's messages."""
    return f"room-{uuid.uuid4().hex[:8]}"


AppSettings = Callable[..., None]
#: Wraps the app's real token source, to make it fail on purpose (Key Vault down, say).
TokenSourceWrapper = Callable[[TokenSource], TokenSource]


@pytest.fixture
def app_settings(stack: LocalStack, group: str) -> AppSettings:
    """Install the app's settings (local development ones, this test's group); call again to change them."""

    def install(*, wrap_token_source: TokenSourceWrapper | None = None, **overrides: str) -> None:
        environ = {**base_settings(stack.service), "NEGOTIATE_GROUPS": group, **overrides}
        settings = load_settings(environ)
        if wrap_token_source is None:
            use_runtime(Runtime(settings))
        else:
            use_runtime(Runtime(settings, token_source=wrap_token_source(Runtime(settings).token_source)))

    install()
    return install


@dataclass
class ChatPage:
    """One user's chat page, with the network traffic and status changes tests look at."""

    page: Page
    negotiations: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        value = self.page.evaluate("sessionStorage.getItem('chat-user-id')")
        assert isinstance(value, str)
        return value

    def status_history(self) -> list[str]:
        history = self.page.evaluate("window.__statusHistory")
        assert isinstance(history, list)
        return [str(item) for item in history]

    def expect_connected(self, timeout: float = RECONNECT_TIMEOUT_MS) -> None:
        expect(self.page.get_by_test_id("status")).to_have_text("connected", timeout=timeout)

    def join(self, group: str) -> None:
        self.page.get_by_test_id("group-input").fill(group)
        self.page.get_by_test_id("join-button").click()
        expect(self.page.get_by_test_id("send-button")).to_be_enabled()

    def send(self, text: str) -> None:
        self.page.get_by_test_id("message-input").fill(text)
        self.page.get_by_test_id("send-button").click()

    def messages_with(self, text: str) -> Any:
        return self.page.get_by_test_id("messages").locator("li", has_text=text)


@pytest.fixture
def open_chat(stack: LocalStack, browser: Browser) -> Iterator[Callable[..., ChatPage]]:
    """Open the chat page in a fresh browser context (a separate user); closed after the test."""
    contexts: list[BrowserContext] = []

    def open_page(*, before_load: Callable[[Page], None] | None = None) -> ChatPage:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        chat = ChatPage(page)
        page.add_init_script(STATUS_RECORDER)

        def on_request(request: Request) -> None:
            if "/api/negotiate" in request.url:
                chat.negotiations.append(request.url)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                chat.problems.append(message.text)

        page.on("request", on_request)
        page.on("console", on_console)
        page.on("pageerror", lambda error: chat.problems.append(str(error)))
        if before_load is not None:
            before_load(page)
        page.goto(stack.page_url)
        return chat

    yield open_page
    for context in contexts:
        context.close()
