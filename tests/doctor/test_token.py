"""`python -m doctor token`: each reason the service refuses a client token, and its agreement
with the local Web PubSub service about which tokens connect."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import function_app
from devstack.webpubsub import LocalWebPubSub, RunningWebPubSub, ServiceSettings
from devstack.webpubsub.permissions import GroupAction, RolePermissions
from doctor.cli import main
from doctor.token import ClientAddress, audience_differences, check_group, check_lifetime, permits
from shared.policy import JOIN_LEAVE_ROLE_PREFIX, SEND_ROLE_PREFIX
from shared.tokens import KeyTokenSource
from tests.support.fakes import EMULATOR_KEY
from tests.support.functions import http_request
from tests.support.roles import PATTERN_CASES, ROLE_CASES, PatternCase, RoleCase

ENDPOINT = "https://contoso.webpubsub.azure.com"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu"


def make_token(
    *,
    key: str = EMULATOR_KEY,
    audience: str | None = f"{ENDPOINT}/client/hubs/chat",
    lifetime: int | None = 600,
    issued_offset: int = 0,
    **claims: Any,
) -> str:
    """A client token written independently of the SDK, with every claim under the test's control."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now + issued_offset, "sub": "alice", **claims}
    if audience is not None:
        payload["aud"] = audience
    if lifetime is not None:
        payload["exp"] = now + lifetime
    return jwt.encode(payload, key, algorithm="HS256")


def url_for(token: str, endpoint: str = "wss://contoso.webpubsub.azure.com", hub: str = "chat") -> str:
    return f"{endpoint}/client/hubs/{hub}?access_token={token}"


