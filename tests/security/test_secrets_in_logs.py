"""No access key, token, signature or connection string is ever written to the log.

Every logger of the process is captured at DEBUG (the app's, the Azure SDKs', MSAL's, urllib3's,
the local host's) while the app works through a broad scenario over real HTTP: negotiate in
every credential and caller mode, events signed and forged, Key Vault failures and configuration
errors. Each secret that crossed the app is collected and looked for in every captured line,
tracebacks included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from azure.keyvault.secrets import SecretClient

from devstack.webpubsub import RunningWebPubSub
from shared.config import load_settings
from shared.runtime import Runtime, get_runtime, use_runtime
from shared.tokens import KeyVaultTokenSource
from tests.support.apphost import ServedApp
from tests.support.events import sign
from tests.support.fakes import FakeAdapter, FakeCredential, FakeKeyVault, transport_for
from tests.support.issuer import Issuer
from tests.support.security import ATTACKER_KEY, BEARER_AUDIENCE, SERVICE_KEY, bearer_settings
from tests.support.settings import use_environment

VAULT_PRIMARY = "VaultHeldPrimaryKey-1b6e0c2f4d8a4e1f9a3c5e7b9d1f3a5c7e9"
VAULT_SECONDARY = "VaultHeldSecondaryKey-a2c4e6f8b0d2f4a6c8e0b2d4f6a8c0e2b4"
VAULT_URI = "https://secrets-test.vault.azure.net/"


class Capture(logging.Handler):
    """Every record, formatted with its traceback, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.lines.append(self.format(record))

    def leaks(self, secrets: set[str]) -> list[tuple[str, str]]:
        """(secret prefix, line) for every line holding a secret."""
        return [(secret[:12] + "...", line[:300]) for secret in secrets for line in self.lines if secret in line]


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    saved = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    saved_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    isolated = []
    for name in saved:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(handler)
            isolated.append(logger)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for logger in isolated:
            logger.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def secrets(service: RunningWebPubSub) -> set[str]:
    """Secrets the scenario handles; each test adds the tokens and signatures it sees."""
    return {
        SERVICE_KEY,
        ATTACKER_KEY,
        VAULT_PRIMARY,
        VAULT_SECONDARY,
        service.connection_string,
        service.service.settings.identity_header,
    }


def token_parts(token: str) -> set[str]:
    """A JWT, and its signature on its own (the part that makes it usable)."""
    return {token, token.rsplit(".", 1)[-1]}


def digest(key: str, connection_id: str) -> str:
    """The hex digest alone: a log must hold neither it nor the whole `sha256=<digest>` value."""
    return sign(connection_id, key).removeprefix("sha256=")


def post_event(app: ServedApp, event_type: str, connection_id: str, signature: str | None, body: bytes) -> int:
    headers = {
        "ce-awpsversion": "1.0",
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-hub": "chat",
        "ce-connectionId": connection_id,
        "ce-userId": "alice",
        "ce-id": "1",
        "Content-Type": "text/plain" if ".user." in event_type else "application/json",
    }
    if signature is not None:
        headers["ce-signature"] = signature
    return app.client.post("eventhandler", headers=headers, content=body).status_code


def negotiate_token(app: ServedApp, secrets: set[str], **request: object) -> str:
    response = app.client.get("negotiate", **request)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    token = str(response.json()["token"])
    secrets.update(token_parts(token))
    return token


def assert_no_leaks(capture: Capture, secrets: set[str]) -> None:
    assert capture.lines, "nothing was captured: the capture itself is broken"
    assert capture.leaks(secrets) == []


def test_connection_string_mode_with_signed_and_forged_events(
    app: ServedApp, service: RunningWebPubSub, capture: Capture, secrets: set[str]
) -> None:
    for user in ("alice", "bob"):
        negotiate_token(app, secrets, params={"userId": user, "group": "chat"})
    assert app.client.get("negotiate", params={"userId": "x", "group": "admins"}).status_code == 403
    for connection_id, key in [("c-genuine", SERVICE_KEY), ("c-forged", ATTACKER_KEY)]:
        signature = f"sha256={digest(key, connection_id)}"
        secrets.update({signature, digest(key, connection_id)})
        connect_body = b'{"claims": {}, "query": {}, "headers": {}, "subprotocols": []}'
        post_event(app, "azure.webpubsub.sys.connect", connection_id, signature, connect_body)
        post_event(app, "azure.webpubsub.user.message", connection_id, signature, b"hello")
    assert post_event(app, "azure.webpubsub.sys.connected", "c-missing", None, b"{}") == 401
    assert app.client.get("health").status_code == 200
    assert_no_leaks(capture, secrets)
    assert any(line.startswith("shared.negotiate INFO Negotiated") for line in capture.lines)
    assert any("outcome=401" in line for line in capture.lines)


