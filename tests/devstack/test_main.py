"""``python -m devstack``: the local stack starts wired together, says where it is, and stops on Ctrl+C."""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from devstack.__main__ import (
    QUIET_LOGGERS,
    RunningStack,
    StackError,
    configure_logging,
    describe,
    describe_settings,
    freeze_startup_objects,
    main,
    parse_arguments,
    start_stack,
)
from shared.config import load_settings
from tests.support.fakes import EMULATOR_KEY
from tests.support.settings import LOCAL_ENVIRON


def arguments(settings: Path, *extra: str) -> list[str]:
    return ["--settings", str(settings), "--port", "0", "--webpubsub-port", "0", *extra]


@pytest.fixture
def printed() -> list[str]:
    return []


@pytest.fixture
def stack(tmp_path: Path, printed: list[str]) -> Iterator[RunningStack]:
    running = start_stack(parse_arguments(arguments(tmp_path / "local.settings.json")), out=printed.append)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_first_run_creates_local_settings_from_the_example(
    tmp_path: Path, stack: RunningStack, printed: list[str]
) -> None:
    created = tmp_path / "local.settings.json"
    assert created.read_text() == Path("local.settings.json.example").read_text()
    assert printed[0].startswith(f"Created {created} from local.settings.json.example")


def test_what_the_stack_loaded_at_start_is_kept_out_of_full_collections() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_client_negotiates_through_the_host_and_connects_to_the_local_service(stack: RunningStack) -> None:
    """The wiring: the token is for this service, and the service's connect event is accepted by the host."""
    assert stack.service is not None
    response = httpx.get(stack.url("negotiate"), params={"userId": "alice"})
    assert response.status_code == 200, response.text
    document = response.json()
    claims = jwt.decode(
        document["token"],
        EMULATOR_KEY,  # the key of the example's connection string signs both ways
        algorithms=["HS256"],
        audience=f"{stack.service.endpoint}/client/hubs/chat",
    )
    assert claims["sub"] == "alice"
    with connect(document["url"], subprotocols=[Subprotocol("json.webpubsub.azure.v1")], open_timeout=10) as client:
        connected = json.loads(client.recv(timeout=10))
    assert connected["event"] == "connected"
    assert connected["userId"] == "alice"
    connect_event = stack.service.upstream_log.wait_for(lambda record: record.event_name == "connect", timeout=10)
    assert connect_event.url == stack.url("eventhandler")
    assert connect_event.outcome == "delivered"


def test_another_service_port_is_passed_to_the_app_for_this_run(stack: RunningStack, printed: list[str]) -> None:
    assert stack.service is not None
    assert os.environ["WEBPUBSUB_CONNECTION_STRING"] == stack.service.connection_string
    assert f"WEBPUBSUB_CONNECTION_STRING now points to {stack.service.endpoint} for this run." in printed


def test_the_banner_names_every_url(stack: RunningStack) -> None:
    assert stack.service is not None
    banner = describe(stack)
    assert f"{stack.host_url}/api/negotiate?userId=alice" in banner
    assert f"Events go to:      {stack.host_url}/api/eventhandler" in banner
    assert f"Client page:   {stack.host_url}/api/client\n" in banner  # served by client/{*asset}
    assert f"negotiate: [GET,POST] {stack.host_url}/api/negotiate" in banner
    assert stack.service.endpoint in banner
    assert stack.service.connection_string in banner  # the emulator's public key: safe to show
    assert "production uses Azure Web PubSub" in banner


def test_environment_variables_win_over_the_settings_file(tmp_path: Path, printed: list[str]) -> None:
    os.environ["NEGOTIATE_GROUPS"] = "lobby"
    running = start_stack(parse_arguments(arguments(tmp_path / "local.settings.json")), out=printed.append)
    try:
        assert os.environ["NEGOTIATE_GROUPS"] == "lobby"
        assert any("Skipping 'NEGOTIATE_GROUPS'" in line for line in printed)
    finally:
        running.stop()


def test_an_app_using_azure_web_pubsub_gets_no_local_service(tmp_path: Path, printed: list[str]) -> None:
    os.environ["WEBPUBSUB_CONNECTION_STRING"] = f"Endpoint=https://demo.webpubsub.azure.com;AccessKey={EMULATOR_KEY};"
    running = start_stack(parse_arguments(arguments(tmp_path / "local.settings.json")), out=printed.append)
    try:
        assert running.service is None
        assert "The app uses the Web PubSub service at https://demo.webpubsub.azure.com" in "\n".join(printed)
        assert "Local Web PubSub service: not started." in describe(running)
    finally:
        running.stop()


def test_a_taken_host_port_is_a_clear_error(tmp_path: Path, taken_port: int) -> None:
    options = parse_arguments(["--settings", str(tmp_path / "s.json"), "--port", str(taken_port), "--no-webpubsub"])
    with pytest.raises(StackError, match=r"Functions host: the port is already in use.*--port"):
        start_stack(options, out=lambda _: None)


