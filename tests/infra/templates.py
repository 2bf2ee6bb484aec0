"""Reading the Bicep templates in infra/ for the structural tests.

Templates are parsed with pycep-parser 0.5.1, the parser checkov pins, so a template these tests
can read is one checkov can scan. pycep turns a template into nested dicts; `Evaluator` computes
the values that matter (app settings, module parameters) for a chosen set of parameters, with
realistic placeholders standing in for values only Azure knows (host names, client ids).

Its reach is deliberately small: an expression it does not understand raises `Unsupported`,
so a template change that outgrows it fails a test instead of being skipped over.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
MAIN_BICEP = INFRA_DIR / "main.bicep"

# Values Azure assigns at deployment time, as the app would see them.
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
_RG = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-dev/providers"
PLACEHOLDERS: Mapping[str, Any] = {
    "webPubSub.outputs.hostName": "wps-abc123.webpubsub.azure.com",
    "webPubSub.outputs.name": "wps-abc123",
    "webPubSub.outputs.id": f"{_RG}/Microsoft.SignalRService/webPubSub/wps-abc123",
    "webPubSub.outputs.principalId": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
    "identity.outputs.clientId": "3f1b6a52-0c8e-4a51-9d0e-6a3c2b9e4f10",
    "identity.outputs.principalId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "identity.outputs.id": f"{_RG}/Microsoft.ManagedIdentity/userAssignedIdentities/id-abc123",
    "keyVault.outputs.uri": "https://kv-abc123.vault.azure.net/",
    "keyVault.outputs.name": "kv-abc123",
    "keyVault.outputs.id": f"{_RG}/Microsoft.KeyVault/vaults/kv-abc123",
    # New apps get a unique regional host name, not <app name>.azurewebsites.net: a URL built
    # from the app's name instead of site.properties.defaultHostName shows up as a mismatch.
    "functionApp.outputs.defaultHostName": "func-abc123-d4e5f6a7b8c9d0e1.westeurope-01.azurewebsites.net",
    "functionApp.outputs.name": "func-abc123",
    "hub.outputs.names": ["chat"],
    "rg.name": "rg-dev",
    "network.outputs.id": f"{_RG}/Microsoft.Network/virtualNetworks/vnet-abc123",
    "network.outputs.appSubnetId": f"{_RG}/Microsoft.Network/virtualNetworks/vnet-abc123/subnets/snet-app",
    "network.outputs.privateEndpointSubnetId": (
        f"{_RG}/Microsoft.Network/virtualNetworks/vnet-abc123/subnets/snet-private-endpoints"
    ),
    "monitoring.outputs.workspaceId": f"{_RG}/Microsoft.OperationalInsights/workspaces/log-abc123",
    "monitoring.outputs.appInsightsName": "appi-abc123",
    "storage.outputs.name": "stabc123",
    "storage.outputs.id": f"{_RG}/Microsoft.Storage/storageAccounts/stabc123",
    "storage.outputs.deploymentContainerName": "app-package-abc123",
    # Inside modules/function.bicep: properties of the existing storage account and component.
    "storage.properties.primaryEndpoints.blob": "https://stabc123.blob.core.windows.net/",
    "appInsights.properties.ConnectionString": (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"
    ),
    # uniqueString() of the subscription, environment and region.
    "resourceToken": "abc123",
    # environment().authentication.loginEndpoint in Azure's public cloud.
    "loginEndpoint": "https://login.microsoftonline.com/",
}
# An Entra app registration client id, as an operator passes it in authClientId.
AUTH_CLIENT_ID = "0d5e3c1a-7b2f-4e8d-9a6c-5b4f3e2d1c0b"

INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class Unsupported(Exception):
    """The evaluator met an expression it does not model."""


def bicep_files() -> list[Path]:
    return sorted(INFRA_DIR.rglob("*.bicep"))


@functools.cache
def parser() -> BicepParser:
    """One parser for the session: building its grammar takes longer than a parse."""
    return BicepParser()


def parse_text(text: str) -> dict[str, Any]:
    return cast("dict[str, Any]", parser().parse(text=text))


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep JSON of one template, parsed once per session."""
    return parse_text(path.read_text(encoding="utf-8"))


def module_path(name: str) -> Path:
    return INFRA_DIR / "modules" / f"{name}.bicep"


