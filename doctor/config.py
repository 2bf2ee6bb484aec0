"""`config`: the settings exactly as the app loads them, the traps they hide, and probes with timeouts.

The verdict on the settings is the app's own (`shared.config.load_settings`), so the doctor and
the app can never disagree; the doctor adds what loading cannot know: a misspelled setting name,
plain http towards a remote host, development-only settings on an App Service site. Then it
probes what the app depends on in the configured mode, each within a few seconds: the service's
health endpoint and whether it accepts the key, the identity (a token for Key Vault's scope, or for
the service's), Key Vault through the app's own token source, and generateToken in entra mode.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, datetime

import requests

from doctor.net import Unreachable, classify, run_with_deadline, send
from doctor.report import Check, Status, fail, fingerprint, ok, skip, warn
from doctor.target import AzureAccess, SettingsSource, read_keyvault_key, resolve_target
from shared.config import (
    SETTING_NAMES,
    Concern,
    CredentialMode,
    ServiceSettings,
    Settings,
    is_loopback_host,
    is_setting_name,
)
from shared.errors import ConfigError, DependencyUnavailable
from shared.tokens import describe_azure_error

HEALTH_PATH = "/api/health?api-version=2024-12-01"
SERVICE_SCOPE = "https://webpubsub.azure.com/.default"
KEYVAULT_SCOPE = "https://vault.azure.net/.default"
DOCTOR_USER_ID = "webpubsub-doctor"
# Names that look like the app's settings; anything else in the environment is none of our business.
_SETTING_PREFIXES = ("WEBPUBSUB", "NEGOTIATE", "EVENTHANDLER", "KEYVAULT", "HEALTH_", "TOKEN_", "CLIENT_PAGE")

_LOAD_FIXES: Mapping[str, str] = {
    "WEBPUBSUB_CONNECTION_STRING": (
        "Copy the connection string from the resource's Keys page, or use the local one "
        "(Endpoint=http://localhost:8080;AccessKey=...;Version=1.0;), with the port in Endpoint only."
    ),
    "WEBPUBSUB_HUB": "Use the hub name the service's event handler settings use, e.g. chat.",
    "KEYVAULT_URI": "Copy the Vault URI from the vault's Overview page: https://<vault-name>.vault.azure.net/",
    "WEBPUBSUB_ENDPOINT": "Use https://<name>.webpubsub.azure.com (the resource's host name), without a path.",
}
_IDENTITY_FIX = (
    "In Azure, turn on the app's managed identity (and set AZURE_CLIENT_ID for a user-assigned one); "
    "on a workstation, sign in with `az login`."
)


def check_setting_names(environ: Mapping[str, str]) -> Check:
    """Names that look like settings but are not read by the app: usually typos, silently ignored."""
    unknown = sorted(
        name for name in environ if name.upper().startswith(_SETTING_PREFIXES) and not is_setting_name(name)
    )
    if not unknown:
        return ok("setting names", "every setting name is one the app reads")
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), SETTING_NAMES, n=1)
        described.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return warn(
        "setting names",
        "the app does not read " + ", ".join(described),
        "Rename them; the README's configuration table lists every setting.",
    )


# What stops working while a concern's settings are refused.
_BROKEN_BY: Mapping[Concern, str] = {
    Concern.SERVICE: "every route but health",
    Concern.GROUP_POLICY: "negotiate and connect events",
    Concern.NEGOTIATE: "/api/negotiate",
    Concern.EVENT_HANDLER: "/api/eventhandler",
    Concern.HEALTH: "nothing: health uses its defaults",
    Concern.CLIENT_PAGE: "/api/client",
    Concern.PUBLISH: "the publish API (/api/messages, /api/groups, /api/connections, /api/permissions)",
}


def check_load(settings: Settings) -> Check:
    """Every setting the app refuses, with what fails because of it."""
    problems = settings.problems
    if problems:
        first = next(iter(problems.values()))
        fix = _LOAD_FIXES.get(first.setting, f"Correct {first.setting}; the README describes every setting.")
        described = "; ".join(
            f"{error.log_message} (breaks {_BROKEN_BY[concern]})" for concern, error in problems.items()
        )
        return fail("configuration", f"the app refuses {described}", fix)
    return ok(
        "configuration",
        f"loads: WEBPUBSUB_CREDENTIAL={settings.service.credential.value}, hub {settings.service.hub}, "
        f"NEGOTIATE_AUTH={settings.negotiate.auth.value}, EVENTHANDLER_AUTH={settings.event_handler.auth.value}",
    )


def check_endpoint(endpoint: str, credential: CredentialMode | None) -> Check:
    host = endpoint.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
    setting = "WEBPUBSUB_CONNECTION_STRING" if credential is CredentialMode.CONNECTION_STRING else "WEBPUBSUB_ENDPOINT"
    if endpoint.startswith("https://"):
        return ok("endpoint", f"{endpoint}; clients connect to wss://{endpoint[len('https://') :]}/client/hubs/<hub>")
    if not is_loopback_host(host):
        return fail(
            "endpoint",
            f"{setting} gives plain http for {host}, which is not this machine: clients would get ws:// URLs, "
            "and the Azure service serves https and wss only",
            "Use https://<name>.webpubsub.azure.com.",
        )
    if credential is CredentialMode.ENTRA:
        return warn(
            "endpoint",
            f"entra with the http endpoint {endpoint}: Azure SDKs send no bearer token over http; the app allows it "
            "only for a local service on loopback",
            "Fine for the local stack; in Azure use the https endpoint.",
        )
    return ok("endpoint", f"{endpoint}, a local service on this machine")


def check_development(settings: Settings, production: bool) -> Check:
    shortcuts = settings.development_shortcuts
    if not shortcuts:
        return ok("development settings", "none in use")
    if production:
        return fail(
            "development settings",
            "this is an App Service site (WEBSITE_SITE_NAME is set) using development-only settings: "
            + "; ".join(shortcuts),
            "Use WEBPUBSUB_CREDENTIAL=keyvault or entra, NEGOTIATE_AUTH=appservice or bearer and "
            "EVENTHANDLER_AUTH=signature or bearer.",
        )
    return ok(
        "development settings",
        "in use, fine on this machine (not an App Service site): " + "; ".join(shortcuts),
    )


def probe_service(endpoint: str, session: requests.Session, timeout: float) -> Check:
    """HEAD /api/health, as the app's health check does; any 2xx means the service answers."""
    try:
        response = send(session, "HEAD", endpoint + HEALTH_PATH, timeout=timeout)
    except Unreachable as error:
        return fail("service", f"cannot reach the service: {error.detail}", error.fix)
    status = response.status_code
    if 200 <= status < 300:
        return ok("service", f"HEAD /api/health answered {status}")
    if status == 403:
        return fail(
            "service",
            "HEAD /api/health answered 403: the resource refuses this network",
            "Allow this network in the resource's Networking settings (public network access, or an ACL rule for "
            "server connections), or come in through the private endpoint.",
        )
    if status == 404:
        return fail(
            "service",
            "HEAD /api/health answered 404: this host is not a Web PubSub service",
            "Use the resource's host name (az webpubsub show --query hostName) as the endpoint.",
        )
    return fail("service", f"HEAD /api/health answered {status}", "Check the service's health in the portal.")


