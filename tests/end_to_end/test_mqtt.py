"""MQTT clients end to end: the app's negotiate and event handler, as `make run` starts them, with
local.settings.json.example's settings, and paho-mqtt clients of the local Web PubSub service.

The app answers the service's MQTT `connect` event (MicrosoftDocs azure-docs
``articles/azure-web-pubsub/reference-mqtt-cloud-events.md``): accepting gives a successful
CONNACK, refusing gives the CONNACK code of the client's protocol version, not an HTTP status.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from devstack.__main__ import RunningStack
from devstack.webpubsub import RunningWebPubSub
from tests.support.fakes import EMULATOR_KEY
from tests.support.mqtt import MQTT_V5, MQTT_V311, MqttTestClient, mqtt_token
from tests.support.stack import running_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
BOTH_VERSIONS = pytest.mark.parametrize("version", [MQTT_V311, MQTT_V5], ids=["3.1.1", "5.0"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(Path(tmp_path_factory.mktemp("mqtt"))) as running:
        yield running


def service_of(stack: RunningStack) -> RunningWebPubSub:
    assert stack.service is not None
    return stack.service


def negotiated_client(
    stack: RunningStack, user_id: str, client_id: str, version: MQTTProtocolVersion
) -> MqttTestClient:
    response = httpx.get(stack.url("negotiate"), params={"userId": user_id, "protocol": "mqtt"})
    assert response.status_code == 200, response.text
    url = urlsplit(response.json()["url"])
    assert url.path == "/clients/mqtt/hubs/chat"
    token = parse_qs(url.query)["access_token"][0]
    return MqttTestClient(f"http://{url.netloc}", "chat", token, client_id=client_id, version=version)


def connect_answer(service: RunningWebPubSub, client_id: str) -> int | None:
    record = service.upstream_log.wait_for(
        lambda record: record.event_name == "connect" and record.connection_id == client_id, timeout=10
    )
    return record.status


@BOTH_VERSIONS
def test_the_app_accepts_a_negotiated_mqtt_client(stack: RunningStack, version: MQTTProtocolVersion) -> None:
    """Negotiate's MQTT URL connects; the policy's roles let the client subscribe and publish to `chat`."""
    suffix = "v5" if version == MQTT_V5 else "v311"
    alice = negotiated_client(stack, "alice", f"alice{suffix}", version)
    bob = negotiated_client(stack, "bob", f"bob{suffix}", MQTT_V5)
    try:
        assert alice.connect().reason_code == 0
        assert bob.connect().reason_code == 0
        assert connect_answer(service_of(stack), f"alice{suffix}") in (200, 204)
        assert bob.subscribe("chat") == [1]
        assert alice.subscribe("elsewhere") == ([0x80] if version == MQTT_V311 else [0x87])  # not in the policy
        assert alice.publish("chat", b"hello from MQTT") == 0
        message = bob.next_message(timeout=10)
        assert (message.topic, message.payload) == ("chat", b"hello from MQTT")
    finally:
        alice.stop()
        bob.stop()


@BOTH_VERSIONS
@pytest.mark.parametrize(
    ("case", "claims"),
    [
        ("a role the group policy does not grant", {"sub": "mallory", "role": ["webpubsub.sendToGroup"]}),
        ("no user", {}),
    ],
)
def test_the_app_refuses_with_the_mqtt_connack_code(
    stack: RunningStack, version: MQTTProtocolVersion, case: str, claims: dict[str, Any]
) -> None:
    """A refusal reaches the client as "not authorized": 3.1.1 return code 5, 5.0 reason code 135."""
    service = service_of(stack)
    client_id = f"refused{int(time.time() * 1000) % 10**9}{version.value}"
    token = mqtt_token(service.endpoint, "chat", EMULATOR_KEY, **claims)
    client = MqttTestClient(service.endpoint, "chat", token, client_id=client_id, version=version)
    try:
        connack = client.connect()
        if version == MQTT_V311:
            assert connack.v311_code == 5, case
        else:
            assert connack.reason_code == 135, case
            assert connack.reason_string, case  # the app's reason, for 5.0 clients
    finally:
        client.stop()
    status = connect_answer(service, client_id)
    assert status is not None
    assert 400 <= status < 500


def test_the_mqtt_js_example_of_the_client_docs_runs_against_the_app(stack: RunningStack) -> None:
    """docs/clients.md's mqtt.js snippet (mqtt 5.16.0, from web/package-lock.json) in Node: it negotiates,
    connects, subscribes to `chat` and receives its own message back through the local service."""
    node = shutil.which("node")
    script = Path(__file__).with_name("js") / "mqtt_snippet.mjs"
    if node is None or not (REPO_ROOT / "web" / "node_modules" / "mqtt").is_dir():
        pytest.fail("Node.js and web/node_modules (npm ci --prefix web) are needed for mqtt.js.")
    result = subprocess.run(
        [node, str(script), stack.host_url, "maria"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"topic": "chat", "payload": "hello from mqtt.js"}
