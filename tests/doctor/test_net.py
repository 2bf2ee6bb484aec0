"""Network failures named by kind (DNS, refused, timeout, TLS), through the doctor's `send`, from real sockets."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import requests
from azure.core.exceptions import ServiceRequestError
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from devstack.servers import ServerThread
from doctor.net import run_with_deadline, send
from shared.probes import FIXES, Failure, ProbeFailed, classify


@pytest.fixture(scope="module")
def plain_http() -> Iterator[str]:
    async def hello(_: object) -> Response:
        return Response("hello", headers={"X-Seen": "yes"})

    with ServerThread(Starlette(routes=[Route("/", hello, methods=["GET", "HEAD"])])) as server:
        yield server.base_url


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections (the kernel does) and never answers: what a dropping firewall looks like."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def failure(url: str, timeout: float = 2.0) -> ProbeFailed:
    with requests.Session() as session, pytest.raises(ProbeFailed) as caught:
        send(session, "GET", url, timeout=timeout)
    return caught.value


def test_send_returns_the_answer_without_following_redirects(plain_http: str) -> None:
    with requests.Session() as session:
        response = send(session, "GET", plain_http + "/", timeout=2)
    assert response.status_code == 200
    assert response.headers["X-Seen"] == "yes"


def test_a_name_that_does_not_resolve_is_dns() -> None:
    error = failure("http://doctor-test.invalid/api/eventhandler")
    assert error.failure == "dns"
    assert "doctor-test.invalid" in error.log_detail
    assert error.fix == FIXES[Failure.DNS]


def test_a_closed_port_is_refused(free_port: int) -> None:
    error = failure(f"http://127.0.0.1:{free_port}/")
    assert error.failure == "refused"
    assert f"127.0.0.1:{free_port}" in error.log_detail


def test_a_server_that_never_answers_is_a_timeout(silent_server: int) -> None:
    error = failure(f"http://127.0.0.1:{silent_server}/", timeout=0.3)
    assert error.failure == "timeout"
    assert "0.3 s" in error.log_detail


def test_https_to_a_plain_http_server_is_tls(plain_http: str) -> None:
    error = failure(plain_http.replace("http://", "https://") + "/")
    assert error.failure == "tls"


def test_an_untrusted_certificate_names_the_reason() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    error = classify(requests.exceptions.SSLError(cause), "https://contoso.example/api", 5)
    assert error.failure == "tls"
    assert "self-signed certificate" in error.log_detail


def test_azure_core_errors_are_classified_through_their_inner_exception(free_port: int) -> None:
    with requests.Session() as session:
        try:
            session.get(f"http://127.0.0.1:{free_port}/", timeout=2)
        except requests.ConnectionError as inner:
            wrapped = ServiceRequestError("request failed", error=inner)
    assert classify(wrapped, f"http://127.0.0.1:{free_port}", 5).failure == "refused"


def test_descriptions_never_repeat_the_query() -> None:
    error = failure("http://doctor-test.invalid/api/eventhandler?code=secret-function-key")
    assert "secret-function-key" not in error.log_detail
    assert "secret-function-key" not in str(error)


def test_an_unknown_failure_is_a_network_failure() -> None:
    assert classify(RuntimeError("odd"), "https://contoso.example", 5).failure == "network"


def test_run_with_deadline_returns_or_reraises() -> None:
    assert run_with_deadline(lambda: 42, 5) == 42
    with pytest.raises(ValueError, match="boom"):
        run_with_deadline(lambda: (_ for _ in ()).throw(ValueError("boom")), 5)


def test_run_with_deadline_gives_up_on_a_call_that_hangs() -> None:
    release = threading.Event()
    try:
        with pytest.raises(ProbeFailed) as caught:
            run_with_deadline(lambda: release.wait(30), 0.2)
        assert caught.value.failure == "timeout"
    finally:
        release.set()
