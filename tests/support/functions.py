"""func.HttpRequest as the Python worker builds it, and reading the app's JSON errors back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlencode

import azure.functions as func
import httpx


def http_request(
    method: str,
    route: str,
    *,
    query: list[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> func.HttpRequest:
    """A func.HttpRequest as the worker builds it: the URL keeps the query, params holds one value each."""
    query = query or []
    url = f"http://localhost:7071/api/{route}" + (f"?{urlencode(query)}" if query else "")
    return func.HttpRequest(
        method=method, url=url, headers=dict(headers or {}), params=dict(query), route_params={}, body=body
    )


def error_code(response: func.HttpResponse | httpx.Response) -> str:
    """The `error.code` of the app's JSON error body, in process or over HTTP."""
    body = response.content if isinstance(response, httpx.Response) else response.get_body()
    return str(json.loads(body)["error"]["code"])
