"""Property-based tests of configuration parsing: 3,000 generated environments.

`load_settings` never raises: each concern holds valid settings or a ConfigError naming one of its
own settings; neither an error message nor the settings' repr ever holds the access key.
"""

from __future__ import annotations

import string
from urllib.parse import urlsplit

from hypothesis import event, given, strategies as st

from shared.config import (
    APP_SERVICE_AUTH_FLAG,
    SETTING_NAMES,
    SETTINGS_BY_CONCERN,
    Concern,
    CredentialMode,
    ServiceSettings,
    load_settings,
)
from tests.support.fuzz import generated_inputs, unencodable_text

EXAMPLES = 3000

# Keys long and distinctive enough that finding one in a message cannot be a coincidence.
access_keys = st.text(string.ascii_letters + string.digits + "+/", min_size=32, max_size=48).map("K3y".__add__)
endpoints = st.one_of(
    st.just("http://localhost:8080"),
    st.sampled_from(
        [
            "http://localhost:8080",
            "https://contoso.webpubsub.azure.com",
            "https://contoso.webpubsub.azure.com/",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://contoso.webpubsub.azure.com",
            "https://x:99999",
            "ftp://x",
            "https://user:pass@x",
            "https://x/path?q",
            "",
        ]
    ),
    st.text(max_size=40),
)


@st.composite
def connection_strings(draw: st.DrawFn) -> tuple[str, str]:
    """A connection string built from plausible and broken parts, and the key inside it."""
    key = draw(access_keys)
    parts = [
        f"Endpoint={draw(endpoints)}",
        f"AccessKey={key}",
        draw(st.sampled_from(["Version=1.0", "Version=1.0", "", "Port=8080", "Port=x", "AuthType=azure.msi", "Junk"])),
        draw(st.just("") | st.text(max_size=10)),
    ]
    ordered = draw(st.permutations(parts))
    separator = draw(st.sampled_from([";", "; ", ";;"]))
    return separator.join(ordered), key


values = st.one_of(
    st.text(max_size=40),
    unencodable_text,  # os.environ holds undecodable bytes as lone surrogates (surrogateescape)
    st.sampled_from(
        [
            "connectionstring",
            "keyvault",
            "entra",
            "anonymous",
            "bearer",
            "appservice",
            "signature",
            "none",
            "true",
            "false",
            "0",
            "5",
            "-1",
            "nan",
            "1e9",
            "chat,news",
            " , ",
            "https://kv.vault.azure.net/",
            "https://login.example/tenant/v2.0",
            "http://127.0.0.1:9/keys",
        ]
    ),
    endpoints,
)
names = st.sampled_from(sorted(SETTING_NAMES | {APP_SERVICE_AUTH_FLAG}))
# Valid starting points for each mode, so that most examples get past the first settings to the later ones.
BASES: list[dict[str, str]] = [
    {"WEBPUBSUB_CREDENTIAL": "connectionstring", "NEGOTIATE_AUTH": "anonymous"},
    {
        "WEBPUBSUB_CREDENTIAL": "keyvault",
        "WEBPUBSUB_ENDPOINT": "https://contoso.webpubsub.azure.com",
        "KEYVAULT_URI": "https://kv.vault.azure.net/",
        "WEBPUBSUB_KEY_SECRET_NAME": "webpubsub-access-key",
        "NEGOTIATE_AUTH": "appservice",
        APP_SERVICE_AUTH_FLAG: "true",
    },
    {
        "WEBPUBSUB_CREDENTIAL": "entra",
        "WEBPUBSUB_ENDPOINT": "http://localhost:8080",
        "NEGOTIATE_AUTH": "bearer",
        "NEGOTIATE_BEARER_ISSUER": "https://login.example/tenant/v2.0",
        "NEGOTIATE_BEARER_AUDIENCE": "api://negotiate",
        "EVENTHANDLER_AUTH": "bearer",
        "EVENTHANDLER_BEARER_ISSUER": "https://sts.example/tenant/",
        "EVENTHANDLER_BEARER_AUDIENCE": "api://events",
        "EVENTHANDLER_BEARER_PRINCIPAL_ID": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
    },
    {},
]
environments = st.builds(
    lambda base, changes: {**base, **changes}, st.sampled_from(BASES), st.dictionaries(names, values, max_size=4)
)


def check_service(service: ServiceSettings) -> None:
    parts = urlsplit(service.endpoint)
    assert parts.scheme in {"http", "https"}
    assert parts.hostname
    assert parts.path == ""
    assert not parts.query
    assert (service.access_key is not None) == (service.credential is CredentialMode.CONNECTION_STRING)
    assert service.service_host == parts.hostname


@generated_inputs(EXAMPLES)
@given(
    environ=environments,
    connection=st.none() | connection_strings(),
    key_elsewhere=st.none() | st.sampled_from(sorted(SETTING_NAMES - {"WEBPUBSUB_CONNECTION_STRING"})),
)
def test_settings_load_or_name_the_setting_and_never_show_the_key(
    environ: dict[str, str], connection: tuple[str, str] | None, key_elsewhere: str | None
) -> None:
    secrets: list[str] = []
    if connection is not None:
        environ["WEBPUBSUB_CONNECTION_STRING"], key = connection
        secrets += [environ["WEBPUBSUB_CONNECTION_STRING"], key]
        if key_elsewhere is not None:
            environ[key_elsewhere] = key  # pasted into the wrong setting
    loaded = load_settings(environ)  # never raises: each concern holds its settings or its error
    for concern, error in loaded.problems.items():
        event(f"refused: {concern.value}: {error.setting}")
        assert error.setting in SETTINGS_BY_CONCERN[concern]
        assert error.public_message == "The app is misconfigured; its log names the setting to fix."
        error.log_message.encode("utf-8")  # renders in any UTF-8 log and answer, whatever the value
        error.detail.encode("utf-8")
        for secret in secrets:
            assert secret not in error.log_message
            assert secret not in error.detail
    if Concern.SERVICE not in loaded.problems:
        event(f"loaded: {loaded.service.credential.value}")
        check_service(loaded.service)
    if key_elsewhere is None:  # a key pasted into a free-text setting is that setting's value
        for secret in secrets:
            assert secret not in repr(loaded)
