"""A local Functions host: serves a FunctionApp's HTTP triggers over real HTTP, where Core Tools would.

Core Tools cannot run on every machine (its installer downloads the host from a CDN), so the
local stack serves the app itself. Everything comes from the app's own function list, so no
route is declared twice: each HTTP trigger is served at ``/<routePrefix>/<route>`` for exactly
its methods, requests become ``func.HttpRequest`` and ``func.HttpResponse`` comes back the way
the real host and the Python worker convert them:

- header names lower-case, repeated header lines joined with ``,``;
- the URL keeps the query; ``params`` holds one value per key (repeated keys joined with ``,``,
  keys compared case-insensitively, empty values left out);
- ``route_params`` holds the route template's values, defaults included, absent ones left out;
- the response's Content-Type is its own header if set, else the mimetype (with
  ``; charset=...`` for ``text/*`` types), exactly as the worker renders it.

Route matching follows ASP.NET Core routing, which the real host uses: case-insensitive, an
optional trailing slash, literal segments before parameters before catch-alls. Authorization
levels are not enforced, as Core Tools does not enforce them locally. A function that raises
gets a 500 with an empty body, as from the real host, and its traceback goes to the log.

``local.settings.json`` is read as Core Tools reads it by ``shared.local_settings`` (the one
reader, shared with the diagnostics command, re-exported here); the launcher in
``devstack/__main__.py`` applies it before the app's settings are first read.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import queue
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.body_limit import body_limit, request_body_limit
from shared.local_settings import (
    DEFAULT_PORT,
    CorsSettings,
    LocalSettings,
    LocalSettingsError,
    apply_values,
    read_local_settings,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_ROUTE_PREFIX",
    "MAX_REQUEST_BODY_BYTES",
    "THREAD_COUNT_SETTING",
    "CorsSettings",
    "FunctionsHost",
    "HttpFunction",
    "LocalSettings",
    "LocalSettingsError",
    "WorkerPool",
    "apply_values",
    "build_host",
    "http_functions",
    "indexed_functions",
    "read_local_settings",
    "read_route_prefix",
    "route_url",
    "worker_thread_count",
]

logger = logging.getLogger(__name__)

DEFAULT_ROUTE_PREFIX = "api"
#: The request body limit Core Tools gives its web server (the real host's default).
MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


# --- host.json ------------------------------------------------------------------------------------


def read_route_prefix(host_json: Path) -> str:
    """``extensions.http.routePrefix`` from host.json (``api`` when absent; ``""`` serves at the root)."""
    if not host_json.exists():
        return DEFAULT_ROUTE_PREFIX
    try:
        document = json.loads(host_json.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise LocalSettingsError(f"{host_json} is not valid JSON (line {error.lineno}, column {error.colno})") from None
    http = _case_insensitive(_case_insensitive(document).get("extensions") or {}).get("http") or {}
    prefix = _case_insensitive(http).get("routeprefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise LocalSettingsError(f"{host_json}: extensions.http.routePrefix must be a string")
    return prefix.strip("/")


def _case_insensitive(section: Any) -> dict[str, Any]:
    return {str(key).lower(): value for key, value in section.items()} if isinstance(section, dict) else {}


# --- the app's function list --------------------------------------------------------------------

_INDEX: weakref.WeakKeyDictionary[func.FunctionApp, tuple[func.Function, ...]] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def indexed_functions(app: func.FunctionApp) -> tuple[func.Function, ...]:
    """``app.get_functions()``, once per app: a second call raises ValueError about unique names."""
    with _INDEX_LOCK:
        functions = _INDEX.get(app)
        if functions is None:
            functions = tuple(app.get_functions())
            _INDEX[app] = functions
        return functions


@dataclass(frozen=True)
class HttpFunction:
    """One HTTP-triggered function as the host sees it."""

    name: str
    route: str  # the route template, without the prefix
    methods: frozenset[str] | None  # None: every method
    binding_name: str  # the parameter the request is passed as
    user_function: Callable[..., Any]

    def describe_methods(self) -> str:
        return ",".join(sorted(self.methods)) if self.methods is not None else "all methods"


def http_functions(app: func.FunctionApp) -> tuple[HttpFunction, ...]:
    """The app's HTTP triggers; other triggers are skipped with a warning (they need their services)."""
    found = []
    for function in indexed_functions(app):
        name = function.get_function_name() or function.get_user_function().__name__
        trigger = function.get_trigger()
        if not isinstance(trigger, HttpTrigger):
            logger.warning("Function '%s' is not HTTP-triggered; the local host does not run it", name)
            continue
        user_function = function.get_user_function()
        _check_parameters(name, user_function, trigger.name)
        methods = frozenset(str(method).upper() for method in trigger.methods) if trigger.methods else None
        route = trigger.route if trigger.route is not None else name
        found.append(HttpFunction(name, route.strip("/"), methods, trigger.name, user_function))
    return tuple(found)


