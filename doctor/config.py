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

import requests

from doctor.net import run_with_deadline
from doctor.report import Check, Status, fail, fingerprint, ok, skip, warn
from doctor.target import AzureAccess, SettingsSource, entra_source, key_source, keyvault_source, resolve_target
from shared import probes
from shared.config import (
    SETTING_NAMES,
    Concern,
    CredentialMode,
    ServiceSettings,
    Settings,
    is_loopback_host,
    is_setting_name,
)
from shared.probes import ProbeFailed, classify
from shared.tokens import TokenSource

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


def _failed(name: str, failure: ProbeFailed, prefix: str = "") -> Check:
    """A probe's failure as the doctor reports it: the operator's detail and the fix."""
    return fail(name, prefix + failure.log_detail, failure.fix, code=failure.failure.value)


def probe_service(endpoint: str, session: requests.Session, timeout: float) -> Check:
    """HEAD /api/health, as the app's health check does; any 2xx means the service answers."""
    try:
        return ok("service", probes.probe_service(probes.HttpProbe(session=session), endpoint, timeout))
    except ProbeFailed as failure:
        return _failed("service", failure, "cannot reach the service: " if failure.network else "")


def probe_service_access(settings: ServiceSettings, source: TokenSource, access: AzureAccess) -> Check:
    """What /api/health's access check does: does the service accept the key or identity, for every served hub?"""
    try:
        detail = run_with_deadline(
            lambda: probes.probe_service_access(source, settings.endpoint, settings.hubs, access.timeout),
            access.deadline * max(1, len(settings.hubs)),
        )
    except ProbeFailed as failure:
        return _failed("service access", failure)
    return ok("service access", detail)


def probe_keyvault(settings: ServiceSettings, access: AzureAccess) -> tuple[Check, str | None]:
    """Read the key the way the app does; returns the finding and the key when it was read."""
    where = f"secret {settings.key_secret_name} in {settings.keyvault_uri}"
    source = keyvault_source(settings, access)
    try:
        run_with_deadline(lambda: probes.probe_vault_secret(source, access.timeout), access.deadline)
        key = source.access_keys()[0]
    except ProbeFailed as failure:
        network = _network_cause(failure, settings.keyvault_uri or "", access.timeout)
        return _failed("key vault", network or failure, f"reading the {where}: "), None
    return ok("key vault", f"read {where} ({fingerprint(key)})"), key


def _network_cause(failure: ProbeFailed, url: str, timeout: float) -> ProbeFailed | None:
    """A Key Vault failure named as the network failure underneath, when there is one."""
    cause = failure.__cause__ or failure.__context__
    if cause is None:
        return None
    network = classify(cause, url, timeout)
    return network if network.failure is not probes.Failure.NETWORK else None


def probe_identity(settings: ServiceSettings, access: AzureAccess, scope: str = probes.WEBPUBSUB_SCOPE) -> Check:
    """A token for `scope` from the app's credential: the service's in entra mode, Key Vault's in keyvault mode."""
    try:
        credential = access.credential_for(settings)
        detail = run_with_deadline(lambda: probes.probe_identity(credential, access.timeout, scope), access.deadline)
    except ProbeFailed as failure:
        return fail("identity", f"no token for {scope}: {failure.log_detail}", probes.FIXES[probes.Failure.NO_TOKEN])
    except ValueError as error:
        return fail("identity", f"no token for {scope}: {error}", probes.FIXES[probes.Failure.NO_TOKEN])
    who = f"user-assigned identity {settings.client_id}" if settings.client_id else "the default credential"
    return ok("identity", detail.replace("the app's identity", who, 1))


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
            findings.append(skip("service access", "not tried: the identity or the service is not available"))
        else:
            findings.append(probe_service_access(settings, entra_source(settings, access), access))
        return findings
    key = settings.access_key
    if settings.credential is CredentialMode.KEY_VAULT:
        identity = probe_identity(settings, access, probes.KEYVAULT_SCOPE)
        findings.append(identity)
        if identity.status is Status.OK:
            keyvault, key = probe_keyvault(settings, access)
            findings.append(keyvault)
        else:
            findings.append(skip("key vault", "not read: the identity gets no token for Key Vault"))
    if key is None or not service_up:
        findings.append(skip("service access", "not tried: the key or the service is not available"))
    else:
        findings.append(probe_service_access(settings, key_source(settings, key, access), access))
    return findings
