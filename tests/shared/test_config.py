"""Configuration: every mode loads; every missing or invalid setting is refused by name, one concern at a time."""

from __future__ import annotations

import pytest

from shared.config import (
    SETTING_NAMES,
    SETTINGS_BY_CONCERN,
    BearerSettings,
    Concern,
    CredentialMode,
    EventAuth,
    HealthSettings,
    NegotiateAuth,
    PublishAuth,
    is_setting_name,
    load_settings,
    parse_connection_string,
)
from shared.errors import ConfigError
from tests.support.fakes import EMULATOR_KEY
from tests.support.settings import LOCAL_ENVIRON

KEYVAULT_ENVIRON = {
    "WEBPUBSUB_CREDENTIAL": "keyvault",
    "WEBPUBSUB_ENDPOINT": "https://contoso.webpubsub.azure.com",
    "KEYVAULT_URI": "https://contoso-kv.vault.azure.net/",
    "WEBPUBSUB_KEY_SECRET_NAME": "webpubsub-access-key",
    "NEGOTIATE_AUTH": "appservice",
    "WEBSITE_AUTH_ENABLED": "True",
    "PUBLISH_AUTH": "appservice",
}
ENTRA_OID = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f"
ENTRA_ENVIRON = {
    "WEBPUBSUB_CREDENTIAL": "entra",
    "WEBPUBSUB_ENDPOINT": "https://contoso.webpubsub.azure.com/",
    "NEGOTIATE_AUTH": "bearer",
    "NEGOTIATE_BEARER_ISSUER": "https://login.microsoftonline.com/tenant/v2.0",
    "NEGOTIATE_BEARER_AUDIENCE": "api://negotiate",
    "EVENTHANDLER_AUTH": "bearer",
    "EVENTHANDLER_BEARER_ISSUER": "https://sts.windows.net/tenant/",
    "EVENTHANDLER_BEARER_AUDIENCE": "api://events",
    "EVENTHANDLER_BEARER_PRINCIPAL_ID": "99999999-0000-0000-0000-000000000000",
    "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "PUBLISH_BEARER_ISSUER": "https://sts.windows.net/tenant/",
    "PUBLISH_BEARER_AUDIENCE": "api://publish",
}


def refused(environ: dict[str, str]) -> ConfigError:
    settings = load_settings(environ)  # never raises: each concern keeps its own error
    with pytest.raises(ConfigError) as caught:
        settings.check()
    return caught.value


def test_connection_string_mode_loads_with_defaults() -> None:
    """Local development needs three settings; everything else has a documented default."""
    settings = load_settings(LOCAL_ENVIRON).check()
    assert settings.service.credential is CredentialMode.CONNECTION_STRING
    assert settings.service.endpoint == "http://localhost:8080"
    assert settings.service.access_key == EMULATOR_KEY
    assert settings.service.hub == "chat"
    assert settings.group_policy.groups == ("chat",)
    assert settings.negotiate.token_lifetime_minutes == 60
    assert settings.event_handler.auth is EventAuth.SIGNATURE
    assert settings.event_handler.extra_origins == ()
    assert settings.event_handler.max_body_bytes == 1024 * 1024
    assert settings.health == HealthSettings(deadline_seconds=2.0, cache_seconds=10.0)
    assert settings.client_page.enabled is True
    assert settings.problems == {}


def test_keyvault_mode_loads() -> None:
    settings = load_settings(KEYVAULT_ENVIRON).check()
    assert settings.service.credential is CredentialMode.KEY_VAULT
    assert settings.service.endpoint == "https://contoso.webpubsub.azure.com"
    assert settings.service.keyvault_uri == "https://contoso-kv.vault.azure.net/"
    assert settings.service.key_secret_name == "webpubsub-access-key"
    assert settings.service.access_key is None
    assert settings.negotiate.auth is NegotiateAuth.APP_SERVICE
    assert settings.development_shortcuts == ()


def test_entra_mode_loads_with_bearer_on_both_sides() -> None:
    settings = load_settings(ENTRA_ENVIRON).check()
    assert settings.service.credential is CredentialMode.ENTRA
    assert settings.service.endpoint == "https://contoso.webpubsub.azure.com"
    assert settings.service.client_id == "11111111-2222-3333-4444-555555555555"
    assert settings.negotiate.bearer is not None
    assert settings.negotiate.bearer.audience == "api://negotiate"
    assert settings.event_handler.bearer is not None
    assert settings.event_handler.bearer.issuer == "https://sts.windows.net/tenant/"
    assert settings.event_handler.bearer.principal_id == "99999999-0000-0000-0000-000000000000"
    assert settings.development_shortcuts == ()


