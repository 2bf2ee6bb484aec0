"""``python -m devstack.webpubsub``: options, banner, and a real start and stop."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import httpx
import pytest

from devstack.webpubsub import DEFAULT_ACCESS_KEY
from devstack.webpubsub.__main__ import banner, main, parse_arguments, settings_from

REPOSITORY = Path(__file__).resolve().parents[2]


def test_defaults_match_the_official_emulator_and_the_local_functions_host() -> None:
    settings = settings_from(parse_arguments([]))
    assert settings.access_key == DEFAULT_ACCESS_KEY
    (handler,) = settings.event_handlers
    assert handler.url_template == "http://localhost:7071/api/eventhandler"
    assert handler.system_events == {"connect", "connected", "disconnected"}
    assert handler.user_event_pattern == "*"
    assert handler.hubs is None
    text = banner(settings, "http://localhost:8080")
    assert "Endpoint=http://localhost:8080;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;" in text
    assert "development tool" in text
    assert "Production uses Azure Web PubSub" in text


def test_options_configure_hubs_events_and_handler() -> None:
    arguments = parse_arguments(
        ["--hub", "chat", "--hub", "news", "--event-handler", "http://h/{hub}/{event}", "--system-events", "connected"]
    )
    (handler,) = settings_from(arguments).event_handlers
    assert handler.hubs == frozenset({"chat", "news"})
    assert handler.url_template == "http://h/{hub}/{event}"
    assert handler.system_events == {"connected"}
    assert settings_from(parse_arguments(["--no-event-handler"])).event_handlers == ()


def test_a_hubs_file_in_the_services_shape_configures_each_hub(tmp_path: Path) -> None:
    hubs = tmp_path / "hubs.json"
    hubs.write_text(
        json.dumps(
            {
                "hubs": {
                    "chat": {
                        "eventHandlers": [
                            {
                                "urlTemplate": "http://localhost:7071/api/eventhandler?code=k",
                                "userEventPattern": "*",
                                "systemEvents": ["connect", "connected"],
                                "auth": {"type": "ManagedIdentity", "managedIdentity": {"resource": "api://app"}},
                            }
                        ]
                    },
                    "notifications": {"eventHandlers": []},
                }
            }
        )
    )
    settings = settings_from(parse_arguments(["--hubs-file", str(hubs), "--managed-identity-resource", "api://x"]))
    chat, notifications = settings.hubs
    (handler,) = chat.event_handlers
    assert (chat.name, handler.managed_identity_resource) == ("chat", "api://app")
    assert handler.system_events == frozenset({"connect", "connected"})
    assert notifications.event_handlers == ()
    assert settings.event_handlers[0].managed_identity_resource == "api://x"
    text = banner(settings, "http://localhost:8080")
    assert "Hub chat:" in text
    assert "code=***" in text
    assert "code=k" not in text


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"hubs": []}',
        '{"hubs": {"chat": {"eventHandlers": [{"urlTemplate": "ftp://x"}]}}}',
        '{"hubs": {"chat": {"eventHandlers": [{"urlTemplate": "http://h", "auth": {"type": "ManagedIdentity"}}]}}}',
    ],
)
def test_an_invalid_hubs_file_exits_with_status_2(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hubs = tmp_path / "hubs.json"
    hubs.write_text(content)
    assert main(["--hubs-file", str(hubs)]) == 2
    assert f"error: {hubs}" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--system-events", "connect,bogus"], ["--access-key", "short"]])
def test_invalid_options_exit_with_status_2(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(arguments) == 2
    assert "error:" in capsys.readouterr().err


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_the_command_starts_serves_and_stops_on_ctrl_c() -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    with subprocess.Popen(
        [sys.executable, "-m", "devstack.webpubsub", "--port", "0", "--no-event-handler"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=REPOSITORY,
    ) as process:
        assert process.stdout is not None
        output: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_lines, args=(process.stdout, output), daemon=True)
        reader.start()
        try:
            seen: list[str] = []
            while not any("Application startup complete" in line for line in seen):
                seen.append(output.get(timeout=10))
            (connection_string,) = [line.split(": ", 1)[1].strip() for line in seen if "Connection string:" in line]
            endpoint = connection_string.split(";")[0].removeprefix("Endpoint=")
            assert endpoint.startswith("http://localhost:")
            assert httpx.head(f"{endpoint}/api/health").status_code == 200
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
            reader.join(timeout=5)