def doctor(*argv: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    out = io.StringIO()
    code = main(["token", *argv, "--json"], out=out)
    text = out.getvalue()
    return code, {check["name"]: check for check in json.loads(text)["checks"]}, text


def test_a_good_client_url_passes_and_the_token_is_never_printed() -> None:
    access = KeyTokenSource(ENDPOINT, EMULATOR_KEY).client_access(
        hub="chat",
        user_id="alice",
        roles=[JOIN_LEAVE_ROLE_PREFIX + "chat", SEND_ROLE_PREFIX + "chat"],
        groups=[],
        minutes=5,
    )
    code, checks, text = doctor(access.url, "--key", EMULATOR_KEY, "--group", "chat")
    assert code == 0
    assert {name: check["status"] for name, check in checks.items()} == {
        "url": "ok",
        "decode": "ok",
        "lifetime": "ok",
        "audience": "ok",
        "group chat": "ok",
        "signature": "ok",
    }
    assert "user alice" in checks["decode"]["summary"]
    assert access.token not in text
    assert access.token.split(".")[2] not in text  # not even the signature
    assert EMULATOR_KEY not in text


def test_an_expired_token_reports_the_times_in_utc() -> None:
    token = make_token(lifetime=-3600, issued_offset=-7200)
    code, checks, _ = doctor(url_for(token), "--key", EMULATOR_KEY)
    assert code == 1
    lifetime = checks["lifetime"]
    assert lifetime["status"] == "fail"
    expired = datetime.fromtimestamp(jwt.decode(token, options={"verify_signature": False})["exp"], UTC)
    assert f"expired at {expired:%Y-%m-%dT%H:%M:%SZ}, 1 h" in lifetime["summary"]
    assert "UTC now " in lifetime["summary"]
    assert "401" in lifetime["summary"]
    assert "clock-skew" not in lifetime["summary"]


def test_a_just_expired_token_mentions_the_clock_skew_allowance() -> None:
    claims = check_lifetime({"exp": 1_000_000 - 30}, datetime.fromtimestamp(1_000_000, UTC))
    assert claims.status == "fail"
    assert "30 s ago" in claims.summary
    assert "clock-skew" in claims.summary


def test_a_token_not_yet_valid_blames_the_issuers_clock() -> None:
    code, checks, _ = doctor(url_for(make_token(nbf=int(time.time()) + 600)), "--key", EMULATOR_KEY)
    assert code == 1
    assert checks["lifetime"]["status"] == "fail"
    assert "not valid before" in checks["lifetime"]["summary"]
    assert "clock" in checks["lifetime"]["fix"]


def test_an_issue_time_in_the_future_is_reported_as_skew() -> None:
    now = datetime.fromtimestamp(1_000_000, UTC)
    finding = check_lifetime({"iat": 1_000_000 + 125, "exp": 1_000_000 + 3600}, now)
    assert finding.status == "warn"
    assert "2 min 5 s in the future" in finding.summary


def test_a_token_without_expiry_fails() -> None:
    code, checks, _ = doctor(url_for(make_token(lifetime=None)), "--key", EMULATOR_KEY)
    assert code == 1
    assert "no exp" in checks["lifetime"]["summary"]


@pytest.mark.parametrize(
    ("audience", "part"),
    [
        ("http://contoso.webpubsub.azure.com/client/hubs/chat", "scheme"),
        ("https://fabrikam.webpubsub.azure.com/client/hubs/chat", "host"),
        ("https://contoso.webpubsub.azure.com:8443/client/hubs/chat", "port"),
        ("https://contoso.webpubsub.azure.com/client/hubs/lobby", "hub"),
    ],
)
def test_an_audience_mismatch_names_the_part_that_differs(audience: str, part: str) -> None:
    code, checks, _ = doctor(url_for(make_token(audience=audience)), "--key", EMULATOR_KEY)
    assert code == 1
    finding = checks["audience"]
    assert finding["status"] == "fail"
    assert f"({part}: " in finding["summary"]
    assert "401" in finding["summary"]


def test_default_ports_and_case_do_not_count_as_differences() -> None:
    expected = ClientAddress("https://contoso.webpubsub.azure.com:443", "Chat")
    assert audience_differences("https://CONTOSO.webpubsub.azure.com/client/hubs/chat", expected) == []


def test_a_token_for_another_hub_in_the_url_is_caught() -> None:
    token = make_token()  # for hub chat
    code, checks, _ = doctor(url_for(token, hub="lobby"), "--key", EMULATOR_KEY)
    assert code == 1
    assert "hub: token for chat, client connects to lobby" in checks["audience"]["summary"]


def test_a_bad_signature_fails_without_showing_either_key() -> None:
    code, checks, text = doctor(url_for(make_token(key=OTHER_KEY)), "--key", EMULATOR_KEY)
    assert code == 1
    assert checks["signature"]["status"] == "fail"
    assert OTHER_KEY not in text
    assert EMULATOR_KEY not in text


def test_missing_roles_are_named_per_group() -> None:
    token = make_token(role=[SEND_ROLE_PREFIX + "chat"])
    code, checks, _ = doctor(url_for(token), "--key", EMULATOR_KEY, "--group", "chat", "--group", "ops")
    assert code == 1
    assert checks["group chat"]["status"] == "fail"
    assert JOIN_LEAVE_ROLE_PREFIX + "chat" in checks["group chat"]["summary"]
    assert SEND_ROLE_PREFIX + "chat" not in checks["group chat"]["summary"]
    assert checks["group ops"]["status"] == "fail"
    assert "join or leave it or send to it" in checks["group ops"]["summary"]


@pytest.mark.parametrize("case", PATTERN_CASES, ids=lambda case: f"{case.pattern}~{case.group}")
def test_pattern_roles_match_as_documented(case: PatternCase) -> None:
    for prefix in (JOIN_LEAVE_ROLE_PREFIX, SEND_ROLE_PREFIX):
        plural = prefix.rstrip(".") + "s."
        assert permits([plural + case.pattern], prefix, case.group) is case.matches


@pytest.mark.parametrize("case", ROLE_CASES, ids=lambda case: f"{case.role}~{case.group}")
def test_roles_grant_what_they_name(case: RoleCase) -> None:
    assert permits([case.role], JOIN_LEAVE_ROLE_PREFIX, case.group) is case.join_leave
    assert permits([case.role], SEND_ROLE_PREFIX, case.group) is case.send


PATTERN_TEXT = st.text(alphabet="ab.*?\\-", max_size=10)
GROUP_TEXT = st.text(alphabet="ab.*?\\-", min_size=1, max_size=10)


@given(pattern=PATTERN_TEXT, group=GROUP_TEXT)
def test_the_doctor_and_the_local_service_read_every_pattern_alike(pattern: str, group: str) -> None:
    """Two implementations of one grammar (the local service must not share the app's code)."""
    service = RolePermissions(["webpubsub.sendToGroups." + pattern]).allows(GroupAction.SEND, group)
    assert permits(["webpubsub.sendToGroups." + pattern], SEND_ROLE_PREFIX, group) is service


def test_a_bare_jwt_is_compared_with_the_configured_endpoint_and_hub(tmp_path: Path) -> None:
    settings = {
        "Values": {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "WEBPUBSUB_CONNECTION_STRING": f"Endpoint={ENDPOINT};AccessKey={EMULATOR_KEY};Version=1.0;",
            "WEBPUBSUB_HUB": "lobby",
            "NEGOTIATE_AUTH": "anonymous",
        }
    }
    (tmp_path / "local.settings.json").write_text(json.dumps(settings))
    code, checks, _ = doctor(make_token())
    assert code == 1
    assert checks["settings"]["status"] == "ok"
    assert "hub: token for chat, client connects to lobby" in checks["audience"]["summary"]
    assert checks["signature"]["status"] == "ok"  # the key came from the configured connection string
    code, checks, _ = doctor(make_token(), "--hub", "chat")
    assert code == 0


def test_without_configuration_a_bare_jwt_is_only_decoded() -> None:
    code, checks, _ = doctor(make_token())
    assert code == 0
    assert checks["audience"]["status"] == "skip"
    assert checks["signature"]["status"] == "skip"
    assert "--key" in checks["signature"]["summary"]


def test_a_url_on_a_wrong_path_is_the_404() -> None:
    code, checks, _ = doctor(f"wss://contoso.webpubsub.azure.com/hubs/chat?access_token={make_token()}")
    assert code == 1
    assert "404" in checks["url"]["summary"]


def test_the_hub_may_also_come_from_the_query() -> None:
    code, checks, _ = doctor(f"wss://contoso.webpubsub.azure.com/client/?hub=chat&access_token={make_token()}")
    assert code == 0
    assert checks["audience"]["status"] == "ok"


def test_a_url_without_a_token_fails() -> None:
    code, checks, _ = doctor("wss://contoso.webpubsub.azure.com/client/hubs/chat")
    assert code == 1
    assert "no access_token" in checks["url"]["summary"]


def test_garbage_is_not_a_jwt() -> None:
    code, checks, text = doctor("not-a-token-at-all")
    assert code == 1
    assert checks["decode"]["status"] == "fail"
    assert "not-a-token-at-all" not in text


def test_the_token_can_come_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(url_for(make_token()) + "\n"))
    code, checks, _ = doctor("-", "--key", EMULATOR_KEY)
    assert code == 0
    assert checks["signature"]["status"] == "ok"


