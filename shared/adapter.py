"""The edge between Azure Functions and the app: `func.HttpRequest` in, `func.HttpResponse` out.

Every route goes through `serve`, which is also the one place that turns errors into status codes:
an `AppError` becomes its own status with a JSON error body, anything else is logged with its stack
trace and answered with a generic 500, so no request ever ends in an unhandled exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from shared.errors import AppError
from shared.web import Request, Response, error_response, json_response

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Response]


def to_request(req: func.HttpRequest) -> Request:
    """Convert, keeping repeated query parameters (the URL keeps them; `params` joins them)."""
    url = req.url
    query_string = urlsplit(url).query if "?" in url else ""
    query = _query_pairs(query_string) if query_string else list(req.params.items())
    return Request(
        method=req.method.upper(),
        url=url,
        headers=_headers(req.headers),
        query=query,
        body=req.get_body(),
        route=dict(req.route_params or {}),
    )


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with lower-case names.

    azure.functions keeps a func.HttpRequest's headers in a plain dict with lower-case names; copying
    that dict skips the `Mapping` protocol's Python-level iteration and lookup per header (a tenth of
    the event handler's time). Any other mapping is copied name by name.
    """
    own = getattr(headers, "__http_headers__", None)
    if type(own) is dict:
        return own.copy()
    return {name.lower(): value for name, value in headers.items()}


def _query_pairs(query_string: str) -> list[tuple[str, str]]:
    """`parse_qsl(query_string, keep_blank_values=True)`, splitting directly when nothing needs unquoting."""
    if "%" in query_string or "+" in query_string:
        return parse_qsl(query_string, keep_blank_values=True)
    pairs: list[tuple[str, str]] = []
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def to_http_response(response: Response) -> func.HttpResponse:
    headers = dict(response.headers)
    mimetype = None
    charset = None
    if response.content_type:
        headers["Content-Type"] = response.content_type
        mimetype, _, parameters = response.content_type.partition(";")
        charset = parameters.partition("charset=")[2].strip() or None
    return func.HttpResponse(
        body=response.body,
        status_code=response.status,
        headers=headers,
        mimetype=mimetype.strip() if mimetype else None,
        charset=charset,
    )


def handle(request: Request, handler: Handler) -> Response:
    """Run a handler; every failure becomes a response, never an exception."""
    try:
        return handler(request)
    except AppError as error:
        if error.status >= 500:
            logger.error("%s %s failed: %s", request.method, urlsplit(request.url).path, error.log_message)
        else:
            logger.info("%s %s refused (%d %s)", request.method, urlsplit(request.url).path, error.status, error.code)
        return error_response(error)
    except Exception:
        logger.exception("%s %s failed unexpectedly", request.method, urlsplit(request.url).path)
        return json_response(500, {"error": {"code": "internal_error", "message": "An unexpected error occurred."}})


def serve(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    """What every function in function_app.py calls."""
    return to_http_response(handle(to_request(req), handler))
