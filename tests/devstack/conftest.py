"""Fixtures for the local Web PubSub service: real servers on free ports, in this process.

One service and one fake event handler serve the whole session (starting servers per test
would cost most of the run); each test gets them reset: fresh handler behaviour, an empty
upstream log and no cached abuse-protection results. Tests isolate their connections by using
their own hub names.

The helpers tests import live in tests/support/local_service.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devstack.servers import ServerThread
from devstack.webpubsub import EventHandlerSettings, LocalWebPubSub, RunningWebPubSub
from tests.support.local_service import FakeEventHandler


@pytest.fixture(scope="session")
def _handler_server() -> Iterator[tuple[FakeEventHandler, ServerThread]]:
    handler = FakeEventHandler()
    with ServerThread(handler.app(), name="fake-event-handler") as server:
        handler.base_url = server.base_url
        handler.url = f"{server.base_url}/api/eventhandler"
        yield handler, server


@pytest.fixture(scope="session")
def _service() -> Iterator[RunningWebPubSub]:
    with LocalWebPubSub().run_in_thread() as running:
        yield running


@pytest.fixture
def event_handler(
    _handler_server: tuple[FakeEventHandler, ServerThread], service: RunningWebPubSub
) -> FakeEventHandler:
    return _handler_server[0]


@pytest.fixture
def service(
    _service: RunningWebPubSub, _handler_server: tuple[FakeEventHandler, ServerThread]
) -> Iterator[RunningWebPubSub]:
    """The shared service, pointed at the fake handler, with a clean log and validation cache."""
    handler = _handler_server[0]
    handler.reset()
    _service.service.configure_event_handlers([EventHandlerSettings(url_template=handler.url)])
    _service.upstream_log.clear()
    yield _service
    _service.wait_until_quiet()  # this test's last events must not reach the next one
    handler.reset()


@pytest.fixture
def hub() -> str:
    """A hub name of this test's own, so that connections of other tests never interfere."""
    return "hub" + uuid.uuid4().hex[:12]
