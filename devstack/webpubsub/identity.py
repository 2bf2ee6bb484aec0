"""A local managed-identity endpoint, so the app's ``entra`` mode runs without Azure.

It speaks the App Service managed identity protocol that azure-identity (through MSAL) uses
when ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set: ``GET <IDENTITY_ENDPOINT>
?api-version=2019-08-01&resource=<resource>`` with an ``X-IDENTITY-HEADER`` header, answered
with ``{"access_token", "expires_on", "resource", "token_type"}``. It only issues tokens for
the Web PubSub resource, signed so that only this local service accepts them, and only to callers
presenting this run's random ``X-IDENTITY-HEADER`` (the launcher hands it to the app as
``IDENTITY_HEADER``). A token names its identity in ``oid`` (the requested client or object id,
else the system-assigned identity); what it may do is decided by the REST API's role assignments.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse

from .settings import DEFAULT_APP_PRINCIPAL_ID, ServiceSettings
from .tokens import ENTRA_AUDIENCE, TokenKeys, issue_identity_token

__all__ = ["IDENTITY_PATH", "ManagedIdentityEndpoint"]

IDENTITY_PATH = "/_devstack/identity/token"
_TOKEN_LIFETIME_SECONDS = 3600


class ManagedIdentityEndpoint:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.key = TokenKeys.of(settings).identity

    async def handle(self, request: Request) -> JSONResponse:
        presented = request.headers.get("x-identity-header", "")
        if not hmac.compare_digest(presented.encode(), self.settings.identity_header.encode()):
            return _error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        resource = request.query_params.get("resource", "")
        if resource.rstrip("/") != ENTRA_AUDIENCE:
            return _error(400, f"The local identity endpoint only issues tokens for {ENTRA_AUDIENCE}.")
        query = request.query_params
        requested = query.get("client_id") or query.get("object_id") or query.get("mi_res_id")
        principal = requested or DEFAULT_APP_PRINCIPAL_ID
        token, expires_on = issue_identity_token(
            self.key, principal_id=principal, lifetime_seconds=_TOKEN_LIFETIME_SECONDS
        )
        return JSONResponse(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": principal,
            }
        )


def _error(status: int, message: str) -> JSONResponse:
    # The shape App Service uses; MSAL turns it into a readable credential error.
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)