def _check_parameters(name: str, user_function: Callable[..., Any], binding_name: str) -> None:
    """Refuse what the Python worker refuses: the trigger's name must be the one parameter it fills."""
    parameters = inspect.signature(user_function).parameters
    unfilled = [
        parameter
        for parameter in parameters.values()
        if parameter.name != binding_name and parameter.default is inspect.Parameter.empty
    ]
    if binding_name not in parameters or unfilled:
        raise ValueError(
            f"function '{name}' must take exactly the trigger's parameter '{binding_name}' "
            "(set trigger_arg_name in app.route to use another name); the Python worker would refuse it"
        )


def route_url(base_url: str, route_prefix: str, route: str) -> str:
    """``http://host:port/<prefix>/<route>``, leaving out empty parts."""
    path = "/".join(part for part in (route_prefix, route) if part)
    return f"{base_url.rstrip('/')}/{path}"


# --- route templates ----------------------------------------------------------------------------

_TOKEN = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _PatternConvertor(Convertor[str]):
    """A route constraint as a regular expression; values stay strings, as the worker passes them."""

    regex: ClassVar[str] = ""

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# ASP.NET Core's inline constraints that take no argument, as starlette convertors.
_CONSTRAINTS = {
    "int": r"-?[0-9]+",
    "long": r"-?[0-9]+",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "alpha": r"[A-Za-z]+",
    "guid": r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?",
    "decimal": r"-?[0-9]+(?:\.[0-9]+)?",
    "double": r"-?[0-9]+(?:\.[0-9]+)?",
    "float": r"-?[0-9]+(?:\.[0-9]+)?",
}


@functools.cache
def _convertor_name(constraint: str) -> str:
    """Register (once) and name the starlette convertor for a route constraint."""
    convertor = type(f"_{constraint.title()}Convertor", (_PatternConvertor,), {"regex": _CONSTRAINTS[constraint]})
    name = f"functions_{constraint}"
    register_url_convertor(name, convertor())
    return name


@dataclass(frozen=True)
class _Parameter:
    name: str
    constraint: str | None
    optional: bool
    catch_all: bool
    default: str | None

    @classmethod
    def parse(cls, token: str, template: str) -> _Parameter:
        spec = token.strip()
        catch_all = spec.startswith("*")
        spec = spec.lstrip("*")
        default = None
        if "=" in spec:
            spec, default = spec.split("=", 1)
        optional = spec.endswith("?") or default is not None or catch_all
        spec = spec.removesuffix("?")
        name, _, constraint_text = spec.partition(":")
        constraints = [part for part in constraint_text.split(":") if part]
        if not _NAME.fullmatch(name):
            raise ValueError(f"route '{template}': parameter name '{name}' is not supported by the local host")
        unknown = [part for part in constraints if part not in _CONSTRAINTS]
        if unknown or len(constraints) > 1:
            raise ValueError(
                f"route '{template}': constraint '{':'.join(constraints)}' is not supported by the local host "
                f"(supported: {', '.join(sorted(_CONSTRAINTS))})"
            )
        return cls(name, constraints[0] if constraints else None, optional, catch_all, default)

    def starlette_token(self) -> str:
        if self.catch_all:
            return f"{{{self.name}:path}}"
        if self.constraint:
            return f"{{{self.name}:{_convertor_name(self.constraint)}}}"
        return f"{{{self.name}}}"


@dataclass(frozen=True)
class _PathVariant:
    """One starlette path a route template matches, and the defaults of the parameters it leaves out."""

    path: str
    defaults: Mapping[str, str]
    precedence: tuple[int, ...]