def test_a_taken_service_port_is_a_clear_error_and_the_host_is_released(tmp_path: Path, taken_port: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host_port = probe.getsockname()[1]
    options = parse_arguments(
        ["--settings", str(tmp_path / "s.json"), "--port", str(host_port), "--webpubsub-port", str(taken_port)]
    )
    with pytest.raises(StackError, match=r"Local Web PubSub service: the port is already in use.*--webpubsub-port"):
        start_stack(options, out=lambda _: None)
    with socket.socket() as again:
        again.bind(("127.0.0.1", host_port))  # the host's socket was closed


def test_main_reports_errors_on_stderr_with_exit_code_1(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--settings", str(tmp_path / "s.json"), "--port", str(taken_port), "--no-webpubsub"]) == 1
    assert "error: Functions host: the port is already in use" in capsys.readouterr().err


def copy_lines(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    for line in process.stdout or ():
        lines.put(line)


@pytest.mark.parametrize(
    ("ignored_at_start", "stop_with"),
    [
        pytest.param(False, signal.SIGINT, id="ctrl-c"),
        # Started in the background from a script (`make test > log &`): SIGINT arrives ignored.
        pytest.param(True, signal.SIGINT, id="ctrl-c-with-sigint-ignored-at-start"),
        pytest.param(True, signal.SIGTERM, id="sigterm-with-sigint-ignored-at-start"),
    ],
)
def test_make_run_stays_in_the_foreground_until_ctrl_c(
    tmp_path: Path, ignored_at_start: bool, stop_with: signal.Signals
) -> None:
    command = [sys.executable, "-m", "devstack", *arguments(tmp_path / "local.settings.json")]
    if ignored_at_start:
        command = ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *command]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        reader = threading.Thread(target=copy_lines, args=(process, lines), daemon=True)
        reader.start()
        try:
            seen = [lines.get(timeout=60)]
            while "Press Ctrl+C to stop." not in seen[-1]:
                seen.append(lines.get(timeout=60))
            negotiate = re.search(r"Negotiate:\s+(\S+)", "".join(seen))
            assert negotiate is not None, seen
            assert httpx.get(negotiate.group(1)).status_code == 200
            assert process.poll() is None  # still serving
            process.send_signal(stop_with)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(10)
    remaining = []
    while not lines.empty():
        remaining.append(lines.get())
    assert remaining[-2:] == ["Stopping the local stack...\n", "Stopped.\n"]


RELIABLE = Subprotocol("json.reliable.webpubsub.azure.v1")


def negotiate_and_connect(negotiate_url: str) -> list[str]:
    """What a client does with make run: negotiate, connect, and try a recovery; the secrets it sent."""
    document = httpx.get(negotiate_url).json()
    with connect(document["url"], subprotocols=[RELIABLE], open_timeout=10) as client:
        connected = json.loads(client.recv(timeout=10))
    recovery = document["url"].split("?", 1)[0] + (
        f"?awps_connection_id={connected['connectionId']}&awps_reconnection_token={connected['reconnectionToken']}"
    )
    with connect(recovery, subprotocols=[RELIABLE], open_timeout=10) as client, pytest.raises(ConnectionClosed):
        client.recv(timeout=10)  # accepted, then closed with 1008: the connection had ended normally
    token = document["token"]
    return [token, token.rsplit(".", 1)[1], connected["reconnectionToken"]]


@pytest.fixture
def logging_restored() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("logging_restored")
def test_request_urls_carrying_tokens_never_reach_the_log(
    stack: RunningStack, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("debug")
    caplog.set_level(logging.DEBUG)
    assert stack.service is not None
    document = httpx.get(stack.url("negotiate"), params={"userId": "alice"}).json()
    httpx.get(f"{stack.service.endpoint}/client/hubs/chat", params={"access_token": document["token"]})
    with connect(document["url"], open_timeout=10) as client:
        client.send("hello")
    stack.service.upstream_log.wait_for(lambda record: record.event_name == "disconnected", timeout=10)
    # What the stack logged; the test's own WebSocket client logs its handshake at DEBUG.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))
    assert "/client/hubs/chat" in logged  # the requests were logged, without their tokens
    assert document["token"].rsplit(".", 1)[1] not in logged
    assert "access_token=<redacted>" in logged


def test_make_run_prints_no_token_while_clients_negotiate_and_connect(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "devstack", *arguments(tmp_path / "local.settings.json")]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        reader = threading.Thread(target=copy_lines, args=(process, lines), daemon=True)
        reader.start()
        try:
            seen = [lines.get(timeout=60)]
            while "Press Ctrl+C to stop." not in seen[-1]:
                seen.append(lines.get(timeout=60))
            negotiate = re.search(r"Negotiate:\s+(\S+)", "".join(seen))
            assert negotiate is not None, seen
            secrets = negotiate_and_connect(negotiate.group(1))
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(10)
    while not lines.empty():
        seen.append(lines.get())
    console = "".join(seen)
    assert "WebSocket /client/hubs/chat?access_token=<redacted>" in console  # the connection was logged
    for secret in secrets:
        assert secret not in console


def entra_settings(folder: Path, **values: str) -> Path:
    """The example's settings in entra mode: an endpoint and no connection string."""
    document = json.loads(Path("local.settings.json.example").read_text())
    del document["Values"]["WEBPUBSUB_CONNECTION_STRING"]
    document["Values"].update(WEBPUBSUB_CREDENTIAL="entra", WEBPUBSUB_ENDPOINT="http://localhost:8080", **values)
    path = folder / "local.settings.json"
    path.write_text(json.dumps(document))
    return path


def test_entra_mode_runs_end_to_end_with_the_local_identity(tmp_path: Path, printed: list[str]) -> None:
    settings = entra_settings(tmp_path, EVENTHANDLER_AUTH="none")
    running = start_stack(parse_arguments(arguments(settings)), out=printed.append)
    try:
        assert running.service is not None
        assert os.environ["WEBPUBSUB_ENDPOINT"] == running.service.endpoint  # the free port of this run
        assert running.service.service.settings.local_auth is False  # as disableLocalAuth in the templates
        response = httpx.get(running.url("negotiate"), params={"userId": "alice"})
        assert response.status_code == 200, response.text  # the token came from generateToken
        with connect(response.json()["url"], subprotocols=[Subprotocol("json.webpubsub.azure.v1")]) as client:
            assert json.loads(client.recv(timeout=10))["userId"] == "alice"
        connect_event = running.service.upstream_log.wait_for(lambda record: record.event_name == "connect")
        assert (connect_event.outcome, connect_event.status) == ("delivered", 200)
        health = httpx.get(running.url("health")).json()
        assert health["checks"]["credential"]["status"] == "healthy", health
    finally:
        running.stop()
    assert any("managed identity gets its tokens from" in line for line in printed)


BEARER = {
    "EVENTHANDLER_AUTH": "bearer",
    "EVENTHANDLER_BEARER_ISSUER": "https://login.microsoftonline.com/tenant/v2.0",
    "EVENTHANDLER_BEARER_AUDIENCE": "api://x",
    "EVENTHANDLER_BEARER_PRINCIPAL_ID": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
}


@pytest.mark.parametrize(
    "event_auth",
    [{}, BEARER],
    ids=["not set", "bearer with an issuer other than the local service"],
)
def test_entra_mode_names_the_event_handler_setting_it_needs(
    tmp_path: Path, printed: list[str], event_auth: dict[str, str]
) -> None:
    running = start_stack(parse_arguments(arguments(entra_settings(tmp_path, **event_auth))), out=printed.append)
    running.stop()
    assert any("set EVENTHANDLER_AUTH=none" in line for line in printed), printed


def test_entra_mode_with_eventhandler_auth_bearer_uses_the_local_services_identity(
    tmp_path: Path, printed: list[str]
) -> None:
    """EVENTHANDLER_AUTH=bearer without an issuer: the service signs with its identity and the app checks it."""
    settings = entra_settings(tmp_path, EVENTHANDLER_AUTH="bearer")
    running = start_stack(parse_arguments(arguments(settings)), out=printed.append)
    try:
        assert running.service is not None
        identity = running.service.upstream_identity
        assert os.environ["EVENTHANDLER_BEARER_ISSUER"] == identity.issuer
        assert os.environ["EVENTHANDLER_BEARER_PRINCIPAL_ID"] == identity.principal_id
        response = httpx.get(running.url("negotiate"), params={"userId": "alice"})
        assert response.status_code == 200, response.text
        with connect(response.json()["url"], subprotocols=[Subprotocol("json.webpubsub.azure.v1")]) as client:
            assert json.loads(client.recv(timeout=10))["userId"] == "alice"
        connect_event = running.service.upstream_log.wait_for(lambda record: record.event_name == "connect")
        assert (connect_event.outcome, connect_event.status) == ("delivered", 200)
    finally:
        running.stop()
    assert not any("set EVENTHANDLER_AUTH=none" in line for line in printed), printed
    assert any("calls the event handler with its identity's token" in line for line in printed)


def test_the_start_banner_names_the_mode_the_shortcuts_and_every_invalid_setting() -> None:
    """Printed before the first request: a user sees at once what is on and what is wrong."""
    banner = describe_settings(
        load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_HUBS": "chat notifications", "EVENTHANDLER_MAX_BODY_BYTES": "lots"})
    )
    first = banner.splitlines()[0]
    assert first.startswith(
        "App settings: WEBPUBSUB_CREDENTIAL=connectionstring, hub chat (default; also notifications)"
    )
    assert "EVENTHANDLER_AUTH" not in first  # the event handler's settings are invalid: no mode is claimed
    assert "NEGOTIATE_AUTH=anonymous lets every caller choose its own user id" in banner
    assert (
        "eventhandler: EVENTHANDLER_MAX_BODY_BYTES: must be a whole number from 1024 to 16777216, not 'lots'" in banner
    )