def unwrap(block: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(condition or None, body) of a resource or module; pycep nests conditional ones."""
    config = cast("dict[str, Any]", block["config"])
    if ("condition" in config or "loop_type" in config) and isinstance(config.get("config"), dict):
        return config.get("condition"), cast("dict[str, Any]", config["config"])  # a loop's body is per item
    return None, config


def resources(template: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(symbolic name, resource type, body) for every resource of a template."""
    for name, block in template.get("resources", {}).items():
        _, body = unwrap(block)
        yield name, block["type"], body


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [body for _, kind, body in resources(template) if kind.lower() == resource_type.lower()]


def walk(node: Any) -> Iterator[Any]:
    """Every node of a pycep expression tree, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def function_types(node: Any) -> set[str]:
    """Lower-case names, without underscores, of every function called inside `node`.

    Covers plain calls (pycep: {"function": {"type": "list_keys"}}) and resource methods
    (`wps.listKeys()`, pycep: a "function_accessor" operator), so both read as "listkeys".
    """
    found: set[str] = set()
    for item in walk(node):
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("function"), dict):
            found.add(str(item["function"].get("type")).replace("_", "").lower())
        operator = item.get("operator")
        if isinstance(operator, dict) and operator.get("type") == "function_accessor":
            found.add(str(operator["operands"]["func_name"]).replace("_", "").lower())
    return found


def accessor_path(node: Any) -> str | None:
    """`a.b.c` for a chain of property accessors over plain names, else None."""
    if isinstance(node, str):
        return node if IDENTIFIER.fullmatch(node) else None
    if isinstance(node, dict) and isinstance(node.get("operator"), dict):
        operator = node["operator"]
        if operator.get("type") == "property_accessor":
            left = accessor_path(operator["operands"]["operand_1"])
            right = accessor_path(operator["operands"]["operand_2"])
            if left is not None and right is not None:
                return f"{left}.{right}"
    return None


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, Any]:
    """Literal defaults of a template's parameters (expressions such as utcNow() are left out)."""
    defaults: dict[str, Any] = {}
    for name, spec in template.get("parameters", {}).items():
        default = spec.get("default")
        if default is not None and not isinstance(default, dict):
            defaults[name] = default
    return defaults


class Evaluator:
    """Computes Bicep expressions of one template for given parameter values."""

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, Any],
        placeholders: Mapping[str, Any] = PLACEHOLDERS,
    ):
        self._variables = cast("dict[str, Any]", template.get("variables", {}))
        self._parameters = {**parameter_defaults(template), **parameters}
        self._placeholders = placeholders
        self._lambda_arguments: dict[str, Any] = {}  # the element a lambda (filter) is looking at

    def variable(self, name: str) -> Any:
        return self.evaluate(self._variables[name]["value"])

    def evaluate(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float):
            return node
        if isinstance(node, str):
            return self._name_or_text(node)
        if isinstance(node, list):
            return [self.evaluate(item) for item in node]
        if isinstance(node, dict):
            if isinstance(node.get("operator"), dict) and len(node) == 1:
                return self._operator(node)
            if isinstance(node.get("function"), dict) and len(node) == 1:
                return self._function(node["function"])
            return {key: self.evaluate(value) for key, value in node.items()}
        raise Unsupported(repr(node))

    def _name_or_text(self, text: str) -> Any:
        # pycep spells an identifier and a string literal the same way; a name wins.
        if text in self._lambda_arguments:
            return self._lambda_arguments[text]
        if text in self._placeholders:
            return self._placeholders[text]
        if text in self._parameters:
            return self._parameters[text]
        if text in self._variables:
            return self.variable(text)
        return INTERPOLATION.sub(lambda match: self._stringify(self._expression_text(match.group(1))), text)

    def _expression_text(self, text: str) -> Any:
        text = text.strip()
        if IDENTIFIER.fullmatch(text):
            if text in self._placeholders or text in self._parameters or text in self._variables:
                return self._name_or_text(text)
            raise Unsupported(f"unknown name {text!r}")
        if DOTTED.fullmatch(text):
            return self._path(text)
        raise Unsupported(f"interpolation {text!r}")

    def _path(self, path: str) -> Any:
        if path in self._placeholders:
            return self._placeholders[path]
        head, _, rest = path.partition(".")
        if head in self._parameters or head in self._variables:
            value = self._name_or_text(head)
            for part in rest.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise Unsupported(f"property {path!r}")
                value = value[part]
            return value
        raise Unsupported(f"no placeholder for {path!r}")

    @staticmethod
    def _stringify(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int):
            return str(value)
        raise Unsupported(f"cannot interpolate {value!r}")

    def _operator(self, node: Mapping[str, Any]) -> Any:
        operator = node["operator"]
        kind = operator["type"]
        operands = operator["operands"]
        if kind == "property_accessor":
            path = accessor_path(node)
            if path is None:
                raise Unsupported(f"property access {node!r}")
            return self._path(path)
        if kind == "conditional":
            branch = "true_value" if self._truth(operands["condition"]) else "false_value"
            return self.evaluate(operands[branch])
        if kind == "equals":
            return self.evaluate(operands["operand_1"]) == self.evaluate(operands["operand_2"])
        if kind == "not_equals":
            return self.evaluate(operands["operand_1"]) != self.evaluate(operands["operand_2"])
        if kind == "and":
            return self._truth(operands["operand_1"]) and self._truth(operands["operand_2"])
        if kind == "or":
            return self._truth(operands["operand_1"]) or self._truth(operands["operand_2"])
        if kind == "not":
            return not self._truth(operands["bool_value"])
        raise Unsupported(f"operator {kind!r}")

    def _truth(self, node: Any) -> bool:
        value = self.evaluate(node)
        if not isinstance(value, bool):
            raise Unsupported(f"condition is not a bool: {value!r}")
        return value

    def _function(self, function: Mapping[str, Any]) -> Any:
        value = self._call(function)
        # pycep folds a trailing `[n]` into the call (split(x, '_')[0]).
        if "index" in function:
            index = self.evaluate(function["index"])
            if not isinstance(value, list) or not isinstance(index, int):
                raise Unsupported(f"index {index!r} of {value!r}")
            return value[index]
        return value

    def _call(self, function: Mapping[str, Any]) -> Any:
        kind = function["type"]
        arguments = function.get("parameters") or {}
        if kind == "tenant" and "tenantId" in str(function.get("property_name")):
            return TENANT_ID
        if kind == "string":
            return self._stringify(self.evaluate(arguments["value_to_convert"]))
        if kind == "empty":
            value = self.evaluate(arguments["item_to_test"])
            return value is None or len(value) == 0
        if kind == "concat":
            values = [self.evaluate(value) for value in arguments.values()]
            if all(isinstance(value, list) for value in values):
                return [item for value in values for item in value]
            return "".join(self._stringify(value) for value in values)
        if kind == "replace":
            text, old, new = (
                str(self.evaluate(arguments[name])) for name in ("original_string", "old_string", "new_string")
            )
            return text.replace(old, new)
        if kind in {"max", "min"}:
            numbers = [self.evaluate(value) for value in arguments.values()]
            if not all(isinstance(number, int) for number in numbers):
                raise Unsupported(f"{kind} over {numbers!r}")
            return max(numbers) if kind == "max" else min(numbers)
        if kind == "join":
            items = self.evaluate(arguments["input_array"])
            if not isinstance(items, list):
                raise Unsupported(f"join over {items!r}")
            return str(self.evaluate(arguments["delimiter"])).join(self._stringify(item) for item in items)
        if kind == "split":
            return str(self.evaluate(arguments["input_string"])).split(str(self.evaluate(arguments["delimiter"])))
        if kind == "filter":
            items = self.evaluate(arguments["input_array"])
            if not isinstance(items, list):
                raise Unsupported(f"filter over {items!r}")
            return [
                item for item in items if self._holds_for(arguments["input_element"], item, arguments["expression"])
            ]
        raise Unsupported(f"function {kind!r}")

    def _holds_for(self, name: str, value: Any, expression: Any) -> bool:
        outer = self._lambda_arguments
        self._lambda_arguments = {**outer, name: value}
        try:
            return self._truth(expression)
        finally:
            self._lambda_arguments = outer


def settings_environ(settings: Any) -> dict[str, str]:
    """An app-settings array ([{name, value}]) as the environment the app reads."""
    assert isinstance(settings, list), settings
    environ: dict[str, str] = {}
    for entry in settings:
        name, value = entry["name"], entry["value"]
        assert name not in environ, f"app setting {name} is set twice"
        assert isinstance(value, str), f"app setting {name} is not a string: {value!r}"
        environ[name] = value
    return environ
