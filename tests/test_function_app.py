"""The Functions host's view of the app: importing it indexes exactly the intended functions."""

from __future__ import annotations

import os
import subprocess
import sys

import azure.functions as func

import function_app
from devstack.host import indexed_functions

EXPECTED = {
    # name: (route, methods, auth level)
    "negotiate": ("negotiate", {"GET", "POST"}, func.AuthLevel.ANONYMOUS),
    "eventhandler": ("eventhandler", {"POST", "OPTIONS", "GET"}, func.AuthLevel.ANONYMOUS),
    "client": ("client/{*asset}", {"GET"}, func.AuthLevel.ANONYMOUS),
    "health": ("health", {"GET"}, func.AuthLevel.ANONYMOUS),
    "health_live": ("health/live", {"GET"}, func.AuthLevel.ANONYMOUS),
    # The publish API and presence check their callers themselves (PUBLISH_AUTH, NEGOTIATE_AUTH).
    "messages": ("messages", {"POST"}, func.AuthLevel.ANONYMOUS),
    "groups": ("groups", {"POST"}, func.AuthLevel.ANONYMOUS),
    "connections": ("connections", {"POST"}, func.AuthLevel.ANONYMOUS),
    "permissions": ("permissions", {"POST"}, func.AuthLevel.ANONYMOUS),
    "group_users": ("groups/{group}/users", {"GET"}, func.AuthLevel.ANONYMOUS),
}


def test_app_indexes_exactly_the_intended_functions() -> None:
    """What the worker does at start-up: one FunctionApp, get_functions(), and the bindings."""
    found = {}
    for function in indexed_functions(function_app.app):  # get_functions() may run once per app
        binding = function.get_trigger()
        assert binding is not None
        trigger = binding.get_dict_repr()
        assert trigger["type"] == "httpTrigger"
        found[function.get_function_name()] = (
            trigger["route"],
            {str(method) for method in trigger["methods"]},
            trigger["authLevel"],
        )
    assert found == EXPECTED


def test_import_needs_no_settings_and_loads_no_sdk() -> None:
    """A bad or missing setting must never make the host report "0 functions found".

    Nor does the import load what only some routes use (health's probes, the client page): a cold
    start serving events or negotiate never pays for them.
    """
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("WEBPUBSUB", "NEGOTIATE"))}
    environ["WEBPUBSUB_CREDENTIAL"] = "nonsense"
    code = (
        "import sys, function_app;"
        "heavy = [m for m in ('jwt', 'azure.identity', 'azure.keyvault.secrets', 'azure.messaging.webpubsubservice',"
        " 'azure.core', 'shared.health', 'shared.probes', 'shared.client_page') if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True, cwd=os.getcwd()
    )
    assert result.stdout.strip() == "[]"