def test_access_key_is_not_in_repr() -> None:
    """Settings end up in debug logs; the key must not."""
    assert EMULATOR_KEY not in repr(load_settings(LOCAL_ENVIRON))


def test_values_are_trimmed_and_modes_case_insensitive() -> None:
    settings = load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_CREDENTIAL": " ConnectionString ", "WEBPUBSUB_HUB": " room "})
    assert settings.service.credential is CredentialMode.CONNECTION_STRING
    assert settings.service.hub == "room"


def test_a_negotiate_setting_fails_negotiate_only() -> None:
    """NEGOTIATE_AUTH=appservice without App Service Authentication: the event handler and health still load."""
    settings = load_settings({**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "appservice"})
    assert set(settings.problems) == {Concern.NEGOTIATE}
    with pytest.raises(ConfigError) as caught:
        _ = settings.negotiate
    assert caught.value.setting == "NEGOTIATE_AUTH"
    assert settings.service.hub == "chat"
    assert settings.event_handler.auth is EventAuth.SIGNATURE
    assert settings.group_policy.groups == ("chat",)
    assert settings.client_page.enabled is True


def test_an_event_handler_setting_fails_the_event_handler_only() -> None:
    settings = load_settings({**LOCAL_ENVIRON, "EVENTHANDLER_MAX_BODY_BYTES": "lots"})
    assert set(settings.problems) == {Concern.EVENT_HANDLER}
    assert settings.negotiate.auth is NegotiateAuth.ANONYMOUS
    with pytest.raises(ConfigError):
        _ = settings.event_handler


def test_invalid_health_settings_read_as_the_defaults_and_stay_listed() -> None:
    """Health must answer whatever is wrong, so it falls back to its defaults and reports the error."""
    settings = load_settings({**LOCAL_ENVIRON, "HEALTH_DEADLINE_SECONDS": "forever"})
    assert settings.health == HealthSettings()
    assert settings.problems[Concern.HEALTH].setting == "HEALTH_DEADLINE_SECONDS"


def test_every_concern_reports_its_own_first_error() -> None:
    settings = load_settings({"NEGOTIATE_AUTH": "basic", "CLIENT_PAGE_ENABLED": "maybe"})
    problems = {concern: error.setting for concern, error in settings.problems.items()}
    assert problems == {
        Concern.SERVICE: "WEBPUBSUB_CREDENTIAL",
        Concern.NEGOTIATE: "NEGOTIATE_AUTH",
        Concern.CLIENT_PAGE: "CLIENT_PAGE_ENABLED",
    }


def test_the_rejected_value_is_kept_apart_from_the_message() -> None:
    """The log quotes a short value to show the typo; what anyone may read (detail) never holds it."""
    error = refused({**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "anonymus"})
    assert error.value == "anonymus"
    assert "anonymus" not in error.reason
    assert "anonymus" not in error.detail
    assert "quoted in the app's log" in error.detail
    assert error.log_message.endswith(", not 'anonymus'")


def test_a_long_rejected_value_is_never_quoted() -> None:
    """A long value in the wrong setting is likely a key or connection string pasted there by mistake."""
    pasted = f"Endpoint=https://x;AccessKey={EMULATOR_KEY};"
    error = refused({**LOCAL_ENVIRON, "TOKEN_LIFETIME_MINUTES": pasted})
    assert error.value == pasted
    assert EMULATOR_KEY not in error.log_message
    assert f"a value of {len(pasted)} characters" in error.log_message


