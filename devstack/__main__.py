"""``python -m devstack`` (``make run``): the whole product on one machine, in the foreground.

Starts the local Web PubSub service and the local Functions host (both under uvicorn, in
background threads of this process), prints their URLs and runs until Ctrl+C or SIGTERM, then
stops the service first (its ``disconnected`` events still reach the host) and the host last.

Settings come from ``local.settings.json`` exactly as Core Tools takes them (created from
``local.settings.json.example`` when missing), so ``func start`` with the official emulator uses
the same file. The service is wired from the app's own settings: it listens on the port of the
app's local endpoint and signs with the access key of its connection string, and sends events
to this host's ``/api/eventhandler``. In ``entra`` mode the app's managed identity gets its tokens
from the local service (``IDENTITY_ENDPOINT``), and ``EVENTHANDLER_AUTH=bearer`` without an issuer
makes the service call the event handler with its own identity's token (the ``EVENTHANDLER_BEARER_*``
settings are filled in from it). When the app points at a non-local service (Azure
Web PubSub), the local service is not started. Token values never reach the console: uvicorn's
logged URLs are redacted and the HTTP client libraries log at WARNING only.
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import azure.functions as func

from .host import (
    HttpFunction,
    apply_values,
    build_host,
    http_functions,
    read_local_settings,
    read_route_prefix,
    route_url,
)
from .servers import ServerThread
from .webpubsub import DEFAULT_ACCESS_KEY, EventHandlerSettings, LocalWebPubSub, RunningWebPubSub, ServiceSettings
from .webpubsub.settings import DEFAULT_PORT as DEFAULT_WEBPUBSUB_PORT

if TYPE_CHECKING:
    from shared.config import Settings

#: Loggers that write every request's URL at INFO or DEBUG: a URL may carry an access token.
QUIET_LOGGERS = ("httpx", "httpcore")
EXAMPLE_SETTINGS = Path("local.settings.json.example")
HOST_JSON = Path("host.json")
EVENT_HANDLER_ROUTE = "eventhandler"
_OPTIONAL_SEGMENT = re.compile(r"\{(\*[^{}]*|[^{}]*\?|[^{}]*=[^{}]*)\}")

Printer = Callable[[str], None]
_Server = TypeVar("_Server", ServerThread, RunningWebPubSub)


class StackError(RuntimeError):
    """The stack cannot start; the message says what to change."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Run the Functions app and a local Web PubSub service on this machine (development only).",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=Path("local.settings.json"),
        help="local settings file, created from local.settings.json.example if missing (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, help="Functions host port (default: Host.LocalHttpPort of the settings file, else 7071)"
    )
    parser.add_argument(
        "--webpubsub-port",
        type=int,
        help="local Web PubSub port (default: the port of the app's local endpoint, else 8080)",
    )
    parser.add_argument(
        "--no-webpubsub",
        action="store_true",
        help="do not start the local Web PubSub service (use the official emulator or Azure instead)",
    )
    parser.add_argument(
        "--bind", default="127.0.0.1", help="interface both servers listen on (default: %(default)s, this machine only)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


@dataclass
class RunningStack:
    """The started servers; ``stop()`` ends both."""

    host: ServerThread
    host_url: str
    route_prefix: str
    functions: tuple[HttpFunction, ...]
    service: RunningWebPubSub | None

    def url(self, route: str) -> str:
        return route_url(self.host_url, self.route_prefix, route)

    def stop(self) -> None:
        try:
            if self.service is not None:
                self.service.stop()
        finally:
            self.host.stop()


def ensure_local_settings(path: Path, example: Path, out: Printer) -> None:
    """Create local.settings.json from the example on first run, and say so."""
    if path.exists():
        return
    if not example.exists():
        out(f"{path} not found and no {example} to create it from; starting with the environment only.")
        return
    shutil.copyfile(example, path)
    out(f"Created {path} from {example} (local development settings; it is git-ignored, edit it freely).")


def start_stack(arguments: argparse.Namespace, *, out: Printer = print) -> RunningStack:
    """Load the settings, then start the service and the host; raise StackError when that is impossible."""
    ensure_local_settings(arguments.settings, EXAMPLE_SETTINGS, out)
    local = read_local_settings(arguments.settings)
    for name in apply_values(local.values, os.environ):
        out(f"Skipping '{name}' from {arguments.settings}: it is already set in the environment.")
    route_prefix = read_route_prefix(HOST_JSON)
    app = _function_app()  # importing reads no settings; the app reads them on its first request
    host_app = build_host(app, route_prefix=route_prefix, cors=local.cors)
    port = local.port if arguments.port is None else arguments.port
    host = _listen("Functions host", lambda: ServerThread(host_app, host=arguments.bind, port=port, name="functions"))
    host_url = f"http://{_public_host(arguments.bind)}:{host.port}"
    stack = RunningStack(host, host_url, route_prefix, http_functions(app), service=None)
    try:
        # Core Tools sets these two for the app as well, with the same precedence.
        host_values = {"WEBSITE_HOSTNAME": f"localhost:{host.port}", "AZURE_FUNCTIONS_ENVIRONMENT": "Development"}
        apply_values(host_values, os.environ)
        if not arguments.no_webpubsub:
            stack.service = _start_service(arguments, stack.url(EVENT_HANDLER_ROUTE), out)
        _reset_app_settings()
        host.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def freeze_startup_objects() -> None:
    """Keep what starting loaded (the app, both servers, their libraries) out of the collector's full passes.

    It lives as long as the process; a full pass over it paused every request of the stack for up to
    135 ms at 500 clients. For the processes that serve the stack (`make run`, the benchmark's), not
    for tests, which start many stacks in one process.
    """
    gc.freeze()


def _function_app() -> func.FunctionApp:
    app: func.FunctionApp = importlib.import_module("function_app").app
    return app


def _reset_app_settings() -> None:
    """The app's settings are cached on first read; make sure it reads the environment built here."""
    from shared.runtime import reset_runtime

    reset_runtime()


def _listen(what: str, create: Callable[[], _Server]) -> _Server:
    try:
        return create()
    except OSError as error:
        raise StackError(_listen_error(what, error)) from None


def _listen_error(what: str, error: OSError) -> str:
    flag = "--port" if what == "Functions host" else "--webpubsub-port"
    if error.errno == errno.EADDRINUSE:
        return f"{what}: the port is already in use (another local stack or emulator?); choose another with {flag}"
    return f"{what}: cannot listen: {error.strerror or error}; choose another port with {flag}"


def _public_host(bind: str) -> str:
    """The name URLs use: ``localhost`` for loopback and wildcard binds, as Core Tools prints."""
    return "localhost" if bind in {"127.0.0.1", "::1", "0.0.0.0", "::", "localhost"} else bind  # noqa: S104


@dataclass(frozen=True)
class _ServicePlan:
    port: int
    access_key: str
    public_host: str
    app_endpoint: str | None  # the endpoint of the app's connection string, if it has one
    entra_endpoint: str | None = None  # WEBPUBSUB_ENDPOINT in entra mode: the app's identity is served locally
    # EVENTHANDLER_AUTH=bearer with no issuer: the service calls with its own identity's token for this audience
    event_audience: str | None = None


#: What entra mode needs with the local service: no event auth, or bearer with the local service as issuer.
ENTRA_EVENT_AUTH_HINT = (
    "With WEBPUBSUB_CREDENTIAL=entra and the local Web PubSub service, set EVENTHANDLER_AUTH=none, or "
    "EVENTHANDLER_AUTH=bearer without EVENTHANDLER_BEARER_ISSUER: the local service then calls the event handler "
    "with its own managed identity's token and make run fills in the EVENTHANDLER_BEARER_* settings."
)
#: The audience of the local service's event handler tokens when EVENTHANDLER_BEARER_AUDIENCE is not set.
LOCAL_EVENT_AUDIENCE = "api://local-functions-app"


def _local_event_audience() -> str | None:
    """EVENTHANDLER_AUTH=bearer and no issuer: the local service is the issuer; the audience its tokens name."""
    if (os.environ.get("EVENTHANDLER_AUTH") or "").strip().lower() != "bearer":
        return None
    if os.environ.get("EVENTHANDLER_BEARER_ISSUER"):
        return None
    return os.environ.get("EVENTHANDLER_BEARER_AUDIENCE") or LOCAL_EVENT_AUDIENCE


def _plan_service(requested_port: int | None, out: Printer) -> _ServicePlan | None:
    """Where the local service must listen and which key it signs with, from the app's own settings."""
    from shared.config import Concern, CredentialMode, EventAuth, is_loopback_host, load_settings

    all_settings = load_settings(os.environ)
    problems = all_settings.problems
    event_problem = problems.get(Concern.EVENT_HANDLER)
    about_event_auth = event_problem is not None and event_problem.setting.startswith(
        ("EVENTHANDLER_AUTH", "EVENTHANDLER_BEARER")
    )
    entra = _configured_credential() == CredentialMode.ENTRA.value
    event_audience = _local_event_audience() if entra else None
    if about_event_auth and entra and event_audience is None:
        out(ENTRA_EVENT_AUTH_HINT)
    service_problem = problems.get(Concern.SERVICE)
    if service_problem is not None:
        return _ServicePlan(
            requested_port if requested_port is not None else DEFAULT_WEBPUBSUB_PORT,
            DEFAULT_ACCESS_KEY,
            "localhost",
            None,
        )
    settings = all_settings.service
    endpoint = urlsplit(settings.endpoint)
    hostname = endpoint.hostname or ""
    if not is_loopback_host(hostname):
        out(f"The app uses the Web PubSub service at {settings.endpoint}; the local service is not started.")
        return None
    port = requested_port if requested_port is not None else (endpoint.port or DEFAULT_WEBPUBSUB_PORT)
    if settings.credential is CredentialMode.ENTRA:
        event_auth = None if event_problem else all_settings.event_handler.auth
        if event_audience is None and event_auth is not None and event_auth is not EventAuth.NONE:
            out(f"Warning: events will be refused (EVENTHANDLER_AUTH={event_auth.value}). " + ENTRA_EVENT_AUTH_HINT)
        return _ServicePlan(
            port, DEFAULT_ACCESS_KEY, hostname, None, entra_endpoint=settings.endpoint, event_audience=event_audience
        )
    if settings.credential is not CredentialMode.CONNECTION_STRING or settings.access_key is None:
        out(
            f"Note: WEBPUBSUB_CREDENTIAL={settings.credential.value}; the local service signs with the emulator's "
            "public key. The local stack is set up for WEBPUBSUB_CREDENTIAL=connectionstring."
        )
        return _ServicePlan(port, DEFAULT_ACCESS_KEY, hostname, None)
    return _ServicePlan(port, settings.access_key, hostname, settings.endpoint)


def _start_service(arguments: argparse.Namespace, event_handler_url: str, out: Printer) -> RunningWebPubSub | None:
    plan = _plan_service(arguments.webpubsub_port, out)
    if plan is None:
        return None
    try:
        handler = EventHandlerSettings(url_template=event_handler_url, managed_identity_resource=plan.event_audience)
        # Entra mode mirrors the templates' disableLocalAuth: the REST API takes Entra callers only.
        settings = ServiceSettings(
            access_key=plan.access_key, event_handlers=(handler,), local_auth=plan.entra_endpoint is None
        )
    except ValueError as error:
        raise StackError(f"the local Web PubSub service cannot use the app's settings: {error}") from None
    service = LocalWebPubSub(settings)
    running = _listen(
        "Local Web PubSub service",
        lambda: service.run_in_thread(host=arguments.bind, port=plan.port, public_host=plan.public_host),
    )
    if plan.app_endpoint is not None and plan.app_endpoint != running.endpoint:
        # The developer chose another port: point the app at it for this run only.
        os.environ["WEBPUBSUB_CONNECTION_STRING"] = running.connection_string
        out(f"WEBPUBSUB_CONNECTION_STRING now points to {running.endpoint} for this run.")
    if plan.entra_endpoint is not None:
        _serve_identity_locally(running, plan.entra_endpoint, out)
    if plan.event_audience is not None:
        os.environ.update(running.event_handler_auth_settings(plan.event_audience))
        out(
            f"EVENTHANDLER_AUTH=bearer: the local service calls the event handler with its identity's token "
            f"(issuer {running.upstream_identity.issuer}, audience {plan.event_audience})."
        )
    return running


def _configured_credential() -> str:
    return (os.environ.get("WEBPUBSUB_CREDENTIAL") or "").strip().lower()


def _serve_identity_locally(running: RunningWebPubSub, app_endpoint: str, out: Printer) -> None:
    """Entra mode: the app's managed identity gets its tokens from the local service, which accepts them."""
    if app_endpoint != running.endpoint:
        os.environ["WEBPUBSUB_ENDPOINT"] = running.endpoint
        out(f"WEBPUBSUB_ENDPOINT now points to {running.endpoint} for this run.")
    identity = running.identity_environment()
    for name in apply_values(identity, os.environ):
        out(f"Note: {name} is already set in the environment; the app's identity may not use the local service.")
    out(f"WEBPUBSUB_CREDENTIAL=entra: the app's managed identity gets its tokens from {identity['IDENTITY_ENDPOINT']}.")


def describe(stack: RunningStack) -> str:
    """What ``make run`` prints: every function's URL, the ones to try first, and the service."""
    lines = ["", f"Functions host (local; production runs on Azure Functions): {stack.host_url}", "  Functions:"]
    for function in stack.functions:
        lines.append(f"    {function.name}: [{function.describe_methods()}] {stack.url(function.route)}")
    routes = {_entry_route(function.route) for function in stack.functions}
    named = [
        ("negotiate", "Negotiate:", "?userId=alice"),
        ("client", "Client page:", ""),
        ("health", "Health:", ""),
        (EVENT_HANDLER_ROUTE, "Event handler:", ""),
    ]
    for route, label, example in named:
        if route in routes:
            lines.append(f"  {label:<15}{stack.url(route)}{example}")
    if stack.service is None:
        lines.append("Local Web PubSub service: not started.")
    else:
        service_settings = stack.service.service.settings
        if not service_settings.local_auth:
            shown = "none (entra mode: access keys are disabled, as disableLocalAuth does in Azure)"
        elif service_settings.access_key == DEFAULT_ACCESS_KEY:
            shown = stack.service.connection_string
        else:
            shown = f"Endpoint={stack.service.endpoint};AccessKey=<the key from your settings>;Version=1.0;"
        lines += [
            "Local Web PubSub service (a development tool; production uses Azure Web PubSub): "
            + stack.service.endpoint,
            f"  Connection string: {shown}",
            f"  Events go to:      {stack.url(EVENT_HANDLER_ROUTE)}",
        ]
    lines.append("Press Ctrl+C to stop.")
    return "\n".join(lines)


def describe_settings(settings: Settings) -> str:
    """The app's mode, every development shortcut and every invalid setting, printed before the first request."""
    from shared.config import Concern

    problems = settings.problems
    modes = []
    if Concern.SERVICE not in problems:
        service = settings.service
        others = [hub for hub in service.hubs if hub != service.hub]
        hubs = f"hub {service.hub}" + (f" (default; also {', '.join(others)})" if others else "")
        modes.append(f"WEBPUBSUB_CREDENTIAL={service.credential.value}, {hubs}")
    if Concern.NEGOTIATE not in problems:
        modes.append(f"NEGOTIATE_AUTH={settings.negotiate.auth.value}")
    if Concern.EVENT_HANDLER not in problems:
        modes.append(f"EVENTHANDLER_AUTH={settings.event_handler.auth.value}")
    if Concern.PUBLISH not in problems:
        publish = settings.publish
        modes.append(
            f"PUBLISH_AUTH={publish.auth.value}" + ("" if publish.configured else " (publish API not configured)")
        )
    lines = ["App settings: " + (", ".join(modes) or "none valid")]
    shortcuts = settings.development_shortcuts
    if shortcuts:
        lines.append("  Development shortcuts in use (never in production; /api/health lists them too):")
        lines += [f"    - {shortcut}" for shortcut in shortcuts]
    if problems:
        lines.append("  Invalid settings (the routes that need them answer 500 until they are fixed):")
        lines += [f"    - {concern.value}: {error.log_message}" for concern, error in problems.items()]
    return "\n".join(lines)


def _entry_route(route: str) -> str:
    """The route without its trailing optional parameters: ``client/{*asset}`` is served at ``client``."""
    segments = route.lower().split("/")
    while segments and _OPTIONAL_SEGMENT.fullmatch(segments[-1]):
        segments.pop()
    return "/".join(segments)


def configure_logging(level: str) -> None:
    """Log to the console at ``level``, never printing a token that travels in a URL.

    The HTTP client libraries stay at WARNING; uvicorn's request lines have their token values
    blanked by the servers themselves (devstack.servers).
    """
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    configure_logging(arguments.log_level)
    try:
        stack = start_stack(arguments)
        freeze_startup_objects()
    except (StackError, ValueError) as error:  # LocalSettingsError, or a route the host cannot serve
        print(f"error: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # Both, explicitly: a process started with SIGINT ignored (`make test > log &` from a script)
    # inherits the ignore, and Python then installs no KeyboardInterrupt handler of its own.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    from shared.config import load_settings

    print(describe_settings(load_settings(os.environ)), flush=True)
    print(describe(stack), flush=True)
    try:
        while not stopping.wait(0.5):  # woken by the handler; the timeout keeps the main thread responsive
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping the local stack...", flush=True)
        stack.stop()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