def test_bearer_mode_with_valid_and_forged_tokens(
    app: ServedApp, service: RunningWebPubSub, capture: Capture, secrets: set[str], issuer: Issuer, jwks_url: str
) -> None:
    use_environment(**bearer_settings(issuer, jwks_url, service))
    presented = {
        "valid": issuer.user_token(audience=BEARER_AUDIENCE, oid="oid-7"),
        "other-audience": issuer.user_token(audience="api://elsewhere", oid="oid-7"),
        "expired": issuer.user_token(audience=BEARER_AUDIENCE, oid="oid-7", lifetime=-3600),
        "garbage": "not.a.jwt",
    }
    for token in presented.values():
        secrets.update(token_parts(token))
    negotiate_token(app, secrets, headers={"Authorization": f"Bearer {presented['valid']}"})
    for name in ("other-audience", "expired", "garbage"):
        response = app.client.get("negotiate", headers={"Authorization": f"Bearer {presented[name]}"})
        assert response.status_code == 401
    secrets.discard("jwt")  # the signature part of "not.a.jwt" is an ordinary word
    assert_no_leaks(capture, secrets)


@pytest.mark.parametrize(
    "settings",
    [
        {"WEBPUBSUB_CREDENTIAL": "connectionstring", "NEGOTIATE_AUTH": "appservice"},
        {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "NEGOTIATE_AUTH": "anonymous",
            "WEBPUBSUB_CONNECTION_STRING": f"Endpoint=http://localhost:8080;Port=8080;AccessKey={SERVICE_KEY};Version=1.0;",
        },
        {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "NEGOTIATE_AUTH": "anonymous",
            "WEBPUBSUB_CONNECTION_STRING": f"AccessKey={SERVICE_KEY};Version=1.0;",
        },
        {
            "WEBPUBSUB_CREDENTIAL": "connectionstring",
            "NEGOTIATE_AUTH": "anonymous",
            "WEBPUBSUB_CONNECTION_STRING": f"Endpoint=ftp://x;AccessKey={SERVICE_KEY}",
        },
        {"WEBPUBSUB_CREDENTIAL": SERVICE_KEY},
    ],
    ids=["appservice-unprotected", "port-twice", "no-endpoint", "bad-scheme", "key-as-mode"],
)
def test_configuration_errors(
    app: ServedApp,
    service: RunningWebPubSub,
    capture: Capture,
    secrets: set[str],
    settings: dict[str, str],
) -> None:
    use_environment(**{"WEBPUBSUB_CONNECTION_STRING": service.connection_string, **settings})
    secrets.update(value for name, value in settings.items() if "CONNECTION_STRING" in name)
    assert app.client.get("negotiate", params={"userId": "a"}).status_code == 500
    assert app.client.get("health").status_code == 503
    assert_no_leaks(capture, secrets)
    assert any("shared.runtime ERROR Configuration of" in line for line in capture.lines)


def keyvault_runtime(vault: FakeKeyVault, endpoint: str) -> KeyVaultTokenSource:
    settings = load_settings(
        {
            "WEBPUBSUB_CREDENTIAL": "keyvault",
            "WEBPUBSUB_ENDPOINT": endpoint,
            "KEYVAULT_URI": VAULT_URI,
            "WEBPUBSUB_KEY_SECRET_NAME": "webpubsub-access-key",
            "NEGOTIATE_AUTH": "anonymous",
        }
    )
    adapter = FakeAdapter(vault)
    source = KeyVaultTokenSource(
        endpoint=settings.service.endpoint,
        vault_uri=VAULT_URI,
        secret_name="webpubsub-access-key",
        refresh_seconds=300,
        credential_provider=FakeCredential,
        secret_client_factory=lambda: SecretClient(
            VAULT_URI, FakeCredential(), transport=transport_for(adapter), retry_total=0
        ),
        retry_seconds=0,
        forced_refresh_seconds=0,
    )
    use_runtime(Runtime(settings, token_source=source))
    return source