@pytest.mark.parametrize(
    ("environ", "setting", "words"),
    [
        ({}, "WEBPUBSUB_CREDENTIAL", "connectionstring, keyvault, entra"),
        ({"WEBPUBSUB_CREDENTIAL": "key"}, "WEBPUBSUB_CREDENTIAL", "one of connectionstring"),
        ({"WEBPUBSUB_CREDENTIAL": "connectionstring"}, "WEBPUBSUB_CONNECTION_STRING", "required"),
        ({**KEYVAULT_ENVIRON, "WEBPUBSUB_ENDPOINT": ""}, "WEBPUBSUB_ENDPOINT", "required"),
        ({**KEYVAULT_ENVIRON, "KEYVAULT_URI": ""}, "KEYVAULT_URI", "required"),
        ({**KEYVAULT_ENVIRON, "KEYVAULT_URI": "contoso-kv"}, "KEYVAULT_URI", "https://<vault-name>"),
        ({**KEYVAULT_ENVIRON, "KEYVAULT_URI": "https://kv.vault.azure.net/secrets/x"}, "KEYVAULT_URI", "no path"),
        ({**KEYVAULT_ENVIRON, "WEBPUBSUB_KEY_SECRET_NAME": ""}, "WEBPUBSUB_KEY_SECRET_NAME", "required"),
        ({**KEYVAULT_ENVIRON, "WEBPUBSUB_KEY_SECRET_NAME": "a_b"}, "WEBPUBSUB_KEY_SECRET_NAME", "dashes"),
        ({**ENTRA_ENVIRON, "WEBPUBSUB_ENDPOINT": "http://contoso.webpubsub.azure.com"}, "WEBPUBSUB_ENDPOINT", "https"),
        ({**ENTRA_ENVIRON, "WEBPUBSUB_ENDPOINT": "contoso.webpubsub.azure.com"}, "WEBPUBSUB_ENDPOINT", "https://"),
        ({**ENTRA_ENVIRON, "WEBPUBSUB_ENDPOINT": "https://x.webpubsub.azure.com/api"}, "WEBPUBSUB_ENDPOINT", "path"),
        ({**ENTRA_ENVIRON, "WEBPUBSUB_ENDPOINT": "https://x:99999"}, "WEBPUBSUB_ENDPOINT", "not a valid URL"),
        ({**LOCAL_ENVIRON, "WEBPUBSUB_HUB": "1chat"}, "WEBPUBSUB_HUB", "start with a letter"),
        ({**LOCAL_ENVIRON, "WEBPUBSUB_HUB": "chat room"}, "WEBPUBSUB_HUB", "start with a letter"),
        ({**LOCAL_ENVIRON, "WEBPUBSUB_HUB": "c" * 129}, "WEBPUBSUB_HUB", "128"),
        ({**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "basic"}, "NEGOTIATE_AUTH", "appservice, bearer, anonymous"),
        ({**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "bearer"}, "NEGOTIATE_BEARER_ISSUER", "required"),
        (
            {**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "bearer", "NEGOTIATE_BEARER_ISSUER": "https://issuer.example"},
            "NEGOTIATE_BEARER_AUDIENCE",
            "required",
        ),
        (
            {**LOCAL_ENVIRON, "NEGOTIATE_AUTH": "bearer", "NEGOTIATE_BEARER_ISSUER": "http://issuer.example"},
            "NEGOTIATE_BEARER_ISSUER",
            "https",
        ),
        ({**LOCAL_ENVIRON, "TOKEN_LIFETIME_MINUTES": "0"}, "TOKEN_LIFETIME_MINUTES", "from 1 to 1440"),
        ({**LOCAL_ENVIRON, "TOKEN_LIFETIME_MINUTES": "1441"}, "TOKEN_LIFETIME_MINUTES", "from 1 to 1440"),
        ({**LOCAL_ENVIRON, "TOKEN_LIFETIME_MINUTES": "1h"}, "TOKEN_LIFETIME_MINUTES", "whole number"),
        ({**LOCAL_ENVIRON, "NEGOTIATE_GROUPS": "a," + "g" * 1025}, "NEGOTIATE_GROUPS", "1024"),
        ({**LOCAL_ENVIRON, "EVENTHANDLER_AUTH": "token"}, "EVENTHANDLER_AUTH", "signature, bearer"),
        ({**ENTRA_ENVIRON, "EVENTHANDLER_AUTH": ""}, "EVENTHANDLER_AUTH", "no key"),
        ({**ENTRA_ENVIRON, "EVENTHANDLER_AUTH": "signature"}, "EVENTHANDLER_AUTH", "access key"),
        (
            {**LOCAL_ENVIRON, "EVENTHANDLER_AUTH": "appservice", "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID": ENTRA_OID},
            "EVENTHANDLER_AUTH",
            "WEBSITE_AUTH_ENABLED",
        ),
        ({**LOCAL_ENVIRON, "WEBPUBSUB_ALLOWED_ORIGINS": "https://x.com"}, "WEBPUBSUB_ALLOWED_ORIGINS", "host names"),
        ({**LOCAL_ENVIRON, "EVENTHANDLER_MAX_BODY_BYTES": "10"}, "EVENTHANDLER_MAX_BODY_BYTES", "from 1024"),
        ({**LOCAL_ENVIRON, "HEALTH_DEADLINE_SECONDS": "nan"}, "HEALTH_DEADLINE_SECONDS", "from 0.1 to 30"),
        ({**LOCAL_ENVIRON, "HEALTH_CACHE_SECONDS": "soon"}, "HEALTH_CACHE_SECONDS", "a number"),
        ({**LOCAL_ENVIRON, "CLIENT_PAGE_ENABLED": "maybe"}, "CLIENT_PAGE_ENABLED", "true or false"),
        ({**LOCAL_ENVIRON, "KEYVAULT_REFRESH_SECONDS": "1"}, "KEYVAULT_REFRESH_SECONDS", "from 5"),
    ],
)
def test_invalid_setting_is_named(environ: dict[str, str], setting: str, words: str) -> None:
    """The error names the one setting to fix and says what a valid value looks like."""
    error = refused(environ)
    assert error.setting == setting
    assert str(error).startswith(setting)
    assert words in error.reason


