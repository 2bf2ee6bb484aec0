"""The local Functions host over real HTTP: routes from the function list, request and response
mapping as the real host and the Python worker do it, CORS and local.settings.json as Core Tools
reads them, and negotiate served end to end."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import httpx
import jwt
import pytest

import function_app
from devstack.host import (
    THREAD_COUNT_SETTING,
    WorkerPool,
    apply_values,
    build_host,
    http_functions,
    indexed_functions,
    read_local_settings,
    read_route_prefix,
    worker_thread_count,
)
from devstack.servers import ServerThread
from tests.support.fakes import EMULATOR_KEY
from tests.support.settings import LOCAL_ENVIRON
from tests.test_function_app import EXPECTED

# --- a fake app whose functions report what they received ---------------------------------------

fake = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
release = threading.Event()


def report(req: func.HttpRequest) -> func.HttpResponse:
    seen = {
        "method": req.method,
        "url": req.url,
        "headers": dict(req.headers),
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "body": base64.b64encode(req.get_body()).decode(),
    }
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")


@fake.route(route="items/{name}", methods=["GET"])  # declared first: matching order is by specificity
def named_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("named:" + req.route_params["name"])


@fake.route(route="items/{id:int}/{*rest}", methods=["GET", "PUT"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    return report(req)


@fake.route(route="echo", methods=["GET", "POST", "OPTIONS"], trigger_arg_name="request")
def echo(request: func.HttpRequest) -> func.HttpResponse:
    return report(request)


@fake.route(route="files/{name?}", methods=["GET"])
def files(req: func.HttpRequest) -> func.HttpResponse:
    return report(req)


@fake.route(route="versions/{version=1}")  # no methods: every method
def versions(req: func.HttpRequest) -> func.HttpResponse:
    return report(req)


@fake.route(route="items/latest", methods=["GET"])
def latest(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("latest")


@fake.route(route="styled", methods=["GET"])
def styled(req: func.HttpRequest) -> func.HttpResponse | str:
    kind = req.params["kind"]
    if kind == "text":
        return func.HttpResponse("héllo")
    if kind == "json":
        return func.HttpResponse(b'{"a":1}', status_code=201, mimetype="application/json")
    if kind == "html":
        return func.HttpResponse("<p>x</p>".encode("latin-1"), mimetype="text/html", charset="latin-1")
    if kind == "header":
        return func.HttpResponse(
            "{}",
            mimetype="application/json",
            headers={"Content-Type": "application/problem+json", "X-Custom": "yes", "Content-Length": "999"},
        )
    if kind == "cookies":
        response = func.HttpResponse("", status_code=204)
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        return response
    if kind == "string":
        return "plain"
    return None  # type: ignore[return-value]  # deliberately wrong


@fake.route(route="fail", methods=["GET"])
def fail(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function broke")


@fake.route(route="unavailable", methods=["GET"])
def unavailable(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse('{"error":"down"}', status_code=503, mimetype="application/json")


@fake.route(route="wait", methods=["GET"])
def wait(req: func.HttpRequest) -> func.HttpResponse:
    """Blocks until /release is served: only possible if sync functions run off the event loop."""
    return func.HttpResponse(json.dumps({"released": release.wait(10)}))


@fake.route(route="release", methods=["POST"])
def release_waiter(req: func.HttpRequest) -> func.HttpResponse:
    release.set()
    return func.HttpResponse(status_code=204)


@fake.route(route="coroutine", methods=["GET"])
async def coroutine(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("awaited")


@pytest.fixture(scope="module")
def host() -> Iterator[httpx.Client]:
    with (
        ServerThread(build_host(fake, max_body_bytes=1024), name="functions") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        yield client


def seen(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    document = response.json()
    assert isinstance(document, dict)
    return document


# --- routes and methods --------------------------------------------------------------------------


def test_every_http_function_is_served_at_its_route_with_its_methods() -> None:
    functions = {function.name: function for function in http_functions(fake)}
    assert functions["item"].route == "items/{id:int}/{*rest}"
    assert functions["item"].methods == frozenset({"GET", "PUT"})
    assert functions["echo"].binding_name == "request"
    assert functions["versions"].methods is None


def test_route_parameters_reach_the_function(host: httpx.Client) -> None:
    assert seen(host.get("/api/items/42/a/b"))["route_params"] == {"id": "42", "rest": "a/b"}
    assert seen(host.put("/api/items/7"))["route_params"] == {"id": "7"}


def test_constraints_decide_which_paths_match(host: httpx.Client) -> None:
    assert host.get("/api/items/x/y").status_code == 404
    assert host.get("/api/items/-3").status_code == 200  # ASP.NET's int accepts a sign


def test_literal_segments_win_over_constrained_over_plain_parameters(host: httpx.Client) -> None:
    assert host.get("/api/items/latest").text == "latest"
    assert seen(host.get("/api/items/5"))["route_params"] == {"id": "5"}
    assert host.get("/api/items/five").text == "named:five"


def test_optional_and_default_parameters(host: httpx.Client) -> None:
    assert seen(host.get("/api/files"))["route_params"] == {}
    assert seen(host.get("/api/files/report.txt"))["route_params"] == {"name": "report.txt"}
    assert seen(host.get("/api/versions"))["route_params"] == {"version": "1"}
    assert seen(host.delete("/api/versions/2"))["route_params"] == {"version": "2"}


def test_other_methods_get_405_listing_the_allowed_ones(host: httpx.Client) -> None:
    response = host.post("/api/items/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT"
    assert host.head("/api/files").status_code == 405  # GET does not imply HEAD on Functions


def test_unknown_paths_get_404(host: httpx.Client) -> None:
    assert host.get("/api/nothing").status_code == 404
    assert host.get("/echo").status_code == 404  # outside the route prefix


def test_routes_match_in_any_case_and_with_a_trailing_slash(host: httpx.Client) -> None:
    assert seen(host.get("/API/Echo/"))["method"] == "GET"


def test_the_route_prefix_comes_from_host_json(tmp_path: Path) -> None:
    assert read_route_prefix(tmp_path / "missing.json") == "api"
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "/v1/"}}}))
    assert read_route_prefix(host_json) == "v1"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}))
    assert read_route_prefix(host_json) == ""
    with ServerThread(build_host(fake, route_prefix="")) as server:
        assert httpx.get(server.base_url + "/echo").status_code == 200
        assert httpx.get(server.base_url + "/api/echo").status_code == 404


def test_the_project_host_json_has_the_default_prefix() -> None:
    assert read_route_prefix(Path("host.json")) == "api"


def test_two_functions_serving_the_same_route_and_method_are_refused() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="twice", methods=["GET", "POST"])
    def first(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    @app.route(route="Twice", methods=["POST"])
    def second(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    with pytest.raises(ValueError, match="'first' and 'second' both serve /api/Twice for POST"):
        build_host(app)


def test_a_function_whose_parameter_is_not_the_trigger_is_refused() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="misnamed", methods=["GET"])
    def misnamed(request: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    with pytest.raises(ValueError, match="function 'misnamed' must take exactly the trigger's parameter 'req'"):
        build_host(app)


def test_unsupported_route_constraints_are_refused_by_name() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="users/{id:regex(^\\d+$)}", methods=["GET"])
    def users(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    with pytest.raises(ValueError, match="constraint 'regex"):
        build_host(app)


def test_the_function_list_is_read_once_per_app() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="once", methods=["GET"])
    def once(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    first = indexed_functions(app)
    assert indexed_functions(app) is first
    build_host(app)  # reads the same cached list; get_functions() itself would now raise
    with pytest.raises(ValueError, match="unique"):
        app.get_functions()


# --- request mapping -----------------------------------------------------------------------------


def test_headers_reach_the_function_as_the_real_host_delivers_them(host: httpx.Client) -> None:
    headers = [("X-Multi", "a"), ("X-Multi", "b"), ("X-Single", "one"), ("Authorization", "Bearer t")]
    delivered = seen(host.get("/api/echo", headers=headers))["headers"]
    assert isinstance(delivered, dict)
    assert delivered["x-multi"] == "a,b"
    assert delivered["x-single"] == "one"
    assert delivered["authorization"] == "Bearer t"
    assert all(name == name.lower() for name in delivered)


def test_query_parameters_reach_the_function_as_the_real_host_delivers_them(host: httpx.Client) -> None:
    query = "tag=a&tag=b&TAG=c&empty=&name=two+words&pct=%C3%A9"
    report = seen(host.get(f"/api/echo?{query}"))
    # One value per key: repeated keys (compared case-insensitively) joined with ",", empty ones left out.
    assert report["params"] == {"tag": "a,b,c", "name": "two words", "pct": "é"}
    # The URL keeps the query exactly, so shared.adapter still sees every repeated value.
    assert report["url"] == f"{host.base_url}/api/echo?{query}"


def test_the_body_reaches_the_function_byte_for_byte(host: httpx.Client) -> None:
    body = bytes(range(256))
    report = seen(host.post("/api/echo", content=body, headers={"Content-Type": "application/octet-stream"}))
    assert base64.b64decode(str(report["body"])) == body
    assert report["method"] == "POST"
    assert base64.b64decode(str(seen(host.get("/api/echo"))["body"])) == b""


def test_a_body_over_the_limit_gets_413(host: httpx.Client) -> None:
    assert host.post("/api/echo", content=b"x" * 1025).status_code == 413


def test_options_without_a_cors_preflight_reaches_the_function(host: httpx.Client) -> None:
    """The Web PubSub abuse-protection handshake is an OPTIONS request the app must answer itself."""
    response = host.options("/api/echo", headers={"WebHook-Request-Origin": "example.webpubsub.azure.com"})
    assert seen(response)["method"] == "OPTIONS"


# --- response mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("text", 200, "text/plain; charset=utf-8", "héllo".encode()),
        ("json", 201, "application/json", b'{"a":1}'),
        ("html", 200, "text/html; charset=latin-1", b"<p>x</p>"),
        ("header", 200, "application/problem+json", b"{}"),
        ("string", 200, "text/plain; charset=utf-8", b"plain"),
    ],
)
def test_responses_keep_status_content_type_and_body(
    host: httpx.Client, kind: str, status: int, content_type: str, body: bytes
) -> None:
    response = host.get("/api/styled", params={"kind": kind})
    assert response.status_code == status
    assert response.headers["content-type"] == content_type
    assert response.content == body


def test_response_headers_pass_through_and_the_server_frames_the_body(host: httpx.Client) -> None:
    response = host.get("/api/styled", params={"kind": "header"})
    assert response.headers["x-custom"] == "yes"
    assert response.headers["content-length"] == "2"


def test_every_set_cookie_header_reaches_the_client(host: httpx.Client) -> None:
    response = host.get("/api/styled", params={"kind": "cookies"})
    assert response.status_code == 204
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_a_raising_function_gets_500_and_is_logged(host: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="devstack.host"):
        response = host.get("/api/fail")
    assert response.status_code == 500
    assert response.content == b""
    failures = [record for record in caplog.records if "'fail'" in record.getMessage()]
    assert failures
    assert failures[0].exc_info is not None
    assert "the function broke" in str(failures[0].exc_info[1])


def executed_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith(f"Executed '{name}'")]


def test_a_function_answering_a_server_error_is_logged_as_failed_not_succeeded(
    host: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="devstack.host"):
        assert host.get("/api/unavailable").status_code == 503
        assert host.get("/api/items/latest").status_code == 200
    [failed] = executed_lines(caplog, "unavailable")
    assert "Succeeded" not in failed.getMessage()
    assert "(Failed, answered 503)" in failed.getMessage()
    assert failed.levelno == logging.WARNING
    [succeeded] = executed_lines(caplog, "latest")
    assert "(Succeeded)" in succeeded.getMessage()
    assert succeeded.getMessage().endswith("-> 200")


def test_a_function_returning_something_else_gets_500(host: httpx.Client) -> None:
    assert host.get("/api/styled", params={"kind": "none"}).status_code == 500


def test_sync_functions_run_off_the_event_loop(host: httpx.Client) -> None:
    release.clear()
    outcome: dict[str, httpx.Response] = {}
    waiter = threading.Thread(target=lambda: outcome.update(waited=host.get("/api/wait")))
    waiter.start()
    try:
        # Served while /api/wait still blocks its worker thread: the loop is free.
        assert host.post("/api/release").status_code == 204
    finally:
        release.set()
        waiter.join(15)
    assert outcome["waited"].json() == {"released": True}


def test_async_functions_are_awaited(host: httpx.Client) -> None:
    assert host.get("/api/coroutine").text == "awaited"


@pytest.mark.parametrize(
    ("environ", "count"),
    [({}, None), ({THREAD_COUNT_SETTING: "1"}, 1), ({THREAD_COUNT_SETTING: " 16 "}, 16)]
    + [({THREAD_COUNT_SETTING: bad}, None) for bad in ("0", "-2", "many", "1.5")],
)
def test_the_thread_pool_size_is_read_as_the_python_worker_reads_it(environ: dict[str, str], count: int | None) -> None:
    assert worker_thread_count(environ) == count


def test_the_pool_defaults_to_thread_pool_executors_size() -> None:
    assert WorkerPool().size == min(32, (os.cpu_count() or 1) + 4)
    assert WorkerPool(3).size == 3


def test_the_pool_runs_calls_concurrently_on_at_most_its_size_of_threads() -> None:
    both_running = threading.Barrier(2, timeout=10)
    names: list[str] = []

    def call() -> str:
        names.append(threading.current_thread().name)
        both_running.wait()  # only passes if two calls run at the same time
        return "done"

    async def run_all(pool: WorkerPool) -> list[object]:
        return list(await asyncio.gather(*(pool.run(call) for _ in range(6))))

    pool = WorkerPool(2)
    try:
        assert asyncio.run(run_all(pool)) == ["done"] * 6
    finally:
        pool.shutdown()
    assert len(set(names)) == 2
    assert all(name.startswith("functions-worker-") for name in names)


def test_the_pool_hands_a_calls_exception_to_its_caller() -> None:
    def broken() -> None:
        raise LookupError("no such thing")

    pool = WorkerPool(1)
    try:
        with pytest.raises(LookupError, match="no such thing"):
            asyncio.run(pool.run(broken))
    finally:
        pool.shutdown()


# --- CORS from local.settings.json ---------------------------------------------------------------


def cors_host(settings_file: Path) -> ServerThread:
    return ServerThread(build_host(fake, cors=read_local_settings(settings_file).cors))


def write_settings(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_cors_origins_from_local_settings_are_allowed(tmp_path: Path) -> None:
    settings = write_settings(
        tmp_path / "local.settings.json", {"Host": {"CORS": "http://localhost:5173, https://app.example"}}
    )
    with cors_host(settings) as server:
        allowed = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        preflight = httpx.options(server.base_url + "/api/echo", headers=allowed)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in preflight.headers
        simple = httpx.get(server.base_url + "/api/echo", headers={"Origin": "http://localhost:5173"})
        assert simple.headers["access-control-allow-origin"] == "http://localhost:5173"
        refused = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        assert (
            "access-control-allow-origin" not in httpx.options(server.base_url + "/api/echo", headers=refused).headers
        )
        other = httpx.get(server.base_url + "/api/echo", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_cors_credentials_and_wildcard(tmp_path: Path) -> None:
    credentials = write_settings(
        tmp_path / "credentials.json", {"Host": {"CORS": "http://localhost:5173", "CORSCredentials": True}}
    )
    with cors_host(credentials) as server:
        response = httpx.get(server.base_url + "/api/echo", headers={"Origin": "http://localhost:5173"})
        assert response.headers["access-control-allow-credentials"] == "true"
    wildcard = write_settings(tmp_path / "wildcard.json", {"Host": {"CORS": "*"}})
    with cors_host(wildcard) as server:
        response = httpx.get(server.base_url + "/api/echo", headers={"Origin": "https://anywhere.example"})
        assert response.headers["access-control-allow-origin"] == "*"


def test_without_cors_settings_no_origin_is_allowed(tmp_path: Path) -> None:
    with cors_host(write_settings(tmp_path / "local.settings.json", {"Values": {}})) as server:
        response = httpx.get(server.base_url + "/api/echo", headers={"Origin": "http://localhost:5173"})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


# --- the real app through the host ---------------------------------------------------------------


def served_by_the_app(response: httpx.Response) -> bool:
    """Not the host's own routing answer (a plain-text 404 or a 405): the request reached a function."""
    routing_miss = response.status_code == 404 and response.headers["content-type"].startswith("text/plain")
    return not routing_miss and response.status_code != 405


