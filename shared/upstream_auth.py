"""Proof that an event really comes from our Web PubSub service, by EVENTHANDLER_AUTH.

Runs before any handler code. The route is anonymous at the Functions level, so this check is the
only thing between the internet and the handlers: every mode but `none` (local development only)
refuses an event it cannot authenticate with 401.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from shared.bearer import BearerValidator, bearer_token
from shared.config import EventAuth, EventHandlerSettings
from shared.errors import Unauthorized
from shared.identity import PRINCIPAL_ID_HEADER
from shared.protocol import ConnectionContext, is_signature_valid
from shared.tokens import TokenSource
from shared.web import Request

logger = logging.getLogger(__name__)


class UpstreamAuthenticator(Protocol):
    def authenticate(self, request: Request, context: ConnectionContext) -> None:
        """Return if the event is authentic; raise Unauthorized (or DependencyUnavailable) if not."""
        ...


def _refused(why: str) -> Unauthorized:
    return Unauthorized(f"The event is not authenticated: {why}.", code="unauthenticated_event")


class SignatureCheck:
    """`ce-signature`: HMAC of the connection id with the access keys (connectionstring, keyvault).

    On a mismatch the keys are re-read once (Key Vault rotation) before the event is refused.
    """

    def __init__(self, tokens: Callable[[], TokenSource]):
        self._tokens = tokens

    def authenticate(self, request: Request, context: ConnectionContext) -> None:
        if not context.signature:
            raise _refused("ce-signature is missing")
        tokens = self._tokens()
        if is_signature_valid(context.connection_id, context.signature, tokens.access_keys()):
            return
        if is_signature_valid(context.connection_id, context.signature, tokens.access_keys(refresh=True)):
            return
        raise _refused("ce-signature does not match the access key")


def _same_object_id(claimed: object, expected: str) -> bool:
    return isinstance(claimed, str) and claimed.strip().lower() == expected.lower()


class ServiceTokenCheck:
    """The service's managed-identity bearer token (entra mode; hub event handler auth = ManagedIdentity).

    Only the Web PubSub resource's own identity passes (`principal_id`, EVENTHANDLER_BEARER_PRINCIPAL_ID,
    compared with the token's `oid`), not every identity of the tenant that can get a token for the audience.
    """

    def __init__(self, validator: BearerValidator, principal_id: str):
        self._validator = validator
        self._principal_id = principal_id

    def authenticate(self, request: Request, context: ConnectionContext) -> None:
        claims = self._validator.validate(bearer_token(request.header("authorization")))
        if not _same_object_id(claims.get("oid"), self._principal_id):
            raise _refused("the bearer token belongs to another identity than the Web PubSub service's")


class AppServiceCheck:
    """App Service Authentication validated the caller's token, and the caller is the Web PubSub identity.

    With Microsoft Entra ID, the platform sets X-MS-CLIENT-PRINCIPAL-ID to the object id (`oid`) of the
    token's subject, and for a managed identity that is its principal id. Every user of the app signs in
    through the same App Service Authentication, so a principal being present proves nothing: only the
    one configured in EVENTHANDLER_APPSERVICE_PRINCIPAL_ID passes.
    """

    def __init__(self, principal_id: str):
        self._principal_id = principal_id

    def authenticate(self, request: Request, context: ConnectionContext) -> None:
        principal = request.header(PRINCIPAL_ID_HEADER)
        if not principal:
            raise _refused("App Service Authentication supplied no principal")
        if not _same_object_id(principal, self._principal_id):
            raise _refused("the caller is another principal than the Web PubSub service's identity")


class NoCheck:
    """EVENTHANDLER_AUTH=none: local development only; listed by /api/health as a warning."""

    def authenticate(self, request: Request, context: ConnectionContext) -> None:
        return None


def build_authenticator(settings: EventHandlerSettings, tokens: Callable[[], TokenSource]) -> UpstreamAuthenticator:
    """The check EVENTHANDLER_AUTH names; `tokens` gives the access keys (asked for on the first event)."""
    if settings.auth is EventAuth.SIGNATURE:
        return SignatureCheck(tokens)
    if settings.auth is EventAuth.BEARER:
        assert settings.bearer is not None  # guaranteed by load_settings
        assert settings.bearer.principal_id is not None
        return ServiceTokenCheck(BearerValidator(settings.bearer), settings.bearer.principal_id)
    if settings.auth is EventAuth.APP_SERVICE:
        assert settings.app_service_principal_id is not None  # guaranteed by load_settings
        return AppServiceCheck(settings.app_service_principal_id)
    return NoCheck()