APP_SERVICE_EVENTS = {**LOCAL_ENVIRON, "EVENTHANDLER_AUTH": "appservice", "WEBSITE_AUTH_ENABLED": "true"}


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        # Every user of the app has a principal: without the service's object id, any of them would pass.
        (APP_SERVICE_EVENTS, "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID"),
        (
            {**APP_SERVICE_EVENTS, "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID": "wps-identity"},
            "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID",
        ),
        # Without it, any identity of the tenant that can get a token for the audience would pass.
        (
            {name: value for name, value in ENTRA_ENVIRON.items() if name != "EVENTHANDLER_BEARER_PRINCIPAL_ID"},
            "EVENTHANDLER_BEARER_PRINCIPAL_ID",
        ),
        ({**ENTRA_ENVIRON, "EVENTHANDLER_BEARER_PRINCIPAL_ID": "my-app"}, "EVENTHANDLER_BEARER_PRINCIPAL_ID"),
    ],
)
def test_the_event_handler_needs_the_service_identity_to_compare_callers_with(
    environ: dict[str, str], setting: str
) -> None:
    settings = load_settings(environ)
    assert list(settings.problems) == [Concern.EVENT_HANDLER]  # negotiate and health keep working
    error = settings.problems[Concern.EVENT_HANDLER]
    assert error.setting == setting
    assert "object" in error.reason


def test_the_service_identity_is_kept_in_lower_case() -> None:
    padded = " 5C4D3E2F-1A0B-4C9D-8E7F-6A5B4C3D2E1F "
    settings = load_settings({**APP_SERVICE_EVENTS, "EVENTHANDLER_APPSERVICE_PRINCIPAL_ID": padded})
    assert settings.event_handler.app_service_principal_id == "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f"
    upper = load_settings({**ENTRA_ENVIRON, "EVENTHANDLER_BEARER_PRINCIPAL_ID": "ABCDEF00-0000-0000-0000-000000000000"})
    assert upper.event_handler.bearer is not None
    assert upper.event_handler.bearer.principal_id == "abcdef00-0000-0000-0000-000000000000"


def test_bearer_negotiate_refuses_app_tokens_unless_allowed() -> None:
    assert load_settings(ENTRA_ENVIRON).negotiate.accept_app_tokens is False
    allowed = load_settings({**ENTRA_ENVIRON, "NEGOTIATE_BEARER_ALLOW_APP_TOKENS": "true"})
    assert allowed.negotiate.accept_app_tokens is True
    error = refused({**ENTRA_ENVIRON, "NEGOTIATE_BEARER_ALLOW_APP_TOKENS": "sometimes"})
    assert error.setting == "NEGOTIATE_BEARER_ALLOW_APP_TOKENS"


def test_appservice_negotiate_requires_platform_authentication() -> None:
    """Without App Service Authentication anybody could send X-MS-CLIENT-PRINCIPAL-ID."""
    environ = {**KEYVAULT_ENVIRON}
    del environ["WEBSITE_AUTH_ENABLED"]
    error = refused(environ)
    assert error.setting == "NEGOTIATE_AUTH"
    assert "WEBSITE_AUTH_ENABLED" in error.reason
    del environ["NEGOTIATE_AUTH"]  # appservice is the default, and the default is refused the same way
    assert refused(environ).setting == "NEGOTIATE_AUTH"


