"""The command line: options before or after the command, exit codes, a real `python -m` run, and
every command against the whole product as `make run` starts it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.__main__ import RunningStack, parse_arguments, start_stack
from devstack.servers import ServerThread
from doctor.cli import main
from tests.support.fakes import EMULATOR_KEY

REPOSITORY = Path(__file__).resolve().parents[2]
CONNECTION_STRING = f"Endpoint=https://contoso.webpubsub.azure.com;AccessKey={EMULATOR_KEY};Version=1.0;"


def token(hub: str = "chat") -> str:
    claims = {"aud": f"https://contoso.webpubsub.azure.com/client/hubs/{hub}", "exp": int(time.time()) + 600}
    return jwt.encode(claims, EMULATOR_KEY, algorithm="HS256")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "token", "JWT", "--connection-string", CONNECTION_STRING],
        ["token", "JWT", "--json", "--connection-string", CONNECTION_STRING],
        ["--connection-string", CONNECTION_STRING, "--json", "token", "JWT"],
    ],
)
def test_shared_options_work_before_or_after_the_command(argv: list[str]) -> None:
    code, output = run(*[token() if item == "JWT" else item for item in argv])
    document = json.loads(output)
    assert code == 0
    assert document["command"] == "token"
    assert {check["name"]: check["status"] for check in document["checks"]}["signature"] == "ok"


def test_an_override_before_the_command_is_not_reset_by_it() -> None:
    code, output = run("--hub", "lobby", "token", token(hub="lobby"), "--connection-string", CONNECTION_STRING)
    assert code == 0, output


def test_text_is_the_default_with_one_line_per_check(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["token", token(), "--connection-string", CONNECTION_STRING])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert all(line.split(" ", 1)[0] in {"OK", "WARN", "FAIL", "SKIP"} for line in lines[:-1])
    assert lines[-1].startswith("token: all checks passed")


@pytest.mark.parametrize(
    "argv",
    [[], ["diagnose"], ["token"], ["config", "--timeout", "0"], ["config", "--timeout", "soon"], ["handler"]],
)
def test_usage_errors_exit_with_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*argv)[0] == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_with_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help")[0] == 0
    assert "token" in capsys.readouterr().out


@pytest.fixture(scope="module")
def handler_without_allowed_origin() -> Iterator[str]:
    async def answer(request: Request) -> Response:
        return Response(status_code=200 if request.method == "OPTIONS" else 204)

    app = Starlette(routes=[Route("/api/eventhandler", answer, methods=["OPTIONS", "POST"])])
    with ServerThread(app) as server:
        yield server.base_url + "/api/eventhandler"


def test_python_m_shared_doctor_runs_as_a_program(handler_without_allowed_origin: str, tmp_path: Path) -> None:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("WEBPUBSUB")}
    environ["PYTHONPATH"] = str(REPOSITORY)
    environ["WEBPUBSUB_CONNECTION_STRING"] = CONNECTION_STRING  # read from the environment, as in Azure
    environ["WEBPUBSUB_CREDENTIAL"] = "connectionstring"
    result = subprocess.run(
        [sys.executable, "-m", "doctor", "--json", "handler", handler_without_allowed_origin, "--timeout", "5"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks["handshake"]["code"] == "AbuseProtectionResponseMissingAllowedOrigin"
    assert checks["unsigned event"]["status"] == "fail"  # this handler accepts anything
    assert EMULATOR_KEY not in result.stdout + result.stderr


def test_the_functions_host_never_imports_the_doctor() -> None:
    code = "import sys, function_app; print([m for m in sys.modules if m.startswith('doctor')])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture
def local_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RunningStack]:
    """`make run` on free ports, from the example settings; the doctor then runs beside it in tmp_path.

    The stack puts the settings file's values and the service's real port into the environment, as a
    developer who starts the doctor with the app's settings has them.
    """
    monkeypatch.chdir(REPOSITORY)  # the stack reads host.json and the example settings from here
    settings = tmp_path / "local.settings.json"
    running = start_stack(
        parse_arguments(["--settings", str(settings), "--port", "0", "--webpubsub-port", "0"]), out=lambda _: None
    )
    monkeypatch.chdir(tmp_path)  # where the doctor finds the same local.settings.json
    try:
        yield running
    finally:
        running.stop()


def statuses(output: str) -> dict[str, str]:
    return {check["name"]: check["status"] for check in json.loads(output)["checks"]}


def test_every_command_passes_against_the_local_stack(local_stack: RunningStack) -> None:
    assert local_stack.service is not None
    code, output = run("config", "--json")
    assert code == 0, output
    assert set(statuses(output).values()) == {"ok"}, output
    # The service the stack started, not the file's port 8080.
    assert f"{local_stack.service.endpoint}/api/health?api-version=2024-12-01 answered 200" in output

    negotiated = httpx.get(local_stack.url("negotiate"), params={"userId": "alice", "group": "chat"}, timeout=10)
    assert negotiated.status_code == 200, negotiated.text
    code, output = run("token", negotiated.json()["url"], "--group", "chat", "--json")
    assert code == 0, output
    assert set(statuses(output).values()) == {"ok"}, output

    code, output = run("handler", local_stack.url("eventhandler"), "--json")
    assert code == 0, output
    assert statuses(output) == {
        "settings": "ok",
        "handshake": "ok",
        "connect": "ok",
        "user event": "ok",
        "disconnected": "ok",
        "unsigned event": "ok",
        "forged signature": "ok",
    }
    assert EMULATOR_KEY not in output


def test_the_local_stack_with_a_stale_key_fails_where_the_service_would(local_stack: RunningStack) -> None:
    """A key the running service does not have: config, token and handler each fail, naming it."""
    other_key = EMULATOR_KEY[::-1]
    negotiated = httpx.get(local_stack.url("negotiate"), params={"userId": "alice"}, timeout=10).json()["url"]
    code, output = run("config", "--key", other_key, "--json")
    assert (code, statuses(output)["service access"]) == (1, "fail"), output
    code, output = run("token", negotiated, "--key", other_key, "--json")
    assert (code, statuses(output)["signature"]) == (1, "fail"), output
    code, output = run("handler", local_stack.url("eventhandler"), "--key", other_key, "--json")
    checks = {check["name"]: check for check in json.loads(output)["checks"]}
    assert code == 1, output
    assert checks["connect"]["status"] == "warn"  # refused with 401, as the client would be
    assert checks["user event"]["status"] == "fail"
    assert "refuses every event signed with the key from --key" in checks["user event"]["summary"]
    assert other_key not in output
