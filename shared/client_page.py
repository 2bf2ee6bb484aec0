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
import logging
import string
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from shared.config import Settings
from shared.errors import ConfigError, NotFound
from shared.web import Request, Response

logger = logging.getLogger(__name__)

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


# Served when a setting the page needs is invalid: a person opened it, so answer in words, not JSON.
# No script, no style, no value of a setting (the log quotes it); the setting's name and rule are
# what /api/health shows anyone too.
MISCONFIGURED_PAGE = string.Template("""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>The app is misconfigured</title></head>
<body>
<h1>The app is misconfigured</h1>
<p>The chat page cannot start until the app's settings are fixed: $detail.</p>
<p>Where to look:</p>
<ul>
<li><a href="health">/api/health</a> names every invalid setting and what else is unhealthy.</li>
<li>The app's log (the terminal running <code>make run</code>, or Application Insights in Azure) quotes the
rejected value.</li>
<li>In the app's console, <code>python -m doctor config</code> checks every setting and says how to fix it.</li>
</ul>
</body>
</html>
""")
MISCONFIGURED_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def misconfigured(error: ConfigError) -> Response:
    """The page a person sees instead of the chat when a setting it needs is invalid (status: the error's)."""
    logger.error("GET /api/client failed: the app is misconfigured: %s", error.log_message)
    body = MISCONFIGURED_PAGE.substitute(detail=html.escape(error.detail)).encode("utf-8")
    return Response(error.status, body, dict(MISCONFIGURED_HEADERS), PAGE.content_type)


def serve(request: Request, settings: Settings) -> Response:
    """Answer a GET for the page or one of its files; NotFound for anything else.

    The page itself answers a readable HTML page when a setting it needs is invalid; its files
    (requested by a script, not a person) get the usual JSON error.
    """
    found = requested_asset(request.url)
    try:
        return _serve(request, settings, found)
    except ConfigError as error:
        if found is None or found[0] != "":
            raise
        return misconfigured(error)


def _serve(request: Request, settings: Settings, found: tuple[str, bool] | None) -> Response:
    if not settings.client_page.enabled:
        raise NotFound("The client page is switched off (CLIENT_PAGE_ENABLED=false).")
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
