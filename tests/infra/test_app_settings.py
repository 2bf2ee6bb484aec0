"""The app settings infra sets are the ones the code reads, and the code accepts them.

For every credential mode and negotiate mode infra offers, the settings main.bicep hands to the
Function App are computed from the template (placeholders stand in for host names and ids Azure
assigns) and fed to the app's own `shared.config.load_settings`.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import SETTING_NAMES, CredentialMode, EventAuth, NegotiateAuth, load_settings
from shared.errors import ConfigError
from tests.infra.templates import (
    AUTH_CLIENT_ID,
    MAIN_BICEP,
    PLACEHOLDERS,
    TENANT_ID,
    Evaluator,
    Unsupported,
    module_path,
    parse,
    resources_of_type,
    settings_environ,
    unwrap,
)

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
    "bearer": {"NEGOTIATE_BEARER_ISSUER", "NEGOTIATE_BEARER_AUDIENCE"},
}
# Settings for local development only; infra must never set them.
LOCAL_ONLY = {"WEBPUBSUB_CONNECTION_STRING"}
# Platform settings the Functions host reads (not the app's code).
PLATFORM_PREFIXES = ("AzureWebJobsStorage__", "APPLICATIONINSIGHTS_")
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


def function_module_param(evaluator: Evaluator, name: str) -> Any:
    _, body = unwrap(parse(MAIN_BICEP)["modules"]["functionApp"])
    return evaluator.evaluate(body["params"][name])


def app_environ(credential: str, negotiate: str, **extra: Any) -> dict[str, str]:
    """The environment the deployed app sees, as far as infra decides it."""
    evaluator = main_evaluator(credential, negotiate, **extra)
    environ = settings_environ(function_module_param(evaluator, "appSettings"))
    if function_module_param(evaluator, "enableAppServiceAuth") is True:
        # The platform sets this itself when App Service Authentication is on.
        environ["WEBSITE_AUTH_ENABLED"] = "true"
    return environ


def platform_setting_names() -> set[str]:
    template = parse(module_path("function"))
    return {entry["name"] for entry in template["variables"]["platformSettings"]["value"]}


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_the_app_accepts_the_settings_infra_sets(credential: str, negotiate: str) -> None:
    settings = load_settings(app_environ(credential, negotiate))

    assert settings.credential is CredentialMode(credential)
    assert settings.negotiate_auth is NegotiateAuth(negotiate)
    assert settings.endpoint == f"https://{PLACEHOLDERS['webPubSub.outputs.hostName']}"
    assert settings.hub == "chat"
    assert settings.client_id == PLACEHOLDERS["identity.outputs.clientId"]
    assert settings.development_shortcuts == ()
    if credential == "keyvault":
        assert settings.event_auth is EventAuth.SIGNATURE
        assert settings.keyvault_uri == PLACEHOLDERS["keyVault.outputs.uri"]
        assert settings.key_secret_name == "webpubsub-access-key"
    else:
        assert settings.event_auth is EventAuth.BEARER
        assert settings.event_bearer is not None
        assert settings.event_bearer.principal_id == PLACEHOLDERS["webPubSub.outputs.principalId"]
        assert settings.event_bearer is not None
        assert settings.event_bearer.issuer == f"https://sts.windows.net/{TENANT_ID}/"
        assert settings.event_bearer.audience == AUTH_CLIENT_ID
        assert settings.event_bearer.jwks_uri == ENTRA_KEYS
    if negotiate == "bearer":
        assert settings.negotiate_bearer is not None
        assert settings.negotiate_bearer.issuer == f"https://sts.windows.net/{TENANT_ID}/"
        assert settings.negotiate_bearer.audience == f"api://{AUTH_CLIENT_ID}"
        assert settings.negotiate_bearer.jwks_uri == ENTRA_KEYS


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_every_setting_that_matters_in_the_mode_is_set(credential: str, negotiate: str) -> None:
    names = set(app_environ(credential, negotiate))
    required = REQUIRED_ALWAYS | REQUIRED_BY_CREDENTIAL[credential] | REQUIRED_BY_NEGOTIATE[negotiate]
    assert required - names == set()


@pytest.mark.parametrize(("credential", "negotiate"), MODES)
def test_every_setting_infra_sets_is_one_the_code_or_the_platform_reads(credential: str, negotiate: str) -> None:
    environ = app_environ(credential, negotiate)
    environ.pop("WEBSITE_AUTH_ENABLED", None)  # added above on the platform's behalf
    names = set(environ) | platform_setting_names()
    unknown = {name for name in names if name not in SETTING_NAMES and not name.startswith(PLATFORM_PREFIXES)}
    assert unknown == set()
    assert names & LOCAL_ONLY == set()
    assert names & FLEX_REJECTED_SETTINGS == set()


def test_platform_settings_use_identity_based_storage_and_entra_telemetry() -> None:
    template = parse(module_path("function"))
    platform = {entry["name"]: entry["value"] for entry in template["variables"]["platformSettings"]["value"]}
    assert platform["AzureWebJobsStorage__credential"] == "managedidentity"
    assert platform["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert "AzureWebJobsStorage__blobServiceUri" in platform
    assert platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"


def test_infra_offers_no_local_development_mode() -> None:
    parameters = parse(MAIN_BICEP)["parameters"]

    def allowed(name: str) -> set[str]:
        decorators = parameters[name]["decorators"]
        return {value for d in decorators if d["type"] == "allowed" for value in d["argument"]}

    assert allowed("credentialMode") == {"entra", "keyvault"}
    assert allowed("negotiateAuth") == {"appservice", "bearer"}
    assert parameters["credentialMode"]["default"] == "entra"
    assert parameters["negotiateAuth"]["default"] == "appservice"


def test_negotiate_bearer_can_trust_another_issuer() -> None:
    issuer = "https://login.example.com/tenant/"
    custom = app_environ("entra", "bearer", negotiateBearerIssuer=issuer, negotiateBearerAudience="chat-api")
    bearer = load_settings(custom).negotiate_bearer
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
        load_settings(environ)
    assert raised.value.setting == "NEGOTIATE_AUTH"


def test_the_evaluator_refuses_what_it_does_not_model() -> None:
    evaluator = main_evaluator("entra", "appservice")
    with pytest.raises(Unsupported):
        evaluator.evaluate("https://${someModule.outputs.unknown}/")


def test_the_hub_name_the_app_uses_is_the_hub_infra_creates() -> None:
    evaluator = main_evaluator("entra", "appservice", hubName="lobby")
    _, hub = unwrap(parse(MAIN_BICEP)["modules"]["hub"])
    assert evaluator.evaluate(hub["params"]["hubName"]) == "lobby"
    assert app_environ("entra", "appservice", hubName="lobby")["WEBPUBSUB_HUB"] == "lobby"


def test_the_function_app_runs_python_3_11_on_flex_consumption() -> None:
    evaluator = main_evaluator("entra", "appservice")
    assert function_module_param(evaluator, "pythonVersion") == "3.11"
    template = parse(module_path("function"))
    (site,) = resources_of_type(template, "Microsoft.Web/sites")
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "pythonVersion"}
    (plan,) = resources_of_type(template, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    assert site["kind"] == "functionapp,linux"
