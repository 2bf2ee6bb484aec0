"""The peer figure's pieces that need no servers: wrk's request script and the reading of its report."""

from __future__ import annotations

import pytest

from bench.peer import EVENTS, lua_script, parse_wrk, peer_versions

REPORT = """Running 1s test @ http://127.0.0.1:18072/api/eventhandler
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.07ms    2.87ms  23.87ms   85.56%
    Req/Sec     2.16k   246.02     2.49k    50.00%
  Latency Distribution
     50%  812.00us
     75%    4.54ms
     90%    7.80ms
     99%    1.20s
  2170 requests in 1.01s, 394.16KB read
Requests/sec:   2146.68
Transfer/sec:    389.92KB
"""


def test_a_report_gives_the_rate_and_the_percentiles_in_seconds() -> None:
    rate, p50, p99, errors = parse_wrk(REPORT)
    assert rate == 2146.68
    assert p50 == pytest.approx(812e-6)
    assert p99 == pytest.approx(1.2)
    assert errors == 0


def test_refused_answers_and_socket_errors_count_as_failed_requests() -> None:
    report = REPORT + "  Socket errors: connect 0, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 1488\n"
    assert parse_wrk(report)[3] == 1488 + 2 + 3


def test_a_report_without_percentiles_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="unexpected wrk output"):
        parse_wrk("Requests/sec: 10\n")


def test_the_request_script_posts_the_signed_event_as_it_is() -> None:
    headers, body = EVENTS["connect"]
    script = lua_script(headers, body)
    assert 'wrk.method = "POST"' in script
    assert f"wrk.body = [==[{body.decode()}]==]" in script
    assert f'wrk.headers["ce-signature"] = [==[{headers["ce-signature"]}]==]' in script
    assert headers["ce-type"] == "azure.webpubsub.sys.connect"


def test_the_peer_is_pinned_by_its_lockfile() -> None:
    versions = peer_versions()
    assert "@azure/web-pubsub-express 1.1.0" in versions
    assert "express 5." in versions
