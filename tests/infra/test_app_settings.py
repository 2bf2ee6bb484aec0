"""The app settings infra sets are the ones the code reads, and the code accepts them.

For every credential mode and negotiate mode infra offers, the settings the Function App ends up
with (main.bicep's values passed through modules/function.bicep, which adds the platform's own)
are computed from the templates, with placeholders standing in for host names and ids Azure
assigns, and fed to the app's own `shared.config.load_settings`.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from devstack.body_limit import request_body_limit
from shared.bearer import BearerValidator
from shared.config import SETTING_NAMES, CredentialMode, EventAuth, NegotiateAuth, load_settings
from shared.errors import ConfigError, Unauthorized
from shared.negotiate import MAX_BODY_BYTES as NEGOTIATE_MAX_BODY_BYTES
from shared.protocol import ConnectionContext
from shared.publish import MAX_BODY_BYTES as PUBLISH_MAX_BODY_BYTES
from shared.upstream_auth import ServiceTokenCheck
from shared.web import Request
from tests.infra.templates import (
    AUTH_CLIENT_ID,
    MAIN_BICEP,
    PLACEHOLDERS,
    REPO_ROOT,
    TENANT_ID,
    Evaluator,
    Unsupported,
    accessor_path,
    module_path,
    parse,
    resources_of_type,
    settings_environ,
    unwrap,
)
from tests.support.issuer import Issuer

CREDENTIAL_MODES = ("entra", "keyvault")
NEGOTIATE_MODES = ("appservice", "bearer")
ENTRA_KEYS = f"https://login.microsoftonline.com/{TENANT_ID}/discovery/v2.0/keys"
MODES = [(credential, negotiate) for credential in CREDENTIAL_MODES for negotiate in NEGOTIATE_MODES]

# Settings a production deployment must set explicitly in each mode, even where the code has a
# default: the deployed behaviour should not hinge on a default changing.
REQUIRED_ALWAYS = {
    "WEBPUBSUB_HUB",
    "WEBPUBSUB_CREDENTIAL",
    "WEBPUBSUB_ENDPOINT",
    "AZURE_CLIENT_ID",
    "NEGOTIATE_AUTH",
    "NEGOTIATE_GROUPS",
    "TOKEN_LIFETIME_MINUTES",
    "EVENTHANDLER_AUTH",
}
REQUIRED_BY_CREDENTIAL = {
    "keyvault": {"KEYVAULT_URI", "WEBPUBSUB_KEY_SECRET_NAME", "KEYVAULT_REFRESH_SECONDS"},
    "entra": {"EVENTHANDLER_BEARER_ISSUER", "EVENTHANDLER_BEARER_AUDIENCE", "EVENTHANDLER_BEARER_PRINCIPAL_ID"},
}
REQUIRED_BY_NEGOTIATE = {
    "appservice": set[str](),
    "bearer": {"NEGOTIATE_BEARER_ISSUER", "NEGOTIATE_BEARER_AUDIENCE", "NEGOTIATE_BEARER_ALLOW_APP_TOKENS"},
}
# Settings for local development only; infra must never set them.
LOCAL_ONLY = {"WEBPUBSUB_CONNECTION_STRING"}
# Settings of modes the templates do not offer (EVENTHANDLER_AUTH=appservice: the hub's event handler
# uses ManagedIdentity auth checked by the app itself, or signatures).
NOT_OFFERED = {"EVENTHANDLER_APPSERVICE_PRINCIPAL_ID"}
# Settings the code reads that mean nothing in a mode, so infra leaves them out there.
UNUSED_BY_CREDENTIAL = {
    "entra": REQUIRED_BY_CREDENTIAL["keyvault"],
    "keyvault": {
        "EVENTHANDLER_BEARER_ISSUER",
        "EVENTHANDLER_BEARER_AUDIENCE",
        "EVENTHANDLER_BEARER_JWKS_URI",
        "EVENTHANDLER_BEARER_PRINCIPAL_ID",
    },
}
UNUSED_BY_NEGOTIATE = {
    "appservice": {
        "NEGOTIATE_BEARER_ISSUER",
        "NEGOTIATE_BEARER_AUDIENCE",
        "NEGOTIATE_BEARER_JWKS_URI",
        "NEGOTIATE_BEARER_ALLOW_APP_TOKENS",
    },
    "bearer": set[str](),
}
# Platform settings the Functions host reads (not the app's code).
PLATFORM_PREFIXES = ("AzureWebJobsStorage__", "APPLICATIONINSIGHTS_", "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT")
# App settings Flex Consumption rejects or ignores (functions-app-settings, Flex deprecations).
FLEX_REJECTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "AzureWebJobsStorage",
}


def main_evaluator(credential: str, negotiate: str, **extra: Any) -> Evaluator:
    parameters = {
        "environmentName": "dev",
        "location": "westeurope",
        "authClientId": AUTH_CLIENT_ID,
        "credentialMode": credential,
        "negotiateAuth": negotiate,
        **extra,
    }
    return Evaluator(parse(MAIN_BICEP), parameters)


def module_param(evaluator: Evaluator, module: str, name: str) -> Any:
    _, body = unwrap(parse(MAIN_BICEP)["modules"][module])
    return evaluator.evaluate(body["params"][name])


def function_module_param(evaluator: Evaluator, name: str) -> Any:
    return module_param(evaluator, "functionApp", name)


def site_app_settings(credential: str, negotiate: str, **extra: Any) -> list[dict[str, Any]]:
    """siteConfig.appSettings of the Function App, for main.bicep's parameters."""
    evaluator = main_evaluator(credential, negotiate, **extra)
    _, module = unwrap(parse(MAIN_BICEP)["modules"]["functionApp"])
    # Every parameter main.bicep passes, except the tags (union(), and no setting reads them).
    passed = {name: evaluator.evaluate(value) for name, value in module["params"].items() if name != "tags"}
    template = parse(module_path("function"))
    (site,) = resources_of_type(template, "Microsoft.Web/sites")
    settings = Evaluator(template, passed).evaluate(site["properties"]["siteConfig"]["appSettings"])
    assert isinstance(settings, list)
    return settings


