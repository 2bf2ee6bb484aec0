"""HTTP with a timeout on every request, and network failures named the way users can act on them.

"Network or firewall blocks" shows up as four different failures, each with its own fix: a name
that does not resolve (DNS), a port nobody listens on (refused), packets that are dropped
(timeout) and a TLS handshake that fails. `classify` finds which one it was by walking the chain
of exceptions that requests, urllib3 and azure-core wrap around the socket error. Descriptions
name the host and port only, never the URL's query, which may hold a Functions key.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NewConnectionError, TimeoutError as Urllib3Timeout

DEFAULT_TIMEOUT_SECONDS = 5.0

FailureKind = Literal["dns", "refused", "timeout", "tls", "network"]

NETWORK_FIXES: Mapping[FailureKind, str] = {
    "dns": (
        "Check the host name. Behind a private endpoint the name resolves only inside the virtual network "
        "(through its private DNS zone): run this from there."
    ),
    "refused": "Start the server, or correct the port (locally: Functions host 7071, local Web PubSub service 8080).",
    "timeout": (
        "A firewall, network security group or disabled public network access drops the traffic: allow outbound "
        "HTTPS (port 443) from here to the host, or go through the private endpoint."
    ),
    "tls": "Use https with a certificate this machine trusts (a TLS-intercepting proxy breaks it), or http locally.",
    "network": "Check the network path (proxy, firewall) between this machine and the host.",
}

_T = TypeVar("_T")


class Unreachable(Exception):
    """The other side could not be reached; `kind` says how, `detail` says where."""

    def __init__(self, kind: FailureKind, detail: str):
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.detail = detail

    @property
    def fix(self) -> str:
        return NETWORK_FIXES[self.kind]


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps: causes, contexts, urllib3 reasons, azure-core inner errors."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            getattr(current, "reason", None),
            getattr(current, "inner_exception", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _where(url: str) -> tuple[str, str]:
    """(host, host:port) of a URL, for messages."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in {"https", "wss"} else 80)
    except ValueError:
        return "the host", "the host"
    host = parts.hostname or "the host"
    return host, f"{host}:{port}"


def classify(error: BaseException, url: str, timeout: float) -> Unreachable:
    """Name a failure to reach `url`: dns, refused, timeout, tls, or plain network."""
    host, address = _where(url)
    chain = list(_chain(error))
    if any(isinstance(item, socket.gaierror) for item in chain):
        return Unreachable("dns", f"the host name {host} does not resolve (DNS)")
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return Unreachable("tls", f"the TLS certificate of {host} is not trusted ({item.verify_message})")
    for item in chain:
        if isinstance(item, ssl.SSLError):
            return Unreachable("tls", f"the TLS handshake with {host} failed ({item.reason or type(item).__name__})")
    if any(isinstance(item, requests.exceptions.SSLError) for item in chain):
        return Unreachable("tls", f"the TLS handshake with {host} failed")
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return Unreachable("refused", f"{address} refused the connection (nothing listens there)")
    # urllib3 derives NewConnectionError (any failed connect) from its timeout class: not a timeout.
    timeouts = (requests.Timeout, Urllib3Timeout, TimeoutError)
    if any(isinstance(item, timeouts) and not isinstance(item, NewConnectionError) for item in chain):
        return Unreachable("timeout", f"no answer from {address} within {timeout:g} s")
    if any(isinstance(item, ConnectionResetError) for item in chain):
        return Unreachable("network", f"{address} reset the connection")
    return Unreachable("network", f"the connection to {address} failed ({type(error).__name__})")


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> requests.Response:
    """One request, never following redirects (the service does not either); raises Unreachable."""
    try:
        return session.request(
            method, url, headers=dict(headers or {}), data=body, timeout=(timeout, timeout), allow_redirects=False
        )
    except requests.RequestException as error:
        raise classify(error, url, timeout) from None


def run_with_deadline(action: Callable[[], _T], seconds: float) -> _T:
    """Run `action` in a daemon thread and give up after `seconds` (SDK calls have no total deadline).

    A call that overruns keeps running in the background; the process ends without waiting for it.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def target() -> None:
        try:
            outcome.append(action())
        except BaseException as error:  # handed to the caller's thread below
            failure.append(error)
        finally:
            finished.set()

    threading.Thread(target=target, name="doctor-probe", daemon=True).start()
    if not finished.wait(seconds):
        raise Unreachable("timeout", f"no answer within {seconds:g} s")
    if failure:
        raise failure[0]
    return outcome[0]
