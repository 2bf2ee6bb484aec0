"""The demo chat page (`GET /api/client`) and its static files, served by the app itself.

Serving it from the function app keeps it same-origin with `/api/negotiate`, so it works the same
locally and when deployed, with no CORS and with App Service Authentication's session cookie.

Only the files named in `ASSETS` are ever served: the requested name is looked up in that table
and never joined to a filesystem path, so no request can reach any other file. Every answer
carries a Content-Security-Policy that allows scripts and styles from this origin only and
connections to this origin and to the Web PubSub endpoint's WebSocket origin.
"""

from __future__ import annotations

import functools
import hashlib
import html
import string
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from shared.config import Settings
from shared.errors import NotFound
from shared.web import Request, Response

ROUTE_SEGMENT = "client"  # the page is at <route prefix>/client, its files at <route prefix>/client/<name>
ONE_YEAR_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class StaticFile:
    name: str  # file name inside shared/client
    content_type: str


PAGE = StaticFile("index.html", "text/html; charset=utf-8")
ASSETS = {
    "app.js": StaticFile("app.js", "text/javascript; charset=utf-8"),
    "app.css": StaticFile("app.css", "text/css; charset=utf-8"),
}


@functools.cache
def read_file(name: str) -> bytes:
    """The file's bytes, read once per process (on first request, never at import)."""
    return (resources.files("shared") / "client" / name).read_bytes()


def version_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def websocket_origin(endpoint: str) -> str:
    """`https://host` -> `wss://host`, `http://host:port` -> `ws://host:port` (local service)."""
    scheme, _, rest = endpoint.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest


def security_headers(settings: Settings) -> dict[str, str]:
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"connect-src 'self' {websocket_origin(settings.service.endpoint)}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def requested_asset(url: str) -> tuple[str, bool] | None:
    """(name after `client/`, whether the URL ends with '/'), or None when the path has no `client`."""
    path = urlsplit(url).path
    segments = path.split("/")
    if ROUTE_SEGMENT not in segments:
        return None
    rest = segments[segments.index(ROUTE_SEGMENT) + 1 :]
    return "/".join(rest), path.endswith("/")


def render_page(settings: Settings) -> bytes:
    """index.html with its asset URLs (versioned by content) and the page's settings filled in."""
    values = {
        "app_js": f"{ROUTE_SEGMENT}/app.js?v={version_of(read_file('app.js'))}",
        "app_css": f"{ROUTE_SEGMENT}/app.css?v={version_of(read_file('app.css'))}",
        "negotiate_auth": settings.negotiate.auth.value,
        "default_group": next(iter(settings.group_policy.groups), ""),
    }
    template = string.Template(read_file(PAGE.name).decode("utf-8"))
    return template.substitute({key: html.escape(value) for key, value in values.items()}).encode("utf-8")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


def serve(request: Request, settings: Settings) -> Response:
    """Answer a GET for the page or one of its files; NotFound for anything else."""
    if not settings.client_page.enabled:
        raise NotFound("The client page is switched off (CLIENT_PAGE_ENABLED=false).")
    found = requested_asset(request.url)
    if found is None:
        raise NotFound("No such file.")
    name, trailing_slash = found
    if name == "" and trailing_slash:
        # The page's relative URLs (client/app.js, negotiate) need it at .../client, not .../client/.
        return Response(308, headers={"Location": f"../{ROUTE_SEGMENT}", "Cache-Control": "no-cache"})

    if name == "":
        body, content_type = render_page(settings), PAGE.content_type
        # Revalidated on every load, so a new deployment's page (and asset versions) shows at once.
        cache_control = "no-cache"
    elif name in ASSETS:
        body, content_type = read_file(ASSETS[name].name), ASSETS[name].content_type
        # The page links each file with ?v=<content hash>: that URL's content can never change.
        immutable = request.query_value("v") == version_of(body)
        cache_control = f"public, max-age={ONE_YEAR_SECONDS}, immutable" if immutable else "no-cache"
    else:
        raise NotFound("No such file.")

    headers = {**security_headers(settings), "Cache-Control": cache_control, "ETag": f'"{version_of(body)}"'}
    if etag_matches(request.header("if-none-match"), headers["ETag"]):
        return Response(304, headers=headers)
    return Response(200, body, headers, content_type)
