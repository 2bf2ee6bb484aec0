"""README's server-mediated chat example, run as written against the local stack with the official client."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.messaging.webpubsubclient.models import WebPubSubDataType

from devstack.__main__ import RunningStack
from shared import events
from shared.config import load_settings
from shared.events import EventHandlers
from shared.runtime import Runtime, use_runtime
from tests.support.chat import chat_client, negotiator
from tests.support.stack import running_stack

README = Path(__file__).resolve().parents[2] / "README.md"


def talking_back_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Talking back", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's 'Talking back' section has no Python example"
    return match.group(1)


@pytest.fixture
def stack_with_readme_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStack]:
    registry = EventHandlers()
    monkeypatch.setattr(events, "handlers", registry)  # the example registers on `shared.events.handlers`
    exec(compile(talking_back_example(), str(README), "exec"), {})  # noqa: S102 - the README's own code
    with running_stack(tmp_path) as stack:
        use_runtime(Runtime(load_settings(os.environ), registry=registry))
        try:
            yield stack
        finally:
            use_runtime(None)


def test_a_new_connection_is_welcomed_and_messages_are_relayed_to_the_room_without_echo(
    stack_with_readme_handlers: RunningStack,
) -> None:
    stack = stack_with_readme_handlers
    with chat_client(negotiator(stack, "alice")) as alice:
        alice.connection_id()
        welcome = alice.server_messages.get(timeout=10)
        assert welcome.data == {"from": "server", "text": "Welcome, alice!"}
        alice.client.join_group("chat")
        with chat_client(negotiator(stack, "bob")) as bob:
            bob.connection_id()
            assert bob.server_messages.get(timeout=10).data["text"] == "Welcome, bob!"
            bob.client.join_group("chat")

            alice.client.send_event("message", "hello room", WebPubSubDataType.TEXT)
            relayed = bob.server_messages.get(timeout=10)
            assert relayed.data == {"from": "alice", "text": "hello room"}
            assert alice.no_more_server_messages()  # the sender is excluded

            alice.client.send_event("message", "buy spam now", WebPubSubDataType.TEXT)
            assert bob.no_more_server_messages(wait=1.0)  # the check dropped it