def _dependency_failure(name: str, error: DependencyUnavailable, url: str, timeout: float, fix: str) -> Check:
    """A DependencyUnavailable; named as a network failure when that is what lies underneath."""
    network = classify(error, url, timeout)
    if network.kind != "network":
        return fail(name, f"cannot reach {error.dependency}: {network.detail}", network.fix)
    return fail(name, error.detail, fix)


def probe_service_key(settings: ServiceSettings, key: str, access: AzureAccess) -> Check:
    """A signed REST call the service answers 401 to when the key is not one of the resource's keys."""
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    client = WebPubSubServiceClient(
        endpoint=settings.endpoint, hub=settings.hub, credential=AzureKeyCredential(key), **access.client_options()
    )
    try:
        run_with_deadline(lambda: client.user_exists(user_id=DOCTOR_USER_ID), access.deadline)
    except HttpResponseError as error:
        if error.status_code == 401:
            return fail(
                "service key",
                f"the service refuses the access key ({fingerprint(key)}) with 401; it is not one of this "
                "resource's keys, so every client token the app signs is refused too",
                "Copy the current key (or connection string) from the resource's Keys page; after regenerating a "
                "key, update the setting or the Key Vault secret.",
            )
        return fail("service key", describe_azure_error(error), "Check the service's health in the portal.")
    except Unreachable as error:
        return fail("service key", f"cannot reach the service: {error.detail}", error.fix)
    except AzureError as error:
        network = classify(error, settings.endpoint, access.timeout)
        return fail("service key", f"cannot reach the service: {network.detail}", network.fix)
    finally:
        client.close()
    return ok("service key", f"the service accepts the access key ({fingerprint(key)})")


