"""The chat page in headless Chromium against the local stack: the browser, the page's user and its settings.

Playwright drives Debian's Chromium (browser downloads do not work on these machines, so
Playwright's own builds are never used). The fixtures that start the stack and the browser live in
tests/browser/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from devstack.webpubsub import RunningWebPubSub
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


AppSettings = Callable[..., None]


#: Wraps the app's real token source, to make it fail on purpose (Key Vault down, say).
TokenSourceWrapper = Callable[[TokenSource], TokenSource]


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
