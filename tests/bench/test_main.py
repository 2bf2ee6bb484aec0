"""`python -m bench` in quick mode, end to end, so that the benchmark cannot rot.

It checks that every figure is measured and printed in the documented shape, never the numbers:
speed belongs to the benchmark's own report, not to a test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import FIGURES, parse_arguments

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(?P<name>[a-z]+): (?P<value>.+) \(target (?P<target>[^()]+)\) (?P<verdict>met|MISSED)$")
VALUES = {
    "import": re.compile(r"^\d+\.\d\dx$"),
    "coldstart": re.compile(
        r"^negotiate \(connection string\) \d+\.\d\dx, negotiate \(entra\) \d+\.\d\dx, first signed event \d+\.\d\dx$"
    ),
    "negotiate": re.compile(r"^\d+\.\d\dx$"),
    "eventhandler": re.compile(
        r"^connect \d+\.\d\dx, message \d+\.\d\dx, [\d,]+ messages/s and [\d,]+ connects/s on one core$"
    ),
    "peer": re.compile(r"^connect \d+\.\d\dx, message \d+\.\d\dx the official Node handler's requests/s$"),
    "health": re.compile(r"^\d+\.\d{3} s worst of \d+ answers with every dependency hanging, deadline [\d.]+ s$"),
    "stack": re.compile(
        r"^5 clients: \d+ failures, [\d,]+ connects/s, round trip p50 [\d.]+ ms p99 [\d.]+ ms, "
        r"event ack p50 [\d.]+ ms p99 [\d.]+ ms$"
    ),
    "talkback": re.compile(r"^\d+\.\d\dx the \.aio client's sends/s \([\d,]+ vs [\d,]+/s, \d+ in flight\)$"),
}


def test_a_quick_run_prints_every_figure_in_the_documented_shape() -> None:
    environment = {**os.environ, "BENCH_QUICK": "1", "BENCH_CLIENTS": "5", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    assert "cores, Python 3." in lines[0]
    assert lines[1] == "run: quick (BENCH_QUICK=1)"
    figures = {match["name"]: match for line in lines if (match := LINE.match(line))}
    assert list(figures) == list(FIGURES)
    for name, match in figures.items():
        assert VALUES[name].match(match["value"]), match.group(0)
    for line in lines[2:]:
        assert LINE.match(line) or line.startswith("  "), line  # details are indented under their figure


def test_quick_mode_and_the_figure_selection_come_from_the_environment_and_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCH_QUICK", "1")
    monkeypatch.setenv("BENCH_CLIENTS", "7")
    arguments = parse_arguments(["--only", "stack,import"])
    assert arguments.quick is True
    assert arguments.clients == 7
    assert arguments.figures == ["import", "stack"]
    monkeypatch.setenv("BENCH_QUICK", "0")
    assert parse_arguments(["--clients", "3"]).quick is False


def test_an_unknown_figure_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["--only", "negotiate,speed"])
    assert "unknown figure(s): speed" in capsys.readouterr().err
