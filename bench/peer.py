"""The app on the local host against the official Node.js handler, side by side under the same load.

The peer is `@azure/web-pubsub-express` in express (versions pinned in bench/node-peer/package-lock.json,
installed by `make bench` with `npm ci`), one Node process; ours is the app on the local Functions host
exactly as `make run` serves it, one Python process (`bench.host_server`). Both get the same signed
`connect` and text `message` events from wrk (Debian's package), one wrk thread keeping a fixed number
of connections busy; the runs alternate peer/ours, swapping which goes first each round, so a slow
moment of the shared machine weighs on both. The figure is ours/peer in requests per second.

The peer does not verify `ce-signature` (the package reads the header and never checks it, so a
forged event is accepted); ours verifies every signature. Both answer a connect with the same JSON
(user id, roles, subprotocol) and a message with no reply.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.inprocess import CONNECT_BODY, _event_headers
from bench.measure import Figure

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT / "bench" / "node-peer"
TARGET = 1.0
MESSAGE_BODY = b"hello, chat"
EVENTS = {
    "connect": (_event_headers("azure.webpubsub.sys.connect", "application/json; charset=utf-8"), CONNECT_BODY),
    "message": (_event_headers("azure.webpubsub.user.message", "text/plain; charset=utf-8"), MESSAGE_BODY),
}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Run:
    """One wrk run against one server: requests per second, latency percentiles, CPU per request."""

    rate: float
    p50: float
    p99: float
    errors: int
    cpu_per_request: float | None


def lua_script(headers: dict[str, str], body: bytes) -> str:
    """wrk's request: POST with these headers and this body (Lua long strings, no escaping needed)."""
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body.decode()}]==]"]
    lines += [f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 (seconds), and failed requests (non-2xx answers and socket errors)."""
    rate = _RATE.search(output)
    latencies = {percent: float(value) * _UNIT_SECONDS[unit] for percent, value, unit in _LATENCY.findall(output)}
    if rate is None or set(latencies) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output: {output[-500:]!r}")
    errors = sum(int(count) for count in _NON_2XX.findall(output))
    socket_errors = _SOCKET_ERRORS.search(output)
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    return float(rate.group(1)), latencies["50"], latencies["99"], errors


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far (Linux /proc), or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pid: int


@contextmanager
def _serving(name: str, command: list[str], cwd: Path) -> Iterator[Server]:
    """A server process that prints `{"port": N}` when it listens and ends when its standard input closes."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WEBPUBSUB_", "NEGOTIATE_"))}
    environment["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(  # noqa: S603 - our own commands
            command, cwd=cwd, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                process.wait(10)
                errors.seek(0)
                raise RuntimeError(f"the {name} server did not start: {errors.read()[-2000:]}")
            port = int(json.loads(line)["port"])
            yield Server(name, f"http://127.0.0.1:{port}/api/eventhandler", process.pid)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _check_answers(server: Server) -> None:
    """Each event is answered 2xx before any load: a refusing server would look fast."""
    import httpx

    for name, (headers, body) in EVENTS.items():
        response = httpx.post(server.url, headers=headers, content=body, timeout=10)
        if response.status_code >= 300:
            raise RuntimeError(f"the {server.name} answered {name} with {response.status_code}: {response.text[:200]}")


def _wrk(wrk: str, server: Server, script: Path, *, seconds: int, connections: int) -> Run:
    before = _cpu_seconds(server.pid)
    completed = subprocess.run(  # noqa: S603 - Debian's wrk against our own server
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), server.url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    )
    after = _cpu_seconds(server.pid)
    rate, p50, p99, errors = parse_wrk(completed.stdout)
    cpu = (after - before) / (rate * seconds) if before is not None and after is not None and rate else None
    return Run(rate, p50, p99, errors, cpu)


