"""``local.settings.json`` read as Azure Functions Core Tools reads it, for whatever runs the app locally.

One reader for the local Functions host (``make run``) and the diagnostics command, so both see
the settings ``func start`` would give the app. Core Tools deserializes the file with Newtonsoft
Json.NET: section and ``Host`` property names match in any case, a JSON number or boolean among
``Values`` becomes its JSON text (``7``, ``1.50``, ``true``), and a null value is no setting at
all. An environment variable that is already set (non-empty) wins over the file.

Never used by the deployed app: Azure gives it app settings, not this file. Error messages name
the file and the entry, never a value (values are often secrets).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PORT",
    "CorsSettings",
    "LocalSettings",
    "LocalSettingsError",
    "apply_values",
    "read_local_settings",
]

#: Core Tools' default for ``Host.LocalHttpPort``.
DEFAULT_PORT = 7071


class LocalSettingsError(ValueError):
    """local.settings.json cannot be used; the message names the file and the problem, never a value."""


@dataclass(frozen=True)
class CorsSettings:
    """``Host.CORS`` and ``Host.CORSCredentials``: which browser origins may call the host."""

    origins: tuple[str, ...]
    credentials: bool = False

    def __post_init__(self) -> None:
        if "*" in self.origins and self.credentials:
            # ASP.NET Core refuses this combination too: the CORS protocol forbids it.
            raise LocalSettingsError("Host.CORS '*' cannot be combined with Host.CORSCredentials true")


@dataclass(frozen=True)
class LocalSettings:
    """What Core Tools takes from local.settings.json: app settings, port and CORS."""

    values: Mapping[str, str] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    cors: CorsSettings | None = None


def read_local_settings(path: Path) -> LocalSettings:
    """Read local.settings.json like Core Tools: a missing file means no settings at all.

    An encrypted file cannot be read without the machine's key, so it is refused with the command
    that decrypts it.
    """
    if not path.exists():
        return LocalSettings()
    try:
        # Numbers keep their JSON text, as Json.NET reads a number into a string setting.
        document = json.loads(path.read_text(encoding="utf-8-sig"), parse_int=str, parse_float=str)
    except (OSError, UnicodeDecodeError) as error:
        raise LocalSettingsError(f"{path} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise LocalSettingsError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno})") from None
    if not isinstance(document, dict):
        raise LocalSettingsError(f"{path} must hold a JSON object")
    sections = _case_insensitive(document)
    if sections.get("isencrypted") is True:
        raise LocalSettingsError(f"{path} is encrypted; decrypt it first with `func settings decrypt`")
    values = _values(path, sections.get("values") or {})
    host = sections.get("host") or {}
    if not isinstance(host, dict):
        raise LocalSettingsError(f'{path}: "Host" must be a JSON object')
    host_settings = _case_insensitive(host)
    port = _port(path, host_settings.get("localhttpport"))
    origins = _origins(path, host_settings.get("cors"))
    credentials = _flag(path, "Host.CORSCredentials", host_settings.get("corscredentials"))
    return LocalSettings(values, port, CorsSettings(origins, credentials) if origins else None)


def apply_values(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Put ``Values`` into the environment with Core Tools' precedence; return the names skipped.

    A variable already set to a non-empty value wins over local.settings.json (Core Tools prints
    "Skipping '<name>' from local settings as it's already defined in current environment
    variables"), so ``NAME=value make run`` overrides the file for one run.
    """
    skipped = []
    for name, value in values.items():
        if environ.get(name):
            skipped.append(name)
        else:
            environ[name] = value
    return skipped


def _case_insensitive(section: Any) -> dict[str, Any]:
    return {str(key).lower(): value for key, value in section.items()} if isinstance(section, dict) else {}


def _values(path: Path, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise LocalSettingsError(f'{path}: "Values" must be a JSON object of setting names and strings')
    values: dict[str, str] = {}
    for name, value in raw.items():
        if not name or value is None:
            continue
        if isinstance(value, bool):
            values[name] = "true" if value else "false"  # Json.NET's text for the literal
        elif isinstance(value, str):  # strings, and numbers as their JSON text
            values[name] = value
        else:
            kind = "array" if isinstance(value, list) else "object"
            raise LocalSettingsError(f'{path}: "Values.{name}" must be a string, not a JSON {kind}')
    return values


def _port(path: Path, raw: Any) -> int:
    if raw is None:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise LocalSettingsError(f"{path}: Host.LocalHttpPort must be a port number") from None
    if port == 0:
        return DEFAULT_PORT
    if not 0 < port < 65536 or isinstance(raw, bool):
        raise LocalSettingsError(f"{path}: Host.LocalHttpPort must be between 1 and 65535")
    return port


def _origins(path: Path, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, str):
        raise LocalSettingsError(f"{path}: Host.CORS must be a comma-separated string of origins")
    return tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())


def _flag(path: Path, name: str, raw: Any) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in {"true", "false"}:
        return raw.strip().lower() == "true"
    raise LocalSettingsError(f"{path}: {name} must be true or false")
