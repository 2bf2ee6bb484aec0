"""The local Functions host's request body limit: ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``, as the real host reads it.

The Functions host caps every HTTP request body at this app setting (bytes; 104857600 when unset
or not a whole number) before any function runs. The local host applies the same setting, from
the environment that ``local.settings.json`` fills, with Starlette's ``RequestBodyLimitMiddleware``
in front of every route: a request whose ``Content-Length`` is over the limit gets 413 before a
byte of its body is read, and a body streamed without one is cut off with 413 as soon as it
passes the limit, so an oversized body is never buffered for a function.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

logger = logging.getLogger(__name__)

SETTING = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"
#: The real host's limit when the setting is absent or invalid.
HOST_DEFAULT_BYTES = 104_857_600


def request_body_limit(environ: Mapping[str, str]) -> int:
    """The limit the setting gives, else the host's default (an invalid value is logged and ignored, as there)."""
    raw = environ.get(SETTING, "").strip()
    if not raw:
        return HOST_DEFAULT_BYTES
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    logger.warning("%s must be a whole number of bytes, not %r; using %d", SETTING, raw[:40], HOST_DEFAULT_BYTES)
    return HOST_DEFAULT_BYTES


def body_limit(max_body_bytes: int) -> Middleware:
    """The middleware that refuses bodies over ``max_body_bytes`` with 413, before they are buffered."""
    return Middleware(RequestBodyLimitMiddleware, max_body_size=max_body_bytes)