def test_every_function_of_the_app_is_served_at_its_route_with_exactly_its_methods() -> None:
    """Checked against the indexing test's own list, not the host's reading of the app."""
    apply_values(LOCAL_ENVIRON, os.environ)
    all_methods = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    with ServerThread(build_host(function_app.app)) as server, httpx.Client(base_url=server.base_url) as client:
        for route, methods, _ in EXPECTED.values():
            path = "/api/" + route.split("/{*", 1)[0]  # a catch-all may be empty
            for method in sorted(methods):
                assert served_by_the_app(client.request(method, path)), (method, path)
            for method in sorted(all_methods - methods):
                refused = client.request(method, path)
                assert refused.status_code == 405, (method, path)
                assert set(refused.headers["allow"].split(", ")) == methods


def test_negotiate_is_served_end_to_end() -> None:
    apply_values(LOCAL_ENVIRON, os.environ)
    with ServerThread(build_host(function_app.app)) as server:
        response = httpx.get(server.base_url + "/api/negotiate", params={"userId": "x"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    claims = jwt.decode(
        document["token"], EMULATOR_KEY, algorithms=["HS256"], audience="http://localhost:8080/client/hubs/chat"
    )
    assert claims["sub"] == "x"
    assert document["url"].startswith("ws://localhost:8080/client/hubs/chat?access_token=")


def test_the_app_reports_bad_input_through_the_host_as_json() -> None:
    apply_values(LOCAL_ENVIRON, os.environ)
    with ServerThread(build_host(function_app.app)) as server:
        response = httpx.post(
            server.base_url + "/api/negotiate?userId=x", content=b"{", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