@pytest.fixture(scope="module")
def local_service() -> Iterator[RunningWebPubSub]:
    with LocalWebPubSub(ServiceSettings(event_handlers=())).run_in_thread() as running:
        yield running


def opens(url: str) -> bool | int:
    """True when the local service lets a client in with this URL, else the HTTP status it refused with."""
    try:
        with connect(url, open_timeout=5):
            return True
    except InvalidStatus as refused:
        return refused.response.status_code


def test_the_doctor_agrees_with_the_local_service(
    local_service: RunningWebPubSub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL negotiated from the local stack passes and connects; broken ones fail and are refused."""
    monkeypatch.setenv("WEBPUBSUB_CREDENTIAL", "connectionstring")
    monkeypatch.setenv("WEBPUBSUB_CONNECTION_STRING", local_service.connection_string)
    monkeypatch.setenv("NEGOTIATE_AUTH", "anonymous")
    response = function_app.negotiate(http_request("GET", "negotiate", query=[("userId", "alice")]))
    assert response.status_code == 200
    negotiated = json.loads(response.get_body())["url"]

    code, checks, _ = doctor(negotiated, "--group", "chat")
    assert code == 0, checks
    assert checks["signature"]["summary"].startswith("signed with the key from the connection string")
    assert opens(negotiated) is True

    audience = f"{local_service.endpoint}/client/hubs/chat"
    base = local_service.endpoint.replace("http://", "ws://")
    for broken, check in [
        (make_token(audience=audience, lifetime=-400, issued_offset=-1000), "lifetime"),
        (make_token(audience=audience, key=OTHER_KEY), "signature"),
        (make_token(audience=f"{local_service.endpoint}/client/hubs/lobby"), "audience"),
    ]:
        url = url_for(broken, endpoint=base)
        code, checks, _ = doctor(url)
        assert (code, checks[check]["status"]) == (1, "fail"), check
        assert opens(url) == 401, check


def test_a_token_not_yet_valid_says_from_when_and_how_far_ahead() -> None:
    now = datetime.fromtimestamp(1_000_000, UTC)
    finding = check_lifetime({"nbf": 1_000_000 + 200, "exp": 1_000_000 + 3600}, now)
    assert finding.status == "fail"
    assert finding.summary.startswith("not valid before 1970-01-12T13:50:00Z, 3 min 20 s from now")
    assert "UTC now 1970-01-12T13:46:40Z" in finding.summary


AUDIENCE = f"{ENDPOINT}/client/hubs/chat"


@pytest.mark.parametrize(
    ("token", "check", "expected"),
    [
        (jwt.encode({"aud": AUDIENCE, "exp": "tomorrow"}, EMULATOR_KEY), "lifetime", "exp claim is not a number"),
        (jwt.encode({"aud": AUDIENCE, "exp": float("inf")}, EMULATOR_KEY), "lifetime", "exp claim is not a number"),
        (make_token()[:-6], "decode", "not a JWT"),  # cut off when copied
        (jwt.encode({"aud": AUDIENCE, "exp": 2**40}, "", algorithm="none"), "signature", "not signed with HS256"),
    ],
    ids=["exp-text", "exp-infinite", "truncated", "unsigned"],
)
def test_malformed_tokens_fail_with_the_reason(token: str, check: str, expected: str) -> None:
    code, checks, text = doctor(url_for(token), "--key", EMULATOR_KEY)
    assert code == 1
    assert checks[check]["status"] == "fail"
    assert expected in checks[check]["summary"]
    assert token not in text


def test_an_expiry_beyond_the_calendar_is_shown_as_its_number() -> None:
    finding = check_lifetime({"exp": 2**40}, datetime.fromtimestamp(1_000_000, UTC))
    assert finding.status == "ok"
    assert finding.summary.startswith("valid until 1099511627776 (seconds since 1970, beyond any date)")


def test_a_token_pasted_with_its_bearer_scheme_is_checked_as_the_token() -> None:
    token = make_token()
    code, checks, text = doctor(f"Bearer {token}", "--endpoint", ENDPOINT, "--hub", "chat", "--key", EMULATOR_KEY)
    assert code == 0, text
    assert {checks[name]["status"] for name in ("decode", "lifetime", "audience", "signature")} == {"ok"}
    assert token not in text


@pytest.mark.parametrize(
    ("group", "words"),
    [
        pytest.param("", "empty or only whitespace", id="empty"),
        pytest.param("   ", "empty or only whitespace", id="whitespace"),
        pytest.param("g" * 1025, "1025 characters, more than the service's 1024", id="too-long"),
    ],
)
def test_group_names_the_service_refuses_are_named(group: str, words: str) -> None:
    check = check_group({"role": ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]}, group)
    assert check.status == "fail"
    assert words in check.summary
    assert len(check.name) < 100  # a long name is shortened in the report


def test_the_longest_group_name_the_service_accepts_is_checked_for_roles() -> None:
    group = "g" * 1024
    assert check_group({"role": []}, group).status == "fail"
    assert "missing role" in check_group({"role": []}, group).summary
    assert check_group({"role": ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]}, group).status == "ok"


def test_a_group_name_with_control_characters_is_a_warning() -> None:
    check = check_group({"role": []}, "chat\x07")
    assert check.status == "warn"
    assert "negotiate refuses it" in check.summary