def peer_versions() -> str:
    """The peer's pinned packages, as the lockfile installs them."""
    lock = json.loads((PEER_DIR / "package-lock.json").read_text(encoding="utf-8"))
    packages = lock.get("packages", {})
    names = ("@azure/web-pubsub-express", "express")
    return ", ".join(f"{name} {packages.get(f'node_modules/{name}', {}).get('version', '?')}" for name in names)


def _node() -> tuple[str, str]:
    node = shutil.which("node")
    wrk = shutil.which("wrk")
    if node is None or wrk is None:
        raise RuntimeError("the peer figure needs node and wrk (make bench installs wrk from Debian)")
    if not (PEER_DIR / "node_modules" / "@azure" / "web-pubsub-express").is_dir():
        raise RuntimeError("the Node peer is not installed: npm ci --prefix bench/node-peer (make bench does it)")
    return node, wrk


def peer_figure(*, rounds: int, seconds: int, connections: int = 32, warm_up: bool = True) -> Figure:
    node, wrk = _node()
    runs: dict[tuple[str, str], list[Run]] = {}
    ratios: dict[str, list[float]] = {name: [] for name in EVENTS}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        scripts = {}
        for name, (headers, body) in EVENTS.items():
            scripts[name] = folder / f"{name}.lua"
            scripts[name].write_text(lua_script(headers, body), encoding="utf-8")
        peer = stack.enter_context(_serving("peer", [node, "server.js", "0"], PEER_DIR))
        ours = stack.enter_context(_serving("ours", [sys.executable, "-m", "bench.host_server", "--port", "0"], ROOT))
        for server in (peer, ours):
            _check_answers(server)
            for script in scripts.values() if warm_up else ():  # connections, caches, the worker threads
                _wrk(wrk, server, script, seconds=1, connections=connections)
        for round_number in range(rounds):
            order = (peer, ours) if round_number % 2 == 0 else (ours, peer)
            for name, script in scripts.items():
                measured = {
                    server.name: _wrk(wrk, server, script, seconds=seconds, connections=connections) for server in order
                }
                for server_name, run in measured.items():
                    runs.setdefault((server_name, name), []).append(run)
                ratios[name].append(measured[ours.name].rate / measured[peer.name].rate)
    ratio = {name: statistics.median(values) for name, values in ratios.items()}
    failed = sum(run.errors for values in runs.values() for run in values)
    details = [
        f"{_describe(server_name, name, values)}"
        for (server_name, name), values in sorted(runs.items(), key=lambda item: (item[0][1], item[0][0]))
    ]
    details += [
        f"peer: {peer_versions()}, one Node {_node_version(node)} process; it does not verify ce-signature "
        "(a forged event is accepted), ours verifies every signature",
        "ours: the app on the local Functions host (uvicorn, one process, sync functions on the worker's pool)",
        f"wrk -t1 -c{connections}, {seconds} s per run, {rounds} round(s) alternating which server goes first; "
        f"ratio = median of the per-round ratios of requests/s; {failed} failed requests",
    ]
    worst = min(ratio.values())
    return Figure(
        "peer",
        f"connect {ratio['connect']:.2f}x, message {ratio['message']:.2f}x the official Node handler's requests/s",
        f">= {TARGET:.1f}x",
        worst >= TARGET and failed == 0,
        tuple(details),
    )


def _describe(server_name: str, event: str, values: list[Run]) -> str:
    rate = statistics.median(run.rate for run in values)
    p50 = statistics.median(run.p50 for run in values)
    p99 = statistics.median(run.p99 for run in values)
    cpu_values = [run.cpu_per_request for run in values if run.cpu_per_request is not None]
    cpu = f", {statistics.median(cpu_values) * 1e6:.0f} µs CPU/request" if cpu_values else ""
    return f"{event} {server_name}: {rate:,.0f} req/s, p50 {p50 * 1e3:.1f} ms p99 {p99 * 1e3:.1f} ms{cpu}"


def _node_version(node: str) -> str:
    completed = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    return completed.stdout.strip() or "?"
