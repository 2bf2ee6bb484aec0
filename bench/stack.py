"""N concurrent clients through the local stack: negotiate, connect, join a group, exchange messages.

The stack (local Functions host and local Web PubSub service) runs in a child process. The clients
run here on one asyncio loop (uvloop), all at once: each negotiates over HTTP, connects a WebSocket with the
`json.webpubsub.azure.v1` subprotocol (the service asks the app's /api/eventhandler to accept it),
joins its room (groups of ten), then sends messages to the room at a steady pace (one every
``MESSAGE_INTERVAL_SECONDS`` in a full run, the clients' sends spread evenly over that interval), timing each
until its own copy comes back, and then one user event at the same pace, which the service relays
to the app's event handler before acknowledging it. Latency is measured at that stated offered
load, not at saturation: with every client sending back to back, a round trip only says how long
the queue is (Little's law). Saturation is measured apart, as throughput: finally every client
sends one more message at the same instant, and the burst's duration until the last copy arrived
gives the deliveries per second. Every step that fails or times out is counted.

The clients' own cost is kept small so that they measure the stack, not themselves: negotiate goes
through devstack's keep-alive HTTP client (an httpx ``AsyncClient`` re-scans its whole pool on every
request, which with hundreds of requests at once took seconds), and the stack's host name is
resolved once, not for every connection through the loop's default executor.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from bench.measure import Figure, milliseconds, percentile

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from devstack.webpubsub.event_client import EventClient

Frame = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
ROOM_SIZE = 10
STEP_TIMEOUT_SECONDS = 60.0
SUBPROTOCOL = "json.webpubsub.azure.v1"
#: Each client sends one message per interval (a busy chat: 500 clients offer 500 messages/s,
#: 5,000 deliveries/s in rooms of ten); the user event follows at the same pace.
MESSAGE_INTERVAL_SECONDS = 1.0


@dataclass
class Results:
    clients: int
    connected_at: list[float] = field(default_factory=list)
    connect_latencies: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    event_round_trips: list[float] = field(default_factory=list)
    burst_done_at: list[float] = field(default_factory=list)
    burst_started_at: float = 0.0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def burst_seconds(self) -> float:
        return max(self.burst_done_at) - self.burst_started_at if self.burst_done_at else 0.0


class Barrier:
    """Every client arrives (or fails) before any goes on; ``opened_at`` is when the last one arrived."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.arrived: set[int] = set()
        self.opened = asyncio.Event()
        self.opened_at = 0.0

    def arrive(self, number: int) -> None:
        self.arrived.add(number)
        if len(self.arrived) == self.clients and not self.opened.is_set():
            self.opened_at = time.perf_counter()
            self.opened.set()

    async def wait(self) -> float:
        await asyncio.wait_for(self.opened.wait(), STEP_TIMEOUT_SECONDS * 2)
        return self.opened_at