def _translate(route_prefix: str, template: str) -> list[_PathVariant]:
    """Starlette paths for an ASP.NET Core route template (``{id}``, ``{id:int}``, ``{id?}``,
    ``{id=7}``, ``{*rest}``): trailing optional segments become one path each, with and without."""
    prefix_segments = [segment for segment in route_prefix.split("/") if segment]
    segments = [segment for segment in template.split("/") if segment] if template else []
    rendered: list[str] = []
    precedence: list[int] = [1] * len(prefix_segments)
    optional: list[_Parameter] = []
    for index, segment in enumerate(segments):
        tokens = list(_TOKEN.finditer(segment))
        parameters = [_Parameter.parse(token.group(1), template) for token in tokens]
        whole = len(tokens) == 1 and tokens[0].group(0) == segment
        if any(parameter.optional for parameter in parameters) and not whole:
            raise ValueError(f"route '{template}': optional parameters inside a segment are not supported")
        if any(parameter.catch_all for parameter in parameters) and index != len(segments) - 1:
            raise ValueError(f"route '{template}': a catch-all parameter must be the last segment")
        if optional and not (whole and parameters[0].optional):
            raise ValueError(f"route '{template}': only the last segments may be optional")
        if whole and parameters[0].optional:
            optional.append(parameters[0])
        rendered.append(_render(segment, parameters))
        precedence.append(_segment_precedence(parameters, whole))
    required = len(segments) - len(optional)
    variants = []
    for kept in range(required, len(segments) + 1):
        path = "/" + "/".join(prefix_segments + rendered[:kept])
        defaults = {p.name: p.default for p in optional[kept - required :] if p.default is not None}
        variants.append(_PathVariant(path, defaults, tuple(precedence[: len(prefix_segments) + kept])))
    return variants


def _render(segment: str, parameters: Sequence[_Parameter]) -> str:
    """The segment with each of its parameters as a starlette path parameter."""
    literals = _TOKEN.split(segment)[::2]  # split() also returns each token's inner text
    rendered = [literals[0]]
    for parameter, literal in zip(parameters, literals[1:], strict=True):
        rendered += [parameter.starlette_token(), literal]
    return "".join(rendered)


def _segment_precedence(parameters: Sequence[_Parameter], whole: bool) -> int:
    """ASP.NET Core's order: literal, mixed, constrained parameter, parameter, catch-all."""
    if not parameters:
        return 1
    if not whole:
        return 2
    if parameters[0].catch_all:
        return 5
    return 3 if parameters[0].constraint else 4


# --- requests and responses ---------------------------------------------------------------------


def to_function_request(scope: Scope, body: bytes, route_params: Mapping[str, str]) -> func.HttpRequest:
    """A func.HttpRequest exactly as the real host and the Python worker would build it, from the ASGI scope."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous},{value}"
    query_string = scope.get("query_string", b"").decode("latin-1")
    params: dict[str, str] = {}
    if query_string:
        grouped: dict[str, tuple[str, list[str]]] = {}
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            grouped.setdefault(key.lower(), (key, []))[1].append(value)
        params = {key: ",".join(values) for key, values in grouped.values() if ",".join(values)}
    return func.HttpRequest(
        method=scope["method"],
        url=_request_url(scope, headers.get("host"), query_string),
        headers=headers,
        params=params,
        route_params=route_params,
        body=body,
    )


def _request_url(scope: Scope, host: str | None, query_string: str) -> str:
    """The URL the client asked for: its Host header (else the server's address), the raw path, the query."""
    scheme = scope.get("scheme", "http")
    if host is None:
        server_host, server_port = scope.get("server") or ("localhost", None)
        default_port = {"http": 80, "https": 443}.get(scheme)
        host = server_host if server_port in (None, default_port) else f"{server_host}:{server_port}"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path is not None else scope.get("root_path", "") + scope["path"]
    return f"{scheme}://{host}{path}" + (f"?{query_string}" if query_string else "")


#: Response headers the server sets itself from the body it sends.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


@dataclass(frozen=True)
class AsgiResponse:
    """A status, raw headers and a body, ready for ``http.response.start`` and ``http.response.body``."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    async def __call__(self, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode("latin-1"))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _plain_text(status: int, text: str, **headers: str) -> AsgiResponse:
    raw = [(b"content-type", b"text/plain; charset=utf-8")]
    raw += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return AsgiResponse(status, raw, text.encode("utf-8"))


def to_asgi_response(result: object) -> AsgiResponse:
    """What the worker and the host make of a function's return value."""
    if isinstance(result, str):
        return AsgiResponse(200, [(b"content-type", b"text/plain; charset=utf-8")], result.encode("utf-8"))
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(result).__name__}")
    headers: list[tuple[bytes, bytes]] = []
    has_content_type = False
    for name, value in result.headers.items():
        lowered = name.lower()
        if lowered in _FRAMING_HEADERS:  # the server frames the body itself
            continue
        has_content_type = has_content_type or lowered == "content-type"
        headers.append((lowered.encode("latin-1"), value.encode("latin-1")))
    if not has_content_type:
        mimetype = result.mimetype
        content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        headers.append((b"content-type", content_type.encode("latin-1")))
    status = result.status_code
    body = b"" if status in {204, 304} else result.get_body()
    return AsgiResponse(status, headers, body)


