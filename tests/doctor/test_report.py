"""The report: one line per check, JSON for scripts, the exit code, and secrets that never get out."""

from __future__ import annotations

import json

from doctor.report import Report, fail, fingerprint, ok, redact_url, skip, url_query_values, warn


def sample() -> Report:
    report = Report("handler")
    report.add(
        ok("handshake", "OPTIONS answered 200"),
        warn("connect", "answered 200 with extra fields", "Return only the known fields."),
        fail("user event", "answered 500", "Look at the log.", code="HttpHandlerUnexpectedResponse"),
        skip("signed events", "not sent: no key"),
    )
    return report


def test_text_has_one_line_per_check_with_status_problem_and_fix() -> None:
    lines = sample().render_text().splitlines()
    assert lines[0] == "OK   handshake: OPTIONS answered 200"
    assert lines[1] == "WARN connect: answered 200 with extra fields Fix: Return only the known fields."
    assert lines[2] == "FAIL user event: HttpHandlerUnexpectedResponse: answered 500 Fix: Look at the log."
    assert lines[3] == "SKIP signed events: not sent: no key"
    assert lines[4] == "handler: problems found (1 failed, 1 warnings, 1 ok, 1 skipped)"


def test_json_carries_every_field_and_the_verdict() -> None:
    document = json.loads(sample().render_json())
    assert document["command"] == "handler"
    assert document["ok"] is False
    assert document["counts"] == {"ok": 1, "warn": 1, "fail": 1, "skip": 1}
    assert document["checks"][2] == {
        "name": "user event",
        "status": "fail",
        "code": "HttpHandlerUnexpectedResponse",
        "summary": "answered 500",
        "fix": "Look at the log.",
    }


def test_only_failures_change_the_exit_code() -> None:
    report = Report("config")
    report.add(ok("a", "fine"), warn("b", "look"), skip("c", "not checked"))
    assert (report.ok, report.exit_code) == (True, 0)
    report.add(fail("d", "broken"))
    assert (report.ok, report.exit_code) == (False, 1)


def test_concealed_values_are_masked_in_both_renderings() -> None:
    secret = 'key-with-"quote"-and-more'
    report = Report("token")
    report.conceal(secret, None, "short")
    report.add(fail("signature", f"the key {secret} is wrong", f"replace {secret}"), ok("short", "short is fine"))
    text = report.render_text()
    rendered_json = report.render_json()
    assert secret not in text
    assert "***" in text
    assert secret not in json.loads(rendered_json)["checks"][0]["summary"]
    assert "short is fine" in text  # values under six characters are too common to mask


def test_fingerprints_are_short_stable_and_distinct() -> None:
    assert fingerprint("key-one") == fingerprint("key-one")
    assert fingerprint("key-one") != fingerprint("key-two")
    assert fingerprint("key-one").startswith("sha256:")
    assert "key-one" not in fingerprint("key-one")


def test_redact_url_masks_every_query_value() -> None:
    url = "https://app.azurewebsites.net/api/eventhandler?code=abc123&x=1"
    assert redact_url(url) == "https://app.azurewebsites.net/api/eventhandler?code=***&x=***"
    assert redact_url("https://app/api") == "https://app/api"
    assert url_query_values(url) == ["abc123", "1"]