@contextmanager
def stack_process(groups: list[str]) -> Iterator[str]:
    """The child process serving the stack; yields the negotiate URL, ends it when done."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("WEBPUBSUB_", "NEGOTIATE_"))
    }
    environment["PYTHONPATH"] = str(ROOT)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter with our own module
            [sys.executable, "-m", "bench.stack_server", "--groups", ",".join(groups)],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                process.wait(10)
                errors.seek(0)
                raise RuntimeError(f"the local stack did not start: {errors.read()[-2000:]}")
            yield str(json.loads(line)["negotiate"])
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait(10)


class Client:
    """One chat client; every frame it receives lands in its inbox."""

    def __init__(self, number: int, results: Results) -> None:
        self.number = number
        self.user = f"user-{number}"
        self.room = f"room-{number // ROOM_SIZE}"
        self.results = results
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()

    async def expect(self, matches: Callable[[Frame], bool]) -> Frame:
        """The next frame for which `matches(frame)` is true; others (peers' messages) are skipped."""
        while True:
            frame = await self.frames.get()
            if matches(frame):
                return frame

    async def run(
        self,
        http: EventClient,
        negotiate_url: str,
        address: str,
        barriers: tuple[Barrier, Barrier],
        messages: int,
        interval: float,
    ) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        stage = "negotiate"
        started = time.perf_counter()
        try:
            query = urlencode({"userId": self.user, "group": self.room})
            response = await http.request("GET", f"{negotiate_url}?{query}")
            if response.status_code != 200:
                raise RuntimeError(f"negotiate answered {response.status_code}")
            stage = "connect"
            async with connect(
                json.loads(response.content)["url"],
                host=address,  # the URL's host name, resolved once
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                open_timeout=STEP_TIMEOUT_SECONDS,
                max_queue=None,
            ) as socket:
                reader = asyncio.create_task(self._read(socket))
                try:
                    await asyncio.wait_for(self.expect(lambda f: f.get("event") == "connected"), STEP_TIMEOUT_SECONDS)
                    now = time.perf_counter()
                    self.results.connected_at.append(now)
                    self.results.connect_latencies.append(now - started)
                    stage = "join"
                    await self._acknowledged(socket, {"type": "joinGroup", "group": self.room, "ackId": 1})
                    barriers[0].arrive(self.number)
                    opened = await barriers[0].wait()
                    stage = "message"
                    offset = interval * self.number / self.results.clients
                    for sequence in range(messages):
                        await _sleep_until(opened + offset + sequence * interval)
                        self.results.round_trips.append(await self._round_trip(socket, sequence))
                    stage = "event"
                    await _sleep_until(opened + offset + messages * interval)
                    sent = time.perf_counter()
                    event = {"type": "event", "event": "message", "dataType": "text", "data": "hi", "ackId": 2}
                    await self._acknowledged(socket, event)
                    self.results.event_round_trips.append(time.perf_counter() - sent)
                    stage = "burst"
                    barriers[1].arrive(self.number)
                    self.results.burst_started_at = await barriers[1].wait()
                    await self._round_trip(socket, messages)
                    self.results.burst_done_at.append(time.perf_counter())
                finally:
                    reader.cancel()
        except Exception as error:  # every failure is counted, by stage, and the run goes on
            self.results.failures[f"{stage}: {type(error).__name__}"] += 1
            for barrier in barriers:  # nobody waits for a client that has failed
                barrier.arrive(self.number)

    async def _read(self, socket: ClientConnection) -> None:
        async for raw in socket:
            await self.frames.put(json.loads(raw))

    async def _acknowledged(self, socket: ClientConnection, frame: Frame) -> None:
        await socket.send(json.dumps(frame))
        ack = await asyncio.wait_for(
            self.expect(lambda f: f.get("type") == "ack" and f.get("ackId") == frame["ackId"]), STEP_TIMEOUT_SECONDS
        )
        if not ack.get("success"):
            raise RuntimeError(f"{frame['type']} refused: {ack.get('error')}")

    async def _round_trip(self, socket: ClientConnection, sequence: int) -> float:
        """Send one message to the room; the seconds until the sender's own copy came back."""
        data = {"from": self.user, "sequence": sequence}
        sent = time.perf_counter()
        await socket.send(json.dumps({"type": "sendToGroup", "group": self.room, "dataType": "json", "data": data}))
        await asyncio.wait_for(
            self.expect(lambda f: f.get("type") == "message" and f.get("group") == self.room and f.get("data") == data),
            STEP_TIMEOUT_SECONDS,
        )
        return time.perf_counter() - sent


async def _sleep_until(moment: float) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``moment`` (at once if it has)."""
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _run_clients(negotiate_url: str, clients: int, messages: int, interval: float) -> tuple[Results, float]:
    from devstack.webpubsub.event_client import EventClient

    results = Results(clients)
    barriers = (Barrier(clients), Barrier(clients))
    address = resolve(negotiate_url)
    parts = urlsplit(negotiate_url)
    negotiate_url = parts._replace(netloc=f"{address}:{parts.port}").geturl()
    http = EventClient(STEP_TIMEOUT_SECONDS, max_connections=clients)
    try:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                Client(number, results).run(http, negotiate_url, address, barriers, messages, interval)
                for number in range(clients)
            )
        )
    finally:
        await http.aclose()
    return results, started


def resolve(url: str) -> str:
    """The IPv4 address of the URL's host (the stack listens on 127.0.0.1, as `make run` does)."""
    parts = urlsplit(url)
    found = socket.getaddrinfo(parts.hostname or "localhost", parts.port, socket.AF_INET, socket.SOCK_STREAM)
    return str(found[0][4][0])


#: The targets at this many clients (at other counts only failures count).
TARGET_CLIENTS = 500
TARGET_CONNECTS_PER_SECOND = 300.0
TARGET_ROUND_TRIP_P99 = 0.050
TARGET_ACK_P99 = 0.200
TARGET = (
    f"0 failures; at {TARGET_CLIENTS} clients >= {TARGET_CONNECTS_PER_SECOND:.0f} connects/s, "
    f"round trip p99 <= {TARGET_ROUND_TRIP_P99 * 1e3:.0f} ms, event ack p99 <= {TARGET_ACK_P99 * 1e3:.0f} ms"
)


@dataclass(frozen=True)
class StackRun:
    """One run at one number of clients, summarised."""

    clients: int
    failed: int
    connected: int
    connect_seconds: float
    results: Results
    interval: float

    @property
    def connects_per_second(self) -> float:
        return self.connected / self.connect_seconds if self.connect_seconds > 0 else 0.0

    def meets_targets(self) -> bool:
        if self.failed or self.connected != self.clients:
            return False
        if self.clients != TARGET_CLIENTS:
            return True
        return (
            self.connects_per_second >= TARGET_CONNECTS_PER_SECOND
            and bool(self.results.round_trips)
            and percentile(self.results.round_trips, 0.99) <= TARGET_ROUND_TRIP_P99
            and bool(self.results.event_round_trips)
            and percentile(self.results.event_round_trips, 0.99) <= TARGET_ACK_P99
        )

    def summary(self) -> str:
        results = self.results
        return (
            f"{self.clients} clients: {self.failed} failures, {self.connects_per_second:,.0f} connects/s, "
            f"round trip p50 {_p(results.round_trips, 0.5)} p99 {_p(results.round_trips, 0.99)}, "
            f"event ack p50 {_p(results.event_round_trips, 0.5)} p99 {_p(results.event_round_trips, 0.99)}"
        )

    def _deliveries_per_second(self) -> float:
        seconds = self.results.burst_seconds
        return len(self.results.burst_done_at) * ROOM_SIZE / seconds if seconds > 0 else 0.0

    def details(self, messages: int) -> list[str]:
        results = self.results
        lines = [
            f"{self.clients} clients: {self.connected} connected in {self.connect_seconds:.2f} s "
            "(negotiate + WebSocket + connect event), "
            f"per client p50 {_p(results.connect_latencies, 0.5)} p99 {_p(results.connect_latencies, 0.99)}; "
            f"{len(results.round_trips)} group messages ({messages} per client, one per client every "
            f"{self.interval:g} s: {self.clients / self.interval:,.0f} messages/s offered, "
            f"rooms of {ROOM_SIZE}) timed from send until the sender's own copy arrived; "
            f"{len(results.event_round_trips)} user events through the app's event handler at the same pace, "
            "timed until acknowledged",
            f"{self.clients} clients: saturation, every client sending one message at the same instant: "
            f"{len(results.burst_done_at)} messages ({len(results.burst_done_at) * ROOM_SIZE:,} deliveries) in "
            f"{results.burst_seconds * 1e3:,.0f} ms, {self._deliveries_per_second():,.0f} deliveries/s",
        ]
        lines += [
            f"{self.clients} clients: failed {stage}: {count}" for stage, count in sorted(results.failures.items())
        ]
        return lines


def stack_run(*, clients: int, messages: int, interval: float = MESSAGE_INTERVAL_SECONDS) -> StackRun:
    """A fresh stack process for `clients` clients, all starting at once."""
    rooms = [f"room-{number}" for number in range((clients + ROOM_SIZE - 1) // ROOM_SIZE)]
    with stack_process(rooms) as negotiate_url:
        import uvloop

        # The clients are the measuring instrument: their own collector pauses (up to 80 ms for a
        # full pass over 500 clients' objects) are kept out of the stack's latencies, as timeit does.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results, started = runner.run(_run_clients(negotiate_url, clients, messages, interval))
        finally:
            if collecting:
                gc.enable()
    connected = len(results.connected_at)
    connect_seconds = (max(results.connected_at) - started) if results.connected_at else 0.0
    return StackRun(clients, sum(results.failures.values()), connected, connect_seconds, results, interval)


def stack_figure(*, clients: tuple[int, ...], messages: int, interval: float = MESSAGE_INTERVAL_SECONDS) -> Figure:
    runs = [stack_run(clients=count, messages=messages, interval=interval) for count in clients]
    details = [line for run in runs for line in run.details(messages)]
    details.append(
        "the clients run in the bench process on one uvloop loop (devstack's keep-alive HTTP client for "
        "negotiate, websockets), "
        "the stack (local host and local service) in a child process"
    )
    return Figure(
        "stack",
        "; ".join(run.summary() for run in runs),
        TARGET,
        all(run.meets_targets() for run in runs),
        tuple(details),
    )


def _p(values: list[float], fraction: float) -> str:
    return milliseconds(percentile(values, fraction)) if values else "n/a"