# --- the ASGI application -----------------------------------------------------------------------

#: The Python worker's app setting for the size of the thread pool that runs sync functions.
THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def worker_thread_count(environ: Mapping[str, str]) -> int | None:
    """The sync functions' thread pool size as the Python worker reads it: a positive whole number, else None.

    None is ThreadPoolExecutor's own default (``min(32, cpu_count + 4)``), which the worker uses
    when the setting is absent or invalid (an invalid value is logged and ignored, as there).
    """
    raw = environ.get(THREAD_COUNT_SETTING, "").strip()
    if not raw:
        return None
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    logger.warning(
        "%s must be a whole number of threads of at least 1, not %r; using the default", THREAD_COUNT_SETTING, raw[:40]
    )
    return None


@dataclass(frozen=True)
class _Target:
    function: HttpFunction
    defaults: Mapping[str, str]
    is_async: bool


class _Dispatcher:
    """The functions of one path, by method."""

    def __init__(self) -> None:
        self.by_method: dict[str, _Target] = {}
        self.any_method: _Target | None = None

    def add(self, target: _Target, path: str) -> None:
        methods = target.function.methods
        clashes = set(self.by_method) & set(methods or ALL_METHODS)
        if self.any_method is not None or (methods is None and self.by_method) or clashes:
            other = self.any_method or self.by_method[min(clashes or self.by_method)]
            raise ValueError(
                f"functions '{other.function.name}' and '{target.function.name}' both serve {path} "
                f"for {', '.join(sorted(clashes)) or 'every method'}"
            )
        if methods is None:
            self.any_method = target
        else:
            self.by_method.update(dict.fromkeys(methods, target))

    def target_for(self, method: str) -> _Target | None:
        return self.by_method.get(method) or self.any_method

    def allowed(self) -> str:
        return ", ".join(sorted(self.by_method))


class _FunctionRoute:
    """A route template compiled to match as ASP.NET Core routing does: any case, optional trailing slash."""

    def __init__(self, path: str, dispatcher: _Dispatcher) -> None:
        self.path = path
        self.dispatcher = dispatcher
        path_regex, _, self.param_convertors = compile_path(path)
        pattern = path_regex.pattern.removesuffix("$")
        self.path_regex = re.compile(pattern + ("" if pattern.endswith("/") else "/?") + "$", re.IGNORECASE)

    def match_path(self, path: str) -> dict[str, str] | None:
        """The path parameters (as strings, empty ones left out) if ``path`` is this route's, else None."""
        match = self.path_regex.match(path)
        if match is None:
            return None
        convertors = self.param_convertors
        values = (str(convertors[key].convert(value)) for key, value in match.groupdict().items())
        return {key: value for key, value in zip(match.groupdict(), values, strict=True) if value != ""}


def build_routes(functions: Iterable[HttpFunction], route_prefix: str) -> list[_FunctionRoute]:
    """One route per distinct path, most specific first, each dispatching by method."""
    dispatchers: dict[str, tuple[str, _Dispatcher, tuple[int, ...]]] = {}
    for function in functions:
        is_async = inspect.iscoroutinefunction(function.user_function)
        for variant in _translate(route_prefix, function.route):
            key = variant.path.lower()
            if key not in dispatchers:
                dispatchers[key] = (variant.path, _Dispatcher(), variant.precedence)
            dispatchers[key][1].add(_Target(function, variant.defaults, is_async), variant.path)
    ordered = sorted(dispatchers.values(), key=lambda entry: entry[2])
    return [_FunctionRoute(path, dispatcher) for path, dispatcher, _ in ordered]


class _ClientDisconnected(Exception):
    """The client went away before its request body was complete: nothing to answer."""


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (the body limit in front of the host refuses one that grows too large)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientDisconnected
        chunk = message.get("body", b"")
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