def probe_keyvault(settings: ServiceSettings, access: AzureAccess) -> tuple[Check, str | None]:
    """Read the key the way the app does; returns the finding and the key when it was read."""
    where = f"secret {settings.key_secret_name} in {settings.keyvault_uri}"
    fix = (
        "Grant the app's identity the Key Vault Secrets User role on the vault, check the secret name, and "
        "let this network through the vault's firewall."
    )
    try:
        key = read_keyvault_key(settings, access)
    except DependencyUnavailable as error:
        return _dependency_failure("key vault", error, settings.keyvault_uri or "", access.timeout, fix), None
    except ConfigError as error:
        return fail("key vault", error.log_message, "Store the bare access key (or the connection string)."), None
    except Unreachable as error:
        return fail("key vault", f"reading the {where} timed out: {error.detail}", error.fix), None
    return ok("key vault", f"read {where} ({fingerprint(key)})"), key


def probe_identity(settings: ServiceSettings, access: AzureAccess, scope: str = SERVICE_SCOPE) -> Check:
    """A token for `scope` from the app's credential: the service's in entra mode, Key Vault's in keyvault mode."""
    from azure.core.exceptions import AzureError

    try:
        credential = access.credential_for(settings)
        token = run_with_deadline(lambda: credential.get_token(scope), access.deadline)
    except Unreachable as error:
        return fail("identity", f"no token for {scope}: {error.detail}", _IDENTITY_FIX)
    except (AzureError, ValueError) as error:
        return fail("identity", f"no token for {scope}: {describe_azure_error(error)}", _IDENTITY_FIX)
    minutes = max(0, round((token.expires_on - datetime.now(UTC).timestamp()) / 60))
    who = f"user-assigned identity {settings.client_id}" if settings.client_id else "the default credential"
    return ok("identity", f"{who} got a token for {scope} (valid {minutes} min)")


def probe_generate_token(settings: ServiceSettings, access: AzureAccess) -> Check:
    """What negotiate does in entra mode: ask the service for a client token with the identity."""
    from shared.tokens import EntraTokenSource

    source = EntraTokenSource(
        endpoint=settings.endpoint,
        credential_provider=lambda: access.credential_for(settings),
        sdk_options=access.client_options(),
    )
    fix = "Assign the app's identity the Web PubSub Service Owner role on the resource (Contributor is not enough)."
    try:
        run_with_deadline(
            lambda: source.client_access(hub=settings.hub, user_id=DOCTOR_USER_ID, roles=(), groups=(), minutes=1),
            access.deadline,
        )
    except DependencyUnavailable as error:
        return _dependency_failure("generate token", error, settings.endpoint, access.timeout, fix)
    except Unreachable as error:
        return fail("generate token", f"no answer from generateToken: {error.detail}", error.fix)
    return ok("generate token", f"the service issued a client token for hub {settings.hub} to the identity")


def check_config(source: SettingsSource, access: AzureAccess, session: requests.Session | None = None) -> list[Check]:
    """Every check of the `config` command."""
    target = resolve_target(source)
    settings = target.service
    findings = [source.describe(), check_setting_names(source.environ), check_load(target.settings)]
    if target.endpoint is None:
        findings.append(skip("service", "not probed: no endpoint could be read from the settings"))
        return findings
    findings.append(check_endpoint(target.endpoint, settings.credential if settings else None))
    if settings is not None:
        findings.append(check_development(target.settings, source.production))
    own_session = session is None
    session = session or requests.Session()
    try:
        service = probe_service(target.endpoint, session, access.timeout)
    finally:
        if own_session:
            session.close()
    findings.append(service)
    if settings is None:
        return findings
    service_up = service.status is Status.OK
    if settings.credential is CredentialMode.ENTRA:
        identity = probe_identity(settings, access)
        findings.append(identity)
        if identity.status is not Status.OK or not service_up:
            findings.append(skip("generate token", "not tried: the identity or the service is not available"))
        else:
            findings.append(probe_generate_token(settings, access))
        return findings
    key = settings.access_key
    if settings.credential is CredentialMode.KEY_VAULT:
        identity = probe_identity(settings, access, KEYVAULT_SCOPE)
        findings.append(identity)
        if identity.status is Status.OK:
            keyvault, key = probe_keyvault(settings, access)
            findings.append(keyvault)
        else:
            findings.append(skip("key vault", "not read: the identity gets no token for Key Vault"))
    if key is None or not service_up:
        findings.append(skip("service key", "not tried: the key or the service is not available"))
    else:
        findings.append(probe_service_key(settings, key, access))
    return findings
