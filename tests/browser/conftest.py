"""The whole product on one machine, driven by headless Chromium.

The local Functions host (devstack.host) serves the app's own routes, the local Web PubSub
service (devstack.webpubsub) sends its events back to the host's /api/eventhandler, and
Playwright drives Debian's Chromium (browser downloads do not work on these machines, so
Playwright's own builds are never used). Servers and browser start once per module; every test
gets its own app settings, its own group and fresh browser contexts.

The helpers tests import live in tests/support/browser.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, sync_playwright

import function_app
from devstack.host import build_host
from devstack.servers import ServerThread
from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, ServiceSettings
from shared.config import load_settings
from shared.runtime import Runtime, use_runtime
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    STATUS_RECORDER,
    AppSettings,
    ChatPage,
    LocalStack,
    TokenSourceWrapper,
    base_settings,
)


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
