"""/api/health with every dependency hanging: how long the answer takes against HEALTH_DEADLINE_SECONDS.

The stand-ins accept TCP connections and never answer a byte: the Web PubSub endpoint, Key Vault
(https: the TLS handshake itself hangs) and the managed-identity endpoint. The app runs unchanged
(DefaultAzureCredential from the environment, the real SDK clients), in keyvault mode and in entra
mode, with HEALTH_CACHE_SECONDS=0 and the requests spaced past the monitor's shortest cache
(MIN_PROBE_INTERVAL_SECONDS), so that every request runs a probe round.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.measure import Figure, percentile
from shared.health.monitor import MIN_PROBE_INTERVAL_SECONDS
from shared.runtime import reset_runtime

TOLERANCE = 0.10  # the answer may take the deadline plus 10 %
ROOT = Path(__file__).resolve().parent.parent


class HangingServer:
    """Accepts every connection and never reads or writes; closing it resets them all."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)  # so that the accepting thread notices `close`
        self.port: int = self._socket.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hanging-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted.append(connection)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._socket.close()
        for connection in self._accepted:
            connection.close()


@contextmanager
def hanging_servers(count: int) -> Iterator[list[HangingServer]]:
    with ExitStack() as stack:
        servers = []
        for _ in range(count):
            server = HangingServer()
            stack.callback(server.close)
            servers.append(server)
        yield servers


def _modes(deadline: float, service: int, vault: int, identity: int) -> dict[str, dict[str, str]]:
    common = {
        "WEBPUBSUB_ENDPOINT": f"http://127.0.0.1:{service}",
        "NEGOTIATE_AUTH": "anonymous",
        "HEALTH_DEADLINE_SECONDS": f"{deadline:g}",
        "HEALTH_CACHE_SECONDS": "0",
        "IDENTITY_ENDPOINT": f"http://127.0.0.1:{identity}/token",
        "IDENTITY_HEADER": "bench",
    }
    return {
        "keyvault": {
            **common,
            "WEBPUBSUB_CREDENTIAL": "keyvault",
            "KEYVAULT_URI": f"https://127.0.0.1:{vault}/",
            "WEBPUBSUB_KEY_SECRET_NAME": "webpubsub-access-key",
        },
        "entra": {**common, "WEBPUBSUB_CREDENTIAL": "entra", "EVENTHANDLER_AUTH": "none"},
    }


def health_figure(*, deadline: float, requests: int) -> Figure:
    """Each mode is measured in a child process of its own (`python -m bench.health`), which leaves
    as soon as it has printed.

    The probes hung on purpose keep their threads, and the SDKs keep retrying after the stand-ins
    close: an interpreter would wait for those threads before exiting, and so does switching the
    app's settings to the next mode (the runtime's close waits for its probe threads).
    """
    limit = deadline * (1 + TOLERANCE)
    times: dict[str, list[float]] = {}
    unexpected: list[str] = []
    for mode in MODES:
        result = _measure_in_child(mode, deadline, requests)
        times[mode] = result["times"]
        unexpected += result["unexpected"]
    every = [seconds for samples in times.values() for seconds in samples]
    worst = max(every)
    details = [
        f"{mode} mode: {len(samples)} answers, median {percentile(samples, 0.5):.3f} s, worst {max(samples):.3f} s"
        for mode, samples in times.items()
    ]
    details.append("every answer a 503 naming the hung checks" if not unexpected else f"unexpected: {unexpected}")
    return Figure(
        "health",
        f"{worst:.3f} s worst of {len(every)} answers with every dependency hanging, deadline {deadline:g} s",
        f"<= {limit:.3g} s",
        worst <= limit and not unexpected,
        tuple(details),
    )


MODES = ("keyvault", "entra")


def _measure_in_child(mode: str, deadline: float, requests: int) -> dict[str, Any]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(  # noqa: S603 - our own interpreter with our own module
        [sys.executable, "-m", "bench.health", mode, str(deadline), str(requests)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120 + 10 * deadline * requests,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the health measurement failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def measure(mode: str, *, deadline: float, requests: int) -> dict[str, Any]:
    """Seconds per /api/health answer in one mode, and any answer that was not a 503 "unhealthy"."""
    import azure.functions as func

    import function_app

    request = func.HttpRequest(method="GET", url="http://localhost:7071/api/health", headers={}, body=b"")
    times: list[float] = []
    unexpected: list[str] = []
    with hanging_servers(3) as (service, vault, identity):
        values = _modes(deadline, service.port, vault.port, identity.port)[mode]
        os.environ.update(values)
        for variable in ("AZURE_CLIENT_ID", "MSI_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
            os.environ.pop(variable, None)
        reset_runtime()  # the app reads the settings just made; never reset again (see health_figure)
        for number in range(requests):
            if number:  # past the monitor's shortest cache, so that every answer runs a probe round
                time.sleep(MIN_PROBE_INTERVAL_SECONDS)
            started = time.perf_counter()
            response = function_app.health(request)
            times.append(time.perf_counter() - started)
            report = json.loads(response.get_body())
            if response.status_code != 503 or report["status"] != "unhealthy":
                unexpected.append(f"{mode}: {response.status_code} {report['status']}")
        return {"times": times, "unexpected": unexpected}


if __name__ == "__main__":
    logging.getLogger().addHandler(logging.NullHandler())
    outcome = measure(sys.argv[1], deadline=float(sys.argv[2]), requests=int(sys.argv[3]))
    print(json.dumps(outcome), flush=True)
    os._exit(0)  # without waiting for the probe threads that are still hung on purpose