@pytest.mark.parametrize(
    "connection_string",
    [
        "Endpoint=http://localhost:8080;Port=8080;AccessKey=k;Version=1.0;",
        "Endpoint=http://localhost:8080/;AccessKey=k;Port=8080",
    ],
)
def test_port_given_twice_is_refused_with_the_fix(connection_string: str) -> None:
    error = refused({**LOCAL_ENVIRON, "WEBPUBSUB_CONNECTION_STRING": connection_string})
    assert error.setting == "WEBPUBSUB_CONNECTION_STRING"
    assert "port twice" in error.reason
    assert "Keep the port in Endpoint only" in error.reason


def test_port_given_once_as_port_is_folded_into_the_endpoint() -> None:
    endpoint, key = parse_connection_string("Endpoint=http://localhost;Port=8080;AccessKey=k;Version=1.0")
    assert (endpoint, key) == ("http://localhost:8080", "k")


@pytest.mark.parametrize(
    ("connection_string", "words"),
    [
        ("AccessKey=k", "no Endpoint"),
        ("Endpoint=https://x.webpubsub.azure.com", "no AccessKey"),
        ("Endpoint=https://x.webpubsub.azure.com;garbage", "Key=Value"),
        ("Endpoint=https://x.webpubsub.azure.com;AuthType=aad", "entra"),
        ("Endpoint=ftp://x;AccessKey=k", "https://"),
    ],
)
def test_malformed_connection_string_never_echoes_the_key(connection_string: str, words: str) -> None:
    secret_key = "S3cretKeyValue+/="
    error = refused(
        {
            **LOCAL_ENVIRON,
            "WEBPUBSUB_CONNECTION_STRING": connection_string.replace("AccessKey=k", f"AccessKey={secret_key}"),
        }
    )
    assert error.setting == "WEBPUBSUB_CONNECTION_STRING"
    assert words in error.reason
    assert secret_key not in str(error)


def test_access_key_with_equals_signs_survives_parsing() -> None:
    _, key = parse_connection_string("Endpoint=https://x.webpubsub.azure.com;AccessKey=abc==;Version=1.0;")
    assert key == "abc=="


def test_groups_are_split_trimmed_and_deduplicated() -> None:
    groups = load_settings({**LOCAL_ENVIRON, "NEGOTIATE_GROUPS": " a, b ,a,,c "}).group_policy.groups
    assert groups == ("a", "b", "c")
    assert load_settings({**LOCAL_ENVIRON, "NEGOTIATE_GROUPS": ""}).group_policy.groups == ()


def test_allowed_origins_are_host_names_in_lower_case() -> None:
    settings = load_settings({**KEYVAULT_ENVIRON, "WEBPUBSUB_ALLOWED_ORIGINS": "Custom.Example.com, other.example"})
    assert settings.event_handler.extra_origins == ("custom.example.com", "other.example")


def test_development_shortcuts_are_listed() -> None:
    settings = load_settings({**LOCAL_ENVIRON, "EVENTHANDLER_AUTH": "none"})
    shortcuts = " ".join(settings.development_shortcuts)
    assert "WEBPUBSUB_CREDENTIAL=connectionstring" in shortcuts
    assert "NEGOTIATE_AUTH=anonymous" in shortcuts
    assert "EVENTHANDLER_AUTH=none" in shortcuts


def test_every_setting_read_is_a_public_name() -> None:
    """SETTING_NAMES is what infra and the diagnostics check against; keep it complete."""
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            read.add(key)
            return super().get(key, default)

        def __contains__(self, key: object) -> bool:
            read.add(str(key))
            return super().__contains__(key)

    for environ in (LOCAL_ENVIRON, KEYVAULT_ENVIRON, ENTRA_ENVIRON):
        load_settings(Recording(environ))
    platform = {"WEBSITE_AUTH_ENABLED"}
    assert read - platform <= SETTING_NAMES
    assert {"WEBPUBSUB_HUB", "NEGOTIATE_GROUPS", "TOKEN_LIFETIME_MINUTES"} <= read


def test_each_setting_belongs_to_one_concern() -> None:
    """The doctor and health name the concern a setting breaks; a setting in two would be ambiguous."""
    names = [name for group in SETTINGS_BY_CONCERN.values() for name in group]
    assert len(names) == len(set(names)) == len(SETTING_NAMES)


