"""`python -m bench` (`make bench`): measure every figure in one run and print one line each.

    python -m bench                  # the full run, as recorded in docs/performance.md
    BENCH_QUICK=1 python -m bench    # the same measurements, short (seconds)
    python -m bench --clients 200 --only stack,health

A missed target is reported (`MISSED`) but is not an error; the exit status is 1 only when a
measurement itself could not run.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.measure import Figure

FIGURES = ("import", "coldstart", "negotiate", "eventhandler", "peer", "health", "stack", "talkback")
TARGETS = {
    "import": "<= 1.3x",
    "coldstart": "<= 1.3x",
    "negotiate": "<= 1.2x",
    "eventhandler": "<= 3x",
    "peer": ">= 1.0x",
    "health": "<= deadline + 10%",
    "stack": "0 failures and the rates at 500 clients",
    "talkback": ">= 0.8x the .aio client",
}


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to do."""

    quick: bool
    clients: tuple[int, ...]
    rounds: int
    negotiate_calls: int
    event_calls: int
    import_rounds: int
    health_deadline: float
    health_requests: int
    messages: int
    peer_rounds: int
    peer_seconds: int
    coldstart_rounds: int
    message_interval: float

    @classmethod
    def of(cls, *, quick: bool, clients: int | None) -> Plan:
        # Quick mode runs every measurement once, as briefly as each allows (a test runs it so
        # the benchmark cannot rot; its numbers mean nothing): no warm-ups, a short health
        # deadline, the stack's messages ten times as often.
        if quick:
            return cls(True, (clients or 20,), 3, 200, 300, 3, 0.5, 2, 2, 1, 1, 1, 0.1)
        return cls(False, (clients,) if clients else (500, 1000), 15, 2000, 3000, 15, 2.0, 5, 10, 4, 5, 9, 1.0)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Measure the app's performance figures.")
    parser.add_argument("--quick", action="store_true", help="a short run (also BENCH_QUICK=1)")
    parser.add_argument(
        "--clients", type=int, help="concurrent clients for the stack figure (default 500, then 1000; BENCH_CLIENTS)"
    )
    parser.add_argument("--only", help=f"comma-separated figures to measure, of {', '.join(FIGURES)}")
    arguments = parser.parse_args(argv)
    arguments.quick = arguments.quick or os.environ.get("BENCH_QUICK", "") not in {"", "0"}
    if arguments.clients is None and os.environ.get("BENCH_CLIENTS"):
        arguments.clients = int(os.environ["BENCH_CLIENTS"])
    names = [name.strip() for name in (arguments.only or ",".join(FIGURES)).split(",") if name.strip()]
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(unknown)}")
    arguments.figures = [name for name in FIGURES if name in names]
    return arguments


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def measurements(plan: Plan) -> dict[str, Callable[[], Figure]]:
    from bench.coldstart import coldstart_figure
    from bench.health import health_figure
    from bench.imports import import_figure
    from bench.inprocess import eventhandler_figure, negotiate_figure
    from bench.peer import peer_figure
    from bench.stack import stack_figure
    from bench.talkback import talkback_figure

    return {
        "import": lambda: import_figure(rounds=plan.import_rounds),
        "coldstart": lambda: coldstart_figure(rounds=plan.coldstart_rounds, warm_up=not plan.quick),
        "negotiate": lambda: negotiate_figure(rounds=plan.rounds, calls=plan.negotiate_calls),
        "eventhandler": lambda: eventhandler_figure(rounds=plan.rounds, calls=plan.event_calls),
        "peer": lambda: peer_figure(rounds=plan.peer_rounds, seconds=plan.peer_seconds, warm_up=not plan.quick),
        "health": lambda: health_figure(deadline=plan.health_deadline, requests=plan.health_requests),
        "stack": lambda: stack_figure(clients=plan.clients, messages=plan.messages, interval=plan.message_interval),
        "talkback": lambda: talkback_figure(calls=300 if plan.quick else 3000),
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    plan = Plan.of(quick=arguments.quick, clients=arguments.clients)
    # The app's log lines are not part of what is measured: records are made but go nowhere.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.WARNING)
    print(f"machine: {machine()}", flush=True)
    print(f"run: {'quick (BENCH_QUICK=1)' if plan.quick else 'full'}", flush=True)
    broken = 0
    run = measurements(plan)
    for name in arguments.figures:
        try:
            figure = run[name]()
        except Exception as error:
            broken += 1
            figure = Figure(name, f"could not be measured ({type(error).__name__}: {error})", TARGETS[name], False)
            traceback.print_exc(file=sys.stderr)
        print("\n".join(figure.lines()), flush=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
