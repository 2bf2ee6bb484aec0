"""The official Python client (azure-messaging-webpubsubclient, unmodified) as end-to-end tests drive it."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnConnectedArgs,
    OnDisconnectedArgs,
    OnGroupDataMessageArgs,
    OnServerDataMessageArgs,
)

from devstack.__main__ import RunningStack
from devstack.webpubsub import RunningWebPubSub


def service_of(stack: RunningStack) -> RunningWebPubSub:
    assert stack.service is not None
    return stack.service


def negotiator(stack: RunningStack, user_id: str, *groups: str, **params: str) -> Callable[[], str]:
    """The client's URL source: a fresh GET /api/negotiate every time the client needs a URL."""

    def negotiate() -> str:
        query: list[tuple[str, str | int | float | bool | None]] = [
            ("userId", user_id),
            *(("group", g) for g in groups),
            *params.items(),
        ]
        response = httpx.get(stack.url("negotiate"), params=query)
        assert response.status_code == 200, response.text
        return str(response.json()["url"])

    return negotiate


class ChatClient:
    """An official client whose callbacks feed queues the test waits on."""

    def __init__(self, url_source: Callable[[], str], **options: Any) -> None:
        # A short ack timeout sidesteps the client's lost-wakeup race on fast acks (a late, not a wrong, result).
        options.setdefault("ack_timeout", 1.0)
        self.client = WebPubSubClient(WebPubSubClientCredential(url_source), start_timeout=10, **options)
        self.connected: queue.Queue[OnConnectedArgs] = queue.Queue()
        self.disconnected: queue.Queue[OnDisconnectedArgs] = queue.Queue()
        self.group_messages: queue.Queue[OnGroupDataMessageArgs] = queue.Queue()
        self.server_messages: queue.Queue[OnServerDataMessageArgs] = queue.Queue()
        self.client.subscribe(CallbackType.CONNECTED, self.connected.put)
        self.client.subscribe(CallbackType.DISCONNECTED, self.disconnected.put)
        self.client.subscribe(CallbackType.GROUP_MESSAGE, self.group_messages.put)
        self.client.subscribe(CallbackType.SERVER_MESSAGE, self.server_messages.put)

    def connection_id(self) -> str:
        connection_id = self.connected.get(timeout=10).connection_id
        assert connection_id is not None
        return connection_id

    def no_more_server_messages(self, wait: float = 0.5) -> bool:
        try:
            self.server_messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False


@contextmanager
def chat_client(url_source: Callable[[], str], **options: Any) -> Iterator[ChatClient]:
    chat = ChatClient(url_source, **options)
    chat.client.open()
    try:
        yield chat
    finally:
        chat.client.close()