def test_keyvault_mode_with_rotation_and_failures(
    app: ServedApp, service: RunningWebPubSub, capture: Capture, secrets: set[str]
) -> None:
    stored = f"Endpoint={service.endpoint};AccessKey={VAULT_PRIMARY};Version=1.0;"
    secrets.update({stored, FakeCredential().get_token().token})  # and the identity token sent to the vault
    vault = FakeKeyVault({"webpubsub-access-key": stored})
    keyvault_runtime(vault, service.endpoint)
    negotiate_token(app, secrets, params={"userId": "alice"})
    vault.secrets["webpubsub-access-key"] = VAULT_SECONDARY  # rotated: events signed with the new key
    both = f"sha256={digest(VAULT_SECONDARY, 'c1')},sha256={digest('regenerated-primary-0123456789abcdef', 'c1')}"
    secrets.update({both, digest(VAULT_SECONDARY, "c1")})
    assert post_event(app, "azure.webpubsub.user.message", "c1", both, b"hi") == 204
    negotiate_token(app, secrets, params={"userId": "alice"})
    for failure in ({"status_override": 403}, {"available": False}):
        keyvault_runtime(FakeKeyVault({"webpubsub-access-key": stored}, **failure), service.endpoint)
        assert app.client.get("negotiate", params={"userId": "alice"}).status_code == 503
    other_service = f"Endpoint=https://elsewhere.webpubsub.azure.com;AccessKey={VAULT_PRIMARY};Version=1.0;"
    secrets.add(other_service)
    keyvault_runtime(FakeKeyVault({"webpubsub-access-key": other_service}), service.endpoint)
    assert app.client.get("negotiate", params={"userId": "alice"}).status_code == 500
    assert_no_leaks(capture, secrets)
    assert any(name.startswith("azure.core.pipeline") for name in capture.names)
    assert any("Key Vault unavailable" in line for line in capture.lines)


def test_entra_mode_through_the_managed_identity(
    app: ServedApp, service: RunningWebPubSub, capture: Capture, secrets: set[str]
) -> None:
    use_environment(
        WEBPUBSUB_CREDENTIAL="entra",
        WEBPUBSUB_ENDPOINT=service.endpoint,
        NEGOTIATE_AUTH="anonymous",
        EVENTHANDLER_AUTH="none",
        **service.identity_environment(),
    )
    negotiate_token(app, secrets, params={"userId": "alice", "group": "chat"})
    identity_token = get_runtime().credential().get_token("https://webpubsub.azure.com/.default").token
    secrets.update(token_parts(identity_token))
    assert app.client.get("health").status_code == 200
    assert_no_leaks(capture, secrets)
    assert any(name.startswith("azure.identity") for name in capture.names)


def test_entra_mode_with_the_identity_endpoint_down(
    app: ServedApp, service: RunningWebPubSub, capture: Capture, secrets: set[str]
) -> None:
    closed = httpx.URL(service.endpoint).copy_with(port=1)  # nothing listens on port 1
    use_environment(
        WEBPUBSUB_CREDENTIAL="entra",
        WEBPUBSUB_ENDPOINT=service.endpoint,
        NEGOTIATE_AUTH="anonymous",
        EVENTHANDLER_AUTH="none",
        IDENTITY_ENDPOINT=str(closed.copy_with(path="/token")),
        IDENTITY_HEADER=service.service.settings.identity_header,
    )
    response = app.client.get("negotiate", params={"userId": "alice"})
    assert response.status_code == 503
    assert_no_leaks(capture, secrets)


def test_the_capture_finds_a_secret_in_any_logger(capture: Capture) -> None:
    """The check itself can fail: a secret logged anywhere, even in a traceback, is found."""
    try:
        raise ValueError(f"boom {SERVICE_KEY}")
    except ValueError:
        logging.getLogger("azure.core.pipeline.policies").debug("failed", exc_info=True)
    assert capture.leaks({SERVICE_KEY}) != []