def app_environ(credential: str, negotiate: str, **extra: Any) -> dict[str, str]:
    """The environment the deployed app sees, as far as infra decides it."""
    environ = settings_environ(site_app_settings(credential, negotiate, **extra))
    if function_module_param(main_evaluator(credential, negotiate, **extra), "enableAppServiceAuth") is True:
        # The platform sets this itself when App Service Authentication is on.
        environ["WEBSITE_AUTH_ENABLED"] = "true"
    return environ


def code_setting_names(environ: dict[str, str]) -> set[str]:
    return {name for name in environ if not name.startswith(PLATFORM_PREFIXES) and name != "WEBSITE_AUTH_ENABLED"}


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_the_app_accepts_the_settings_infra_sets(credential: str, negotiate: str) -> None:
    settings = load_settings(app_environ(credential, negotiate)).check()

    assert settings.service.credential is CredentialMode(credential)
    assert settings.negotiate.auth is NegotiateAuth(negotiate)
    assert settings.service.endpoint == f"https://{PLACEHOLDERS['webPubSub.outputs.hostName']}"
    assert settings.service.hub == "chat"
    assert settings.service.client_id == PLACEHOLDERS["identity.outputs.clientId"]
    assert settings.development_shortcuts == ()
    assert set(settings.event_handler.extra_origins) <= {PLACEHOLDERS["webPubSub.outputs.hostName"]}
    assert (settings.event_handler.max_body_bytes, settings.health.deadline_seconds, settings.health.cache_seconds) == (
        1048576,
        2.0,
        10.0,
    )
    if credential == "keyvault":
        assert settings.event_handler.auth is EventAuth.SIGNATURE
        assert settings.service.keyvault_uri == PLACEHOLDERS["keyVault.outputs.uri"]
        assert settings.service.key_secret_name == "webpubsub-access-key"
    else:
        assert settings.event_handler.auth is EventAuth.BEARER
        assert settings.event_handler.bearer is not None
        assert settings.event_handler.bearer.principal_id == PLACEHOLDERS["webPubSub.outputs.principalId"]
        assert settings.event_handler.bearer is not None
        assert settings.event_handler.bearer.issuer == f"https://sts.windows.net/{TENANT_ID}/"
        assert settings.event_handler.bearer.audience == AUTH_CLIENT_ID
        assert settings.event_handler.bearer.jwks_uri == ENTRA_KEYS
    if negotiate == "bearer":
        assert settings.negotiate.bearer is not None
        assert settings.negotiate.bearer.issuer == f"https://sts.windows.net/{TENANT_ID}/"
        assert settings.negotiate.bearer.audience == f"api://{AUTH_CLIENT_ID}"
        assert settings.negotiate.bearer.jwks_uri == ENTRA_KEYS
        assert settings.negotiate.accept_app_tokens is False  # users only, unless the operator says otherwise


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_every_setting_that_matters_in_the_mode_is_set(credential: str, negotiate: str) -> None:
    names = set(app_environ(credential, negotiate))
    required = REQUIRED_ALWAYS | REQUIRED_BY_CREDENTIAL[credential] | REQUIRED_BY_NEGOTIATE[negotiate]
    assert required - names == set()


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_infra_sets_exactly_the_settings_the_code_reads_in_the_mode(credential: str, negotiate: str) -> None:
    # A setting added to shared/config.py fails here until infra sets it (or it is declared
    # unused in some mode above), so the deployed app never silently runs on a default.
    expected = (
        SETTING_NAMES - LOCAL_ONLY - NOT_OFFERED - UNUSED_BY_CREDENTIAL[credential] - UNUSED_BY_NEGOTIATE[negotiate]
    )
    assert code_setting_names(app_environ(credential, negotiate)) == expected


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_every_setting_infra_sets_is_one_the_code_or_the_platform_reads(credential: str, negotiate: str) -> None:
    names = set(app_environ(credential, negotiate)) - {"WEBSITE_AUTH_ENABLED"}  # added on the platform's behalf
    assert code_setting_names(dict.fromkeys(names, "")) - SETTING_NAMES == set()
    assert names & LOCAL_ONLY == set()
    assert names & FLEX_REJECTED_SETTINGS == set()


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_host_storage_and_telemetry_use_the_identity_the_app_runs_as(credential: str, negotiate: str) -> None:
    environ = app_environ(credential, negotiate)
    client_id = PLACEHOLDERS["identity.outputs.clientId"]
    assert environ["AZURE_CLIENT_ID"] == client_id
    assert environ["AzureWebJobsStorage__credential"] == "managedidentity"
    assert environ["AzureWebJobsStorage__clientId"] == client_id
    assert environ["AzureWebJobsStorage__blobServiceUri"] == PLACEHOLDERS["storage.properties.primaryEndpoints.blob"]
    assert environ["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == f"ClientId={client_id};Authorization=AAD"
    # No key-based storage connection anywhere: shared keys are off on the account.
    assert not any("AccountKey=" in value for value in environ.values())


def test_infra_offers_no_local_development_mode() -> None:
    parameters = parse(MAIN_BICEP)["parameters"]

    def allowed(name: str) -> set[str]:
        decorators = parameters[name]["decorators"]
        return {value for d in decorators if d["type"] == "allowed" for value in d["argument"]}

    assert allowed("credentialMode") == {"entra", "keyvault"}
    assert allowed("negotiateAuth") == {"appservice", "bearer"}
    assert parameters["credentialMode"]["default"] == "entra"
    assert parameters["negotiateAuth"]["default"] == "appservice"


def hub_upstream_auth(credential: str) -> Any:
    """The auth block of the hub's event handler, for main.bicep's parameters."""
    resource = module_param(main_evaluator(credential, "appservice"), "hub", "upstreamAuthResource")
    template = parse(module_path("hub"))
    (hub,) = resources_of_type(template, "Microsoft.SignalRService/webPubSub/hubs")
    (handler,) = hub["properties"]["eventHandlers"]
    return Evaluator(template, {"upstreamAuthResource": resource}).evaluate(handler["auth"])


def test_the_app_accepts_the_token_the_hub_makes_the_service_send_in_entra_mode() -> None:
    # What Web PubSub sends when the hub's auth is ManagedIdentity: a v1 token from its own
    # system identity (oid = its principal id) with aud = the configured resource.
    settings = load_settings(app_environ("entra", "appservice")).check()
    assert settings.event_handler.bearer is not None
    auth = hub_upstream_auth("entra")
    assert auth["type"] == "ManagedIdentity"
    service = Issuer(issuer=f"https://sts.windows.net/{TENANT_ID}/")

    def fetch(url: str, timeout: float) -> dict[str, Any]:
        assert settings.event_handler.bearer is not None
        assert url == settings.event_handler.bearer.jwks_uri, url
        return service.jwks

    principal = settings.event_handler.bearer.principal_id
    assert principal is not None
    check = ServiceTokenCheck(BearerValidator(settings.event_handler.bearer, fetch=fetch), principal)
    context = ConnectionContext(
        event_type="azure.webpubsub.sys.connect", hub=settings.service.hub, connection_id="c1", event_name="connect"
    )

    def call(token: str) -> None:
        request = Request("POST", "https://app/api/eventhandler", headers={"authorization": f"Bearer {token}"})
        check.authenticate(request, context)

    resource = auth["managedIdentity"]["resource"]
    web_pubsub = PLACEHOLDERS["webPubSub.outputs.principalId"]
    call(service.token(audience=resource, oid=web_pubsub))
    # Another identity of the tenant (here the app's own) asking for the same audience.
    with pytest.raises(Unauthorized):
        call(service.token(audience=resource, oid=PLACEHOLDERS["identity.outputs.principalId"]))
    # The service's identity, but a token for another resource.
    with pytest.raises(Unauthorized):
        call(service.token(audience=f"api://{AUTH_CLIENT_ID}", oid=web_pubsub))


def test_the_hub_sends_no_token_in_keyvault_mode_where_the_app_checks_signatures() -> None:
    assert hub_upstream_auth("keyvault") == {"type": "None"}
    assert load_settings(app_environ("keyvault", "appservice")).event_handler.auth is EventAuth.SIGNATURE


def test_negotiate_bearer_can_trust_another_issuer() -> None:
    issuer = "https://login.example.com/tenant/"
    custom = app_environ("entra", "bearer", negotiateBearerIssuer=issuer, negotiateBearerAudience="chat-api")
    bearer = load_settings(custom).negotiate.bearer
    assert bearer is not None
    assert (bearer.issuer, bearer.audience, bearer.jwks_uri) == (issuer, "chat-api", None)

    jwks = "https://login.example.com/keys"
    with_jwks = app_environ("entra", "bearer", negotiateBearerIssuer=issuer, negotiateBearerJwksUri=jwks)
    assert with_jwks["NEGOTIATE_BEARER_JWKS_URI"] == jwks


def test_a_bad_mode_combination_would_be_caught() -> None:
    # Guards the guard: the environ built here is what load_settings judges, so breaking it
    # (here: App Service Authentication off while negotiate relies on it) must be refused.
    environ = app_environ("entra", "appservice")
    del environ["WEBSITE_AUTH_ENABLED"]
    with pytest.raises(ConfigError) as raised:
        load_settings(environ).check()
    assert raised.value.setting == "NEGOTIATE_AUTH"


def test_the_evaluator_refuses_what_it_does_not_model() -> None:
    evaluator = main_evaluator("entra", "appservice")
    with pytest.raises(Unsupported):
        evaluator.evaluate("https://${someModule.outputs.unknown}/")


def test_the_hub_name_the_app_uses_is_the_hub_infra_creates() -> None:
    evaluator = main_evaluator("entra", "appservice", hubName="lobby")
    _, hub = unwrap(parse(MAIN_BICEP)["modules"]["hub"])
    assert evaluator.evaluate(hub["params"]["hubNames"]) == ["lobby"]
    environ = app_environ("entra", "appservice", hubName="lobby")
    assert (environ["WEBPUBSUB_HUB"], environ["WEBPUBSUB_HUBS"]) == ("lobby", "lobby")
    service = load_settings(environ).service
    assert (service.hub, service.hubs) == ("lobby", ("lobby",))


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_every_hub_the_app_serves_is_a_hub_infra_creates(credential: str, negotiate: str) -> None:
    """additionalHubNames: one hub resource per served hub, and the app serves exactly those."""
    extra = {"additionalHubNames": ["notifications", "Ops.Alerts"]}
    evaluator = main_evaluator(credential, negotiate, **extra)
    _, hub = unwrap(parse(MAIN_BICEP)["modules"]["hub"])
    created = evaluator.evaluate(hub["params"]["hubNames"])
    assert created == ["chat", "notifications", "Ops.Alerts"]
    service = load_settings(app_environ(credential, negotiate, **extra)).check().service
    assert (service.hub, list(service.hubs)) == ("chat", created)
    template = parse(module_path("hub"))
    (loop,) = [block for block in template["resources"].values() if block["type"].endswith("/hubs")]
    assert loop["config"]["loop_type"]["detail"] == {"item_name": "hubName", "array_name": "hubNames"}


def test_the_app_reads_the_secret_infra_writes_the_access_key_to() -> None:
    evaluator = main_evaluator("keyvault", "appservice", keyVaultSecretName="wps-key")
    _, vault = unwrap(parse(MAIN_BICEP)["modules"]["keyVault"])
    written = evaluator.evaluate(vault["params"]["secretName"])
    settings = load_settings(app_environ("keyvault", "appservice", keyVaultSecretName="wps-key"))
    assert written == settings.service.key_secret_name == "wps-key"
    template = parse(module_path("keyvault"))
    (secret,) = resources_of_type(template, "Microsoft.KeyVault/vaults/secrets")
    assert secret["name"] == "secretName"
    # KEYVAULT_URI is the vault's own URI, which is the vault the secret lives in.
    assert accessor_path(template["outputs"]["uri"]["value"]) == "vault.properties.vaultUri"
    assert secret["parent"] == "vault"


def project_python_version() -> str:
    """The Python version the project is written and type-checked for (pyproject.toml)."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(pyproject["tool"]["mypy"]["python_version"])


def test_the_function_app_runs_the_project_python_on_flex_consumption() -> None:
    evaluator = main_evaluator("entra", "appservice")
    assert function_module_param(evaluator, "pythonVersion") == project_python_version() == "3.11"
    template = parse(module_path("function"))
    (site,) = resources_of_type(template, "Microsoft.Web/sites")
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "pythonVersion"}
    (plan,) = resources_of_type(template, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    assert site["kind"] == "functionapp,linux"


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
@pytest.mark.parametrize("event_limit", [None, 1024, 4 * 1024 * 1024])
def test_the_host_refuses_bodies_larger_than_the_largest_route_accepts(
    credential: str, negotiate: str, event_limit: int | None
) -> None:
    """FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: no body the app would refuse anyway is buffered by the host."""
    extra = {} if event_limit is None else {"eventHandlerMaxBodyBytes": event_limit}
    environ = app_environ(credential, negotiate, **extra)
    settings = load_settings(environ).check()
    largest = max(settings.event_handler.max_body_bytes, NEGOTIATE_MAX_BODY_BYTES, PUBLISH_MAX_BODY_BYTES)
    assert int(environ["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"]) == largest
    assert request_body_limit(environ) == largest  # the local host reads it the same way


def test_the_local_example_settings_give_the_local_host_the_limit_infra_sets() -> None:
    example = json.loads((REPO_ROOT / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    deployed = app_environ("entra", "appservice")["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"]
    assert example["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"] == deployed
    assert request_body_limit(example) == load_settings(example).event_handler.max_body_bytes


# Entra ID's token issuers: what the OpenID metadata of each authority names as `iss` (the v1 endpoint's
# metadata names sts.windows.net, the v2.0 endpoint's names itself), i.e. what App Service Authentication
# accepts for the openIdIssuer it is given.
def issuer_of_authority(authority: str) -> str:
    login = PLACEHOLDERS["loginEndpoint"]
    assert authority.startswith(login), authority
    tenant, _, version = authority.removeprefix(login).strip("/").partition("/")
    return f"https://sts.windows.net/{tenant}/" if version == "" else f"{login}{tenant}/v2.0"


def easy_auth_authority() -> str:
    _, module = unwrap(parse(MAIN_BICEP)["modules"]["functionApp"])
    evaluator = main_evaluator("entra", "appservice")
    passed = {name: evaluator.evaluate(value) for name, value in module["params"].items() if name != "tags"}
    template = parse(module_path("function"))
    (auth,) = resources_of_type(template, "Microsoft.Web/sites/config")
    registration = auth["properties"]["identityProviders"]["azureActiveDirectory"]["registration"]
    return str(Evaluator(template, passed).evaluate(registration["openIdIssuer"]))


@pytest.mark.parametrize("negotiate", NEGOTIATE_MODES)
def test_every_route_expects_the_token_version_the_app_registration_issues(negotiate: str) -> None:
    """v1 access tokens (the registration's default, docs/deploy.md): Easy Auth and the app's own checks agree."""
    v1_issuer = f"https://sts.windows.net/{TENANT_ID}/"
    assert easy_auth_authority() == f"{PLACEHOLDERS['loginEndpoint']}{TENANT_ID}/"
    assert issuer_of_authority(easy_auth_authority()) == v1_issuer
    settings = load_settings(app_environ("entra", negotiate)).check()
    bearers = [settings.event_handler.bearer] + ([settings.negotiate.bearer] if negotiate == "bearer" else [])
    entra = Issuer(issuer=v1_issuer)
    v2 = Issuer(issuer=f"{PLACEHOLDERS['loginEndpoint']}{TENANT_ID}/v2.0", kid="key-v2")
    for bearer in bearers:
        assert bearer is not None
        assert bearer.issuer == v1_issuer
        validator = BearerValidator(bearer, fetch=lambda url, timeout: {"keys": entra.jwks["keys"] + v2.jwks["keys"]})
        assert validator.validate(entra.token(audience=bearer.audience))["iss"] == v1_issuer
        with pytest.raises(Unauthorized, match="another issuer"):
            validator.validate(v2.token(audience=bearer.audience))