class TestSeveralHubs:
    def test_one_hub_stays_as_simple_as_before(self) -> None:
        settings = load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_HUB": "lobby", "NEGOTIATE_GROUPS": "a,b"}).check()
        assert (settings.service.hub, settings.service.hubs) == ("lobby", ("lobby",))
        assert settings.group_policy.groups_for("LOBBY") == ("a", "b")
        assert load_settings(LOCAL_ENVIRON).service.hubs == ("chat",)

    @pytest.mark.parametrize("listed", ["chat notifications", "chat;notifications", "  chat ; notifications\n"])
    def test_hubs_are_separated_by_spaces_or_semicolons(self, listed: str) -> None:
        service = load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_HUBS": listed}).service
        assert (service.hub, service.hubs) == ("chat", ("chat", "notifications"))
        assert service.served_hub("NOTIFICATIONS") == "notifications"
        assert service.served_hub("lobby") is None

    def test_a_hub_name_may_hold_the_services_other_characters(self) -> None:
        service = load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_HUBS": "a.b c_d e[1] f`g"}).service
        assert service.hubs == ("a.b", "c_d", "e[1]", "f`g")

    def test_webpubsub_hub_picks_the_default_among_them(self) -> None:
        environ = {**LOCAL_ENVIRON, "WEBPUBSUB_HUBS": "chat Notifications", "WEBPUBSUB_HUB": "notifications"}
        assert load_settings(environ).service.hub == "Notifications"

    @pytest.mark.parametrize(
        ("environ", "setting", "words"),
        [
            ({"WEBPUBSUB_HUBS": "chat,notifications"}, "WEBPUBSUB_HUBS", "not ','"),
            ({"WEBPUBSUB_HUBS": "chat 1hub"}, "WEBPUBSUB_HUBS", "start with a letter"),
            ({"WEBPUBSUB_HUBS": "chat Chat"}, "WEBPUBSUB_HUBS", "twice"),
            ({"WEBPUBSUB_HUBS": " ; "}, "WEBPUBSUB_HUBS", "names no hub"),
            ({"WEBPUBSUB_HUBS": "chat news", "WEBPUBSUB_HUB": "lobby"}, "WEBPUBSUB_HUB", "one of WEBPUBSUB_HUBS"),
            ({"WEBPUBSUB_HUBS": "chat", "WEBPUBSUB_HUB": "1x"}, "WEBPUBSUB_HUB", "start with a letter"),
        ],
    )
    def test_a_bad_hub_list_is_a_service_error_naming_the_setting(
        self, environ: dict[str, str], setting: str, words: str
    ) -> None:
        settings = load_settings({**LOCAL_ENVIRON, **environ})
        error = settings.problems[Concern.SERVICE]
        assert error.setting == setting
        assert words in error.reason
        assert settings.negotiate.auth is NegotiateAuth.ANONYMOUS  # other concerns keep working

    def test_each_hub_may_have_its_own_groups(self) -> None:
        environ = {
            **LOCAL_ENVIRON,
            "WEBPUBSUB_HUBS": "chat notifications ops.team",
            "NEGOTIATE_GROUPS": "chat",
            "NEGOTIATE_GROUPS_notifications": "alerts, news",
            "NEGOTIATE_GROUPS_OPS.TEAM": "",
        }
        policy = load_settings(environ).check().group_policy
        assert policy.groups_for("chat") == ("chat",)
        assert policy.groups_for("Notifications") == ("alerts", "news")
        assert policy.groups_for("ops.team") == ()  # empty means none, as for NEGOTIATE_GROUPS

    @pytest.mark.parametrize(
        ("environ", "setting", "words"),
        [
            ({"NEGOTIATE_GROUPS_lobby": "x"}, "NEGOTIATE_GROUPS_lobby", "names no hub this app serves (chat, news"),
            ({"NEGOTIATE_GROUPS_": "x"}, "NEGOTIATE_GROUPS_", "names no hub"),
            ({"NEGOTIATE_GROUPS_news": "x", "negotiate_groups_NEWS": "y"}, "negotiate_groups_NEWS", "twice"),
            ({"NEGOTIATE_GROUPS_news": "x" * 1025}, "NEGOTIATE_GROUPS_news", "at most 1024"),
        ],
    )
    def test_a_bad_per_hub_group_setting_is_a_group_policy_error_naming_it(
        self, environ: dict[str, str], setting: str, words: str
    ) -> None:
        settings = load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_HUBS": "chat news", **environ})
        error = settings.problems[Concern.GROUP_POLICY]
        assert error.setting == setting
        assert words in error.reason
        assert settings.service.hubs == ("chat", "news")

    def test_per_hub_groups_are_not_checked_against_an_invalid_hub_list(self) -> None:
        settings = load_settings({**LOCAL_ENVIRON, "WEBPUBSUB_HUBS": "a,b", "NEGOTIATE_GROUPS_a": "x"})
        assert set(settings.problems) == {Concern.SERVICE}

    def test_per_hub_setting_names_are_setting_names(self) -> None:
        assert is_setting_name("NEGOTIATE_GROUPS_notifications")
        assert is_setting_name("WEBPUBSUB_HUBS")
        assert not is_setting_name("NEGOTIATE_GROUPS_")
        assert not is_setting_name("NEGOTIATE_GROUP")