class WorkerPool:
    """The threads sync functions run on: as many as the Python worker's pool has, started as work arrives.

    The size is the worker's: ``PYTHON_THREADPOOL_THREAD_COUNT``, else ThreadPoolExecutor's default
    (``min(32, cpu_count + 4)``). It is not a ThreadPoolExecutor because every call through one
    builds a concurrent Future (with its own lock and condition) and chains an asyncio Future to
    it, which profiles showed as a sixth of the host's cost per request; here a call is one queue
    put, and its result comes back with one ``call_soon_threadsafe``. Only the event loop's thread
    calls ``run``.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size if size is not None else min(32, (os.cpu_count() or 1) + 4)
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._outstanding = 0  # calls submitted and not yet answered; read and written on the loop's thread only

    async def run(self, call: Callable[[], object]) -> object:
        """``call()`` on one of the pool's threads; its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._outstanding += 1
        try:
            if self._outstanding > len(self._threads) and len(self._threads) < self.size:
                self._start_thread()
            self._queue.put((loop, future, call))
            return await future
        finally:
            self._outstanding -= 1

    def shutdown(self) -> None:
        """Let every thread end once it is idle (a running call finishes first); later calls start new ones."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"functions-worker-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            loop, future, call = work
            try:
                result = call()
            except BaseException as error:  # handed to the awaiting request, which logs it
                loop.call_soon_threadsafe(_settle, future, None, error)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)
            del work, future, call


_Work = tuple[asyncio.AbstractEventLoop, "asyncio.Future[object]", Callable[[], object]]


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FunctionsHost:
    """The ASGI application of the local host: each request to the function its route and method name.

    The path a real request takes is kept short, as the host's own cost is what a developer waits
    for on every local call: routes are matched with their compiled expressions directly, the
    func.HttpRequest is built from the ASGI scope, and the func.HttpResponse becomes raw ASGI
    messages. Sync functions run on a thread pool of the size the Python worker gives its own
    (``PYTHON_THREADPOOL_THREAD_COUNT``, else ThreadPoolExecutor's default), async ones on the loop.
    """

    def __init__(self, routes: Sequence[_FunctionRoute], thread_count: int | None) -> None:
        self.routes = tuple(routes)
        self._pool = WorkerPool(thread_count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":  # the Functions host serves no WebSocket
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        for route in self.routes:
            path_params = route.match_path(path)
            if path_params is not None:
                break
        else:
            await _plain_text(404, "Not Found")(send)
            return
        target = route.dispatcher.target_for(scope["method"])
        if target is None:
            await _plain_text(405, "Method Not Allowed", Allow=route.dispatcher.allowed())(send)
            return
        try:
            body = await _read_body(receive)  # beyond the body limit this raises and the limit answers 413
        except _ClientDisconnected:
            return
        response = await self._invoke(target, scope, body, {**target.defaults, **path_params})
        await response(send)

    async def _invoke(self, target: _Target, scope: Scope, body: bytes, route_params: dict[str, str]) -> AsgiResponse:
        function = target.function
        try:
            arguments = {function.binding_name: to_function_request(scope, body, route_params)}
            if target.is_async:
                result = await function.user_function(**arguments)
            else:
                result = await self._pool.run(functools.partial(function.user_function, **arguments))
            response = to_asgi_response(result)
        except Exception:
            logger.exception("Executed '%s' (Failed) %s %s", function.name, scope["method"], scope["path"])
            return AsgiResponse(500, [], b"")
        if response.status >= 500:
            # The function answered, but with a server error: that is not a success to whoever reads the log.
            logger.warning(
                "Executed '%s' (Failed, answered %d) %s %s",
                function.name,
                response.status,
                scope["method"],
                scope["path"],
            )
        elif logger.isEnabledFor(logging.INFO):
            logger.info(
                "Executed '%s' (Succeeded) %s %s -> %d", function.name, scope["method"], scope["path"], response.status
            )
        return response

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_host(
    app: func.FunctionApp,
    *,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    cors: CorsSettings | None = None,
    max_body_bytes: int | None = None,
) -> ASGIApp:
    """The ASGI application serving ``app``'s HTTP triggers; run it with devstack.servers.ServerThread.

    ``max_body_bytes`` defaults to FUNCTIONS_REQUEST_BODY_SIZE_LIMIT from the environment (devstack.body_limit),
    the thread pool's size to PYTHON_THREADPOOL_THREAD_COUNT from it.
    """
    if max_body_bytes is None:
        max_body_bytes = request_body_limit(os.environ)
    middleware = []
    if cors is not None:
        # As Core Tools configures ASP.NET Core: the listed origins, any header, any method.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors.origins,
                allow_methods=["*"],
                allow_headers=["*"],
                allow_credentials=cors.credentials,
            )
        )
    middleware.append(body_limit(max_body_bytes))  # inside CORS, so a refusal carries its headers too
    host: ASGIApp = FunctionsHost(build_routes(http_functions(app), route_prefix), worker_thread_count(os.environ))
    for factory, args, options in reversed(middleware):
        host = factory(host, *args, **options)
    return host
