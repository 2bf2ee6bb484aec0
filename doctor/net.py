"""The doctor's HTTP: one request with a timeout, and a deadline for SDK calls that have none.

Failures are `shared.probes.ProbeFailed`, named as /api/health names them (dns, refused, timeout,
tls, network, ...); the doctor prints their `log_detail` (which names the host and port, never the
URL's query, which may hold a Functions key) and their fix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

import requests

from shared.probes import Failure, ProbeFailed, http_request

DEFAULT_TIMEOUT_SECONDS = 5.0

_T = TypeVar("_T")


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> requests.Response:
    """One request, never following redirects (the service does not either); raises ProbeFailed."""
    return http_request(method, url, timeout=timeout, headers=headers, body=body, session=session)


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
        raise ProbeFailed(Failure.TIMEOUT, f"no answer within {seconds:g} s")
    if failure:
        raise failure[0]
    return outcome[0]
