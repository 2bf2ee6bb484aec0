"""The `talkback` figure: is the async server-side client (the sync client on the default thread pool)
enough, or would an `.aio` SDK client be worth a second credential and a second connection pool?

Against the local Web PubSub service in a process of its own, the same batch of `send_to_group`
calls is made three ways from one asyncio loop: `AsyncServiceClient` (what the app offers, the sync
SDK client on threads), the SDK's own `.aio` client (the alternative it declined, on aiohttp), and
the sync client one call after another (a handler that does not overlap its calls). Reported as
sends per second and the ratio of the app's async form to the `.aio` client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from bench.measure import Figure

TARGET = ">= 0.8x the .aio client's sends/s at 32 in flight"
KEY = "TalkbackBenchKey000000000000000000000000000="
HUB = "chat"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def local_service() -> Iterator[str]:
    """The local Web PubSub service in a child process; yields its connection string."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - our own local service
        [sys.executable, "-m", "devstack.webpubsub", "--port", str(port), "--access-key", KEY, "--no-event-handler"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    endpoint = f"http://localhost:{port}"  # the name the service advertises for a loopback bind
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.head(f"{endpoint}/api/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the local Web PubSub service did not start") from None
                time.sleep(0.1)
        yield f"Endpoint={endpoint};AccessKey={KEY};Version=1.0;"
    finally:
        process.terminate()
        process.wait(10)


async def _in_flight(send: object, calls: int, concurrency: int) -> float:
    """Sends per second with `concurrency` calls in flight at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with semaphore:
            await send(index)  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(calls)))
    return calls / (time.perf_counter() - started)


def talkback_figure(*, calls: int, concurrency: int = 32) -> Figure:
    from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient as AioClient

    from shared.service_client import AsyncServiceClient, ServiceClient
    from shared.tokens import KeyTokenSource

    with local_service() as connection_string:
        endpoint = connection_string.split(";")[0].split("=", 1)[1]
        tokens = KeyTokenSource(endpoint, KEY)
        offloaded = AsyncServiceClient(ServiceClient(tokens, HUB, endpoint=endpoint))
        sync_client = ServiceClient(tokens, HUB, endpoint=endpoint)

        async def measure() -> tuple[float, float]:
            aio = AioClient.from_connection_string(connection_string, hub=HUB)
            async with aio:
                await aio.send_to_group("bench", "warm-up", content_type="text/plain")
                await offloaded.send_to_group("bench", "warm-up")
                ours = await _in_flight(lambda i: offloaded.send_to_group("bench", f"m{i}"), calls, concurrency)
                theirs = await _in_flight(
                    lambda i: aio.send_to_group("bench", f"m{i}", content_type="text/plain"), calls, concurrency
                )
                return ours, theirs

        ours, theirs = asyncio.run(measure())
        started = time.perf_counter()
        for index in range(calls // 4):
            sync_client.send_to_group("bench", f"s{index}")
        sequential = (calls // 4) / (time.perf_counter() - started)
    ratio = ours / theirs
    return Figure(
        "talkback",
        f"{ratio:.2f}x the .aio client's sends/s ({ours:,.0f} vs {theirs:,.0f}/s, {concurrency} in flight)",
        TARGET,
        ratio >= 0.8,
        (
            f"AsyncServiceClient (sync SDK client on the default thread pool): {ours:,.0f} sends/s",
            f"the SDK's .aio client (aiohttp), the declined alternative: {theirs:,.0f} sends/s",
            f"the sync client, one call after another: {sequential:,.0f} sends/s",
            "against the local Web PubSub service in its own process; one group send per call",
        ),
    )
