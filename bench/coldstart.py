"""Cold start as a Flex Consumption user feels it: a fresh process, `import function_app`, the first answer.

Each sample is one new `python` process that times `import function_app` plus its first request
(a negotiate in one credential mode, or the first signed connect event), against a floor: a new
process that imports `azure.functions` and does the same one operation with the SDK directly
(`get_client_access_token` on a `WebPubSubServiceClient` with the same credential; for the event,
one HMAC and one JSON parse). Both kinds alternate, after a warm-up of each so that bytecode
caches exist, as they do in a deployment. Entra mode runs against the local Web PubSub service,
which is also the managed-identity endpoint (`IDENTITY_ENDPOINT`), so its REST `generateToken`
call and the token request are real HTTP on this machine. The child also reports how many modules
the first request loaded.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench.inprocess import ACCESS_KEY, CONNECT_BODY, SETTINGS, _event_headers
from bench.measure import Figure, milliseconds

TARGET = 1.3
ROOT = Path(__file__).resolve().parent.parent

APP_PROBE = """
import json, sys, time
started = time.perf_counter()
import function_app
imported = time.perf_counter()
before = set(sys.modules)
import azure.functions as func
spec = json.loads(sys.argv[1])
request = func.HttpRequest(method=spec["method"], url=spec["url"], headers=spec["headers"], params=spec["params"],
                           route_params={}, body=spec["body"].encode())
response = getattr(function_app, spec["function"])(request)
body = response.get_body()
answered = time.perf_counter()
print(json.dumps({"seconds": answered - started, "import": imported - started, "status": response.status_code,
                  "loaded": len(set(sys.modules) - before)}))
"""

FLOOR_PROBE = """
import json, os, sys, time
started = time.perf_counter()
import azure.functions as func
spec = json.loads(sys.argv[1])
if spec["function"] == "eventhandler":
    import hashlib, hmac
    hmac.new(spec["key"].encode(), spec["headers"]["ce-connectionid"].encode(), hashlib.sha256).hexdigest()
    json.loads(spec["body"])
    body = b'{"userId":"alice"}'
else:
    from azure.messaging.webpubsubservice import WebPubSubServiceClient
    if spec["mode"] == "entra":
        from azure.identity import DefaultAzureCredential
        client = WebPubSubServiceClient(endpoint=os.environ["WEBPUBSUB_ENDPOINT"], hub="chat",
                                        credential=DefaultAzureCredential())
    else:
        client = WebPubSubServiceClient.from_connection_string(os.environ["WEBPUBSUB_CONNECTION_STRING"], hub="chat")
    # enforce_https=False: the local service is plain http on loopback (the app passes the same).
    options = {"enforce_https": False} if spec["mode"] == "entra" else {}
    token = client.get_client_access_token(user_id="alice", minutes_to_expire=60, **options)
    body = json.dumps({"url": token["url"], "token": token["token"]}).encode()
response = func.HttpResponse(body, mimetype="application/json")
answered = time.perf_counter()
print(json.dumps({"seconds": answered - started, "status": response.status_code}))
"""


def _negotiate_spec(mode: str) -> dict[str, object]:
    return {
        "function": "negotiate",
        "mode": mode,
        "method": "GET",
        "url": "http://localhost:7071/api/negotiate?userId=alice",
        "headers": {"accept": "application/json"},
        "params": {"userId": "alice"},
        "body": "",
    }


def _event_spec() -> dict[str, object]:
    return {
        "function": "eventhandler",
        "mode": "connectionstring",
        "method": "POST",
        "url": "http://localhost:7071/api/eventhandler",
        "headers": _event_headers("azure.webpubsub.sys.connect", "application/json; charset=utf-8"),
        "params": {},
        "body": CONNECT_BODY.decode(),
        "key": ACCESS_KEY,
    }


def _sample(probe: str, spec: Mapping[str, object], settings: Mapping[str, str]) -> dict[str, float]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("WEBPUBSUB_", "NEGOTIATE_", "EVENTHANDLER_", "KEYVAULT_", "IDENTITY_", "AZURE_"))
    }
    environment.update(settings)
    environment["PYTHONPATH"] = str(ROOT)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    completed = subprocess.run(  # noqa: S603 - our own interpreter with our own code
        [sys.executable, "-c", probe, json.dumps(spec)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"a cold-start probe failed: {completed.stderr[-1500:]}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["status"] >= 300:
        raise RuntimeError(f"the first {spec['function']} answered {result['status']}")
    return result


@contextmanager
def _local_service() -> Iterator[dict[str, str]]:
    """The local Web PubSub service (REST API and managed-identity endpoint) for entra mode's settings."""
    from devstack.webpubsub import LocalWebPubSub, ServiceSettings

    running = LocalWebPubSub(ServiceSettings()).run_in_thread()
    try:
        yield {
            "WEBPUBSUB_CREDENTIAL": "entra",
            "WEBPUBSUB_ENDPOINT": running.endpoint,
            "NEGOTIATE_AUTH": "anonymous",
            "EVENTHANDLER_AUTH": "none",
            **running.identity_environment(),
        }
    finally:
        running.stop()


def coldstart_figure(*, rounds: int, warm_up: bool = True) -> Figure:
    ratios: dict[str, float] = {}
    details: list[str] = []
    with _local_service() as entra:
        cases = {
            "negotiate (connection string)": (_negotiate_spec("connectionstring"), SETTINGS),
            "negotiate (entra)": (_negotiate_spec("entra"), entra),
            "first signed event": (_event_spec(), SETTINGS),
        }
        for name, (spec, settings) in cases.items():
            if warm_up:  # bytecode caches
                _sample(APP_PROBE, spec, settings)
                _sample(FLOOR_PROBE, spec, settings)
            app: list[dict[str, float]] = []
            floor: list[float] = []
            per_round: list[float] = []
            for round_number in range(rounds):
                if round_number % 2:
                    floor_seconds = _sample(FLOOR_PROBE, spec, settings)["seconds"]
                    app_result = _sample(APP_PROBE, spec, settings)
                else:
                    app_result = _sample(APP_PROBE, spec, settings)
                    floor_seconds = _sample(FLOOR_PROBE, spec, settings)["seconds"]
                app.append(app_result)
                floor.append(floor_seconds)
                per_round.append(app_result["seconds"] / floor_seconds)
            ratios[name] = statistics.median(per_round)
            total = statistics.median(sample["seconds"] for sample in app)
            imported = statistics.median(sample["import"] for sample in app)
            loaded = statistics.median(sample["loaded"] for sample in app)
            details.append(
                f"{name}: {ratios[name]:.2f}x, app {milliseconds(total)} (import {milliseconds(imported)}, "
                f"first request {milliseconds(total - imported)}, loading {loaded:.0f} modules), "
                f"floor {milliseconds(statistics.median(floor))}"
            )
    details.append(
        f"medians of {rounds} fresh processes each, alternating with the floor (azure.functions and the SDK "
        "doing the same operation directly); Key Vault mode is not measured (its stand-in needs TLS)"
    )
    worst = max(ratios.values())
    return Figure(
        "coldstart",
        ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()),
        f"<= {TARGET}x",
        worst <= TARGET,
        tuple(details),
    )