# --- the publish API ---------------------------------------------------------------------------


def test_publish_defaults_to_bearer_and_names_the_missing_issuer() -> None:
    """Never anonymous by default: without PUBLISH_AUTH the API wants an Entra ID issuer and audience."""
    error = load_settings({**LOCAL_ENVIRON, "PUBLISH_AUTH": "", "PUBLISH_BEARER_AUDIENCE": "api://x"}).problems[
        Concern.PUBLISH
    ]
    assert error.setting == "PUBLISH_BEARER_ISSUER"
    assert "(the default)" in error.reason


def test_without_any_publish_setting_the_api_is_closed_and_nothing_else_fails() -> None:
    environ = {key: value for key, value in LOCAL_ENVIRON.items() if key != "PUBLISH_AUTH"}
    settings = load_settings(environ)
    assert Concern.PUBLISH not in settings.problems
    assert settings.publish.auth is PublishAuth.BEARER
    assert not settings.publish.configured
    assert not any("PUBLISH" in shortcut for shortcut in settings.development_shortcuts)


def test_publish_bearer_loads_with_the_default_role() -> None:
    settings = load_settings(
        {
            **LOCAL_ENVIRON,
            "PUBLISH_AUTH": "bearer",
            "PUBLISH_BEARER_ISSUER": "https://sts.windows.net/tenant/",
            "PUBLISH_BEARER_AUDIENCE": "api://publish",
        }
    )
    publish = settings.publish
    assert publish.auth is PublishAuth.BEARER
    assert publish.bearer == BearerSettings(issuer="https://sts.windows.net/tenant/", audience="api://publish")
    assert publish.role == "WebPubSub.Publish"
    assert not any("PUBLISH_AUTH" in shortcut for shortcut in settings.development_shortcuts)


def test_publish_none_is_a_listed_development_shortcut() -> None:
    settings = load_settings(LOCAL_ENVIRON)
    assert settings.publish.auth is PublishAuth.NONE
    assert any(shortcut.startswith("PUBLISH_AUTH=none") for shortcut in settings.development_shortcuts)


def test_publish_appservice_requires_app_service_authentication() -> None:
    error = load_settings({**LOCAL_ENVIRON, "PUBLISH_AUTH": "appservice"}).problems[Concern.PUBLISH]
    assert error.setting == "PUBLISH_AUTH"
    assert "WEBSITE_AUTH_ENABLED" in error.reason
    loaded = load_settings({**LOCAL_ENVIRON, "PUBLISH_AUTH": "appservice", "WEBSITE_AUTH_ENABLED": "true"})
    assert loaded.publish.auth is PublishAuth.APP_SERVICE


@pytest.mark.parametrize("role", ["two words", "x" * 121, "r\u00f4le"])
def test_publish_role_must_be_an_app_role_value(role: str) -> None:
    environ = {**LOCAL_ENVIRON, "PUBLISH_ROLE": role}
    assert load_settings(environ).problems[Concern.PUBLISH].setting == "PUBLISH_ROLE"


def test_an_empty_publish_role_reads_as_the_default() -> None:
    assert load_settings({**LOCAL_ENVIRON, "PUBLISH_ROLE": " "}).publish.role == "WebPubSub.Publish"


def test_a_bad_publish_setting_leaves_negotiate_and_events_working() -> None:
    settings = load_settings({**LOCAL_ENVIRON, "PUBLISH_AUTH": "open"})
    assert set(settings.problems) == {Concern.PUBLISH}
    assert settings.negotiate.auth is NegotiateAuth.ANONYMOUS
    assert settings.event_handler is not None
