"""Stand-ins for Azure: a requests-level fake server for the SDK transports, and a fake credential.

The Azure SDK clients under test are real; only the bytes on the wire are answered here, so the SDKs'
own request building, authentication policies, retries and error mapping all run.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from urllib3 import HTTPResponse

from shared.errors import DependencyUnavailable
from shared.protocol import ClientProtocol

if TYPE_CHECKING:
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    from shared.tokens import ClientAccess, KeyVaultStatus, TokenSource

EMULATOR_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
LOCAL_CONNECTION_STRING = f"Endpoint=http://localhost:8080;AccessKey={EMULATOR_KEY};Version=1.0;"


@dataclass
class Seen:
    """One request the fake server received."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)


Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[Seen], Reply]


class FakeAdapter(BaseAdapter):
    """A requests adapter that answers from a Python handler; raising ConnectionError means 'down'."""

    def __init__(self, handler: Handler):
        super().__init__()
        self.handler = handler
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raw = request.body or b""
        body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)  # type: ignore[arg-type]
        headers = {str(name): str(value) for name, value in request.headers.items()}
        seen = Seen(request.method or "GET", request.url or "", headers, body)
        with self._lock:
            self.seen.append(seen)
        status, headers, payload = self.handler(seen)
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = payload
        response.raw = HTTPResponse(body=io.BytesIO(payload), headers=headers, status=status, preload_content=False)
        response.url = seen.url
        response.request = request
        response.reason = "OK" if status < 400 else "Error"
        return response

    def close(self) -> None:
        pass


def transport_for(adapter: FakeAdapter) -> RequestsTransport:
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=False)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


def webpubsub_success(seen: Seen) -> Reply:
    """Web PubSub's REST success for each kind of call, as the SDK expects it: 200 for a PUT (add,
    grant) or HEAD (exists), 204 for a DELETE or a close, 202 for a send."""
    if seen.method in {"PUT", "HEAD"}:
        return 200, {}, b""
    if seen.method == "DELETE" or seen.path.endswith(":closeConnections"):
        return 204, {}, b""
    return 202, {}, b""


def down(_: Seen) -> Reply:
    raise requests.ConnectionError("connection refused")


@dataclass
class FakeKeyVault:
    """Answers Key Vault's challenge-then-GET secret protocol for one vault."""

    secrets: dict[str, str] = field(default_factory=dict)
    available: bool = True
    delay_seconds: float = 0.0
    status_override: int | None = None
    reads: int = 0

    def __call__(self, seen: Seen) -> Reply:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if not self.available:
            raise requests.ConnectionError("Key Vault unreachable")
        if "Authorization" not in seen.headers:
            challenge = (
                'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001", '
                'resource="https://vault.azure.net"'
            )
            return 401, {"WWW-Authenticate": challenge}, b""
        if self.status_override:
            return json_reply(self.status_override, {"error": {"code": "Forbidden", "message": "denied"}})
        name = seen.path.split("/")[2]
        self.reads += 1
        if name not in self.secrets:
            return json_reply(404, {"error": {"code": "SecretNotFound", "message": f"{name} not found"}})
        return json_reply(
            200,
            {
                "value": self.secrets[name],
                "id": f"https://test.vault.azure.net/secrets/{name}/0123456789abcdef",
                "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
            },
        )


class FakeCredential:
    """A TokenCredential that hands out opaque tokens, or fails like an unreachable identity endpoint."""

    def __init__(self, *, available: bool = True):
        self.available = available
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        if not self.available:
            raise ClientAuthenticationError("identity endpoint unreachable")
        return AccessToken("fake-entra-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token = self.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)


class UnavailableAtFirst:
    """A token source whose dependency (Key Vault, say) is down for its first `failures` token requests.

    Everything else is the `real` source's; `failures=math.inf` keeps it down for good.
    """

    def __init__(self, real: TokenSource, failures: float = math.inf):
        self.real = real
        self.failures = failures

    def client_access(
        self,
        *,
        hub: str,
        user_id: str,
        roles: Sequence[str],
        groups: Sequence[str],
        minutes: int,
        client_protocol: ClientProtocol = ClientProtocol.DEFAULT,
    ) -> ClientAccess:
        if self.failures > 0:
            self.failures -= 1
            raise DependencyUnavailable("Azure Key Vault", "down on purpose", retry_after_seconds=1)
        return self.real.client_access(
            hub=hub, user_id=user_id, roles=roles, groups=groups, minutes=minutes, client_protocol=client_protocol
        )

    def access_keys(self, *, refresh: bool = False) -> tuple[str, ...]:
        return self.real.access_keys(refresh=refresh)

    def service_client(self, hub: str) -> WebPubSubServiceClient:
        return self.real.service_client(hub)

    def check(self, timeout: float) -> str:
        return self.real.check(timeout)

    def cached_key(self) -> KeyVaultStatus | None:
        return self.real.cached_key()
