"""Structural checks over the parsed templates: wiring, roles, outputs, diagnostics, hardening."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.templates import (
    AUTH_CLIENT_ID,
    INFRA_DIR,
    MAIN_BICEP,
    PLACEHOLDERS,
    REPO_ROOT,
    Evaluator,
    accessor_path,
    bicep_files,
    function_types,
    module_path,
    parse,
    resources,
    resources_of_type,
    unwrap,
    walk,
)

# Built-in role definitions (see ../shared/reference/infra-notes.md, section 4).
ROLE_NAMES = {
    "12cf5a90-567b-43ae-8102-96cf46c7d9b4": "Web PubSub Service Owner",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# Which module grants which role, and on what.
EXPECTED_ROLE_ASSIGNMENTS = {
    ("webpubsub", "Web PubSub Service Owner", "webPubSub"),
    ("keyvault", "Key Vault Secrets User", "keySecret"),
    ("storage", "Storage Blob Data Owner", "storage"),
    ("monitoring", "Monitoring Metrics Publisher", "appInsights"),
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",  # User Access Administrator
    "8cf5e20a-e4b2-4e9d-b3a1-5ceb692c2761",  # SignalR/Web PubSub Contributor (control plane)
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",  # Key Vault Secrets Officer
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# The product's public routes (docs/architecture), under host.json's route prefix.
EVENT_HANDLER_ROUTE = "eventhandler"
ROUTES_INFRA_KNOWS = {
    "negotiate",
    "eventhandler",
    "health",
    "health/live",
    "client/{*asset}",
    "messages",
    "groups",
    "connections",
    "permissions",
    "groups/{group}/users",
}
AUTH_EXCLUDED = {"/api/eventhandler", "/api/health", "/api/health/live", "/api/client", "/api/client/*"}
# PUBLISH_AUTH=bearer (the default): the publish API checks its callers' tokens itself.
PUBLISH_PATHS = {"/api/messages", "/api/groups", "/api/connections", "/api/permissions"}

SECRET_PROPERTIES = re.compile(r"(?i)(primarykey|secondarykey|connectionstring|instrumentationkey|password|accesskey)")
# siteConfig properties Flex Consumption rejects (ARM error 51021).
FLEX_REJECTED_SITE_CONFIG = {
    "ftpsState",
    "linuxFxVersion",
    "use32BitWorkerProcess",
    "netFrameworkVersion",
    "functionsRuntimeScaleMonitoringEnabled",
    "preWarmedInstanceCount",
    "functionAppScaleLimit",
    "alwaysOn",
}


def main_evaluator(credential: str = "entra", negotiate: str = "appservice", **extra: Any) -> Evaluator:
    parameters = {
        "environmentName": "dev",
        "location": "westeurope",
        "authClientId": AUTH_CLIENT_ID,
        "credentialMode": credential,
        "negotiateAuth": negotiate,
        **extra,
    }
    return Evaluator(parse(MAIN_BICEP), parameters)


def main_module(name: str) -> tuple[Any, dict[str, Any]]:
    return unwrap(parse(MAIN_BICEP)["modules"][name])


def module_param(evaluator: Evaluator, module: str, param: str) -> Any:
    _, body = main_module(module)
    return evaluator.evaluate(body["params"][param])


def only(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (body,) = resources_of_type(template, resource_type)
    return body


# --- the event handler URL and the routes --------------------------------------------------


def declared_routes() -> dict[str, set[str]]:
    """Route -> methods of every @app.route in function_app.py (literal arguments only)."""
    tree = ast.parse((REPO_ROOT / "function_app.py").read_text(encoding="utf-8"))
    routes: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or node.func.attr != "route":
            continue
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        route = keywords.get("route")
        assert isinstance(route, ast.Constant), "function_app.py routes are literals, so infra can check them"
        assert isinstance(route.value, str)
        methods_node = keywords.get("methods")
        methods = set(ast.literal_eval(methods_node)) if methods_node is not None else set()
        routes[route.value] = methods
    return routes


def route_prefix() -> str:
    host = json.loads((REPO_ROOT / "host.json").read_text(encoding="utf-8"))
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return f"/{prefix}" if prefix else ""


def test_the_hub_posts_events_to_the_event_handler_route() -> None:
    url = module_param(main_evaluator(), "hub", "eventHandlerUrl")
    host = PLACEHOLDERS["functionApp.outputs.defaultHostName"]
    assert url == f"https://{host}{route_prefix()}/{EVENT_HANDLER_ROUTE}"


def test_every_route_function_app_declares_is_one_infra_knows() -> None:
    # A renamed route shows up here as unknown, instead of silently breaking the hub's URL.
    routes = declared_routes()
    assert routes, "function_app.py declares no route"
    assert set(routes) - ROUTES_INFRA_KNOWS == set()


def test_routes_infra_points_at_exist_in_function_app() -> None:
    routes = declared_routes()
    assert ROUTES_INFRA_KNOWS - set(routes) == set()
    # The service sends OPTIONS (abuse protection) and POST (events).
    assert {"OPTIONS", "POST"} <= {method.upper() for method in routes[EVENT_HANDLER_ROUTE]}


def test_app_service_authentication_guards_negotiate_and_spares_the_app_checked_paths() -> None:
    evaluator = main_evaluator()
    excluded = module_param(evaluator, "functionApp", "authExcludedPaths")
    assert set(excluded) == AUTH_EXCLUDED | PUBLISH_PATHS
    assert f"{route_prefix()}/negotiate" not in excluded
    assert not any(path.startswith(f"{route_prefix()}/groups/") for path in excluded)  # presence: negotiate's guard
    guarded = module_param(main_evaluator(publishAuth="appservice"), "functionApp", "authExcludedPaths")
    assert set(guarded) == AUTH_EXCLUDED
    assert module_param(evaluator, "functionApp", "enableAppServiceAuth") is True
    assert module_param(main_evaluator(negotiate="bearer"), "functionApp", "enableAppServiceAuth") is False

    auth = only(parse(module_path("function")), "Microsoft.Web/sites/config")
    assert auth["name"] == "authsettingsV2"
    properties = auth["properties"]
    assert properties["platform"]["enabled"] == "enableAppServiceAuth"
    assert properties["globalValidation"]["requireAuthentication"] is True
    assert properties["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    assert properties["globalValidation"]["excludedPaths"] == "authExcludedPaths"
    assert properties["httpSettings"]["requireHttps"] is True
    entra = properties["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True
    assert entra["registration"]["clientId"] == "authClientId"


def auth_settings(**parameters: Any) -> dict[str, Any]:
    """authsettingsV2's properties as deployed, for main.bicep's parameters."""
    evaluator = main_evaluator(**parameters)
    _, module = unwrap(parse(MAIN_BICEP)["modules"]["functionApp"])
    passed = {name: evaluator.evaluate(value) for name, value in module["params"].items() if name != "tags"}
    template = parse(module_path("function"))
    auth = only(template, "Microsoft.Web/sites/config")
    properties: dict[str, Any] = Evaluator(template, passed).evaluate(auth["properties"])
    return properties


def test_app_service_authentication_restricts_callers_only_when_told_to() -> None:
    validation = auth_settings()["identityProviders"]["azureActiveDirectory"]["validation"]
    assert validation["defaultAuthorizationPolicy"] == {}  # no list given: no restriction beyond the audience
    client, user, group = AUTH_CLIENT_ID, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "1e0f9a8b-7c6d-4a3b-8c2d-5e4f9a8b7c6d"
    restricted = auth_settings(
        authAllowedClientApplications=[client], authAllowedPrincipalIds=[user], authAllowedGroupIds=[group]
    )
    policy = restricted["identityProviders"]["azureActiveDirectory"]["validation"]["defaultAuthorizationPolicy"]
    assert policy == {"allowedApplications": [client], "allowedPrincipals": {"identities": [user], "groups": [group]}}
    # The event handler stays outside App Service Authentication, so the policy never stops the service.
    assert "/api/eventhandler" in restricted["globalValidation"]["excludedPaths"]


# --- Web PubSub and its hub -----------------------------------------------------------------


@pytest.mark.parametrize(("credential", "resource"), [("entra", AUTH_CLIENT_ID), ("keyvault", "")])
def test_hub_upstream_auth_follows_the_credential_mode(credential: str, resource: str) -> None:
    upstream = module_param(main_evaluator(credential), "hub", "upstreamAuthResource")
    assert upstream == resource

    template = parse(module_path("hub"))
    hub = only(template, "Microsoft.SignalRService/webPubSub/hubs")
    (handler,) = hub["properties"]["eventHandlers"]
    auth = Evaluator(template, {"upstreamAuthResource": upstream}).evaluate(handler["auth"])
    if credential == "entra":
        assert auth == {"type": "ManagedIdentity", "managedIdentity": {"resource": AUTH_CLIENT_ID}}
    else:
        assert auth == {"type": "None"}


def test_the_event_handler_audience_is_the_resource_the_service_requests() -> None:
    evaluator = main_evaluator("entra")
    settings = {entry["name"]: entry["value"] for entry in module_param(evaluator, "functionApp", "appSettings")}
    assert settings["EVENTHANDLER_BEARER_AUDIENCE"] == module_param(evaluator, "hub", "upstreamAuthResource")


def test_hub_denies_anonymous_clients_and_forwards_every_event() -> None:
    hub = only(parse(module_path("hub")), "Microsoft.SignalRService/webPubSub/hubs")
    properties = hub["properties"]
    assert properties["anonymousConnectPolicy"] == "deny"
    (handler,) = properties["eventHandlers"]
    assert handler["urlTemplate"] == "eventHandlerUrl"
    assert handler["userEventPattern"] == "*"
    assert set(handler["systemEvents"]) == {"connect", "connected", "disconnected"}


@pytest.mark.parametrize(
    ("sku", "tier"), [("Standard_S1", "Standard"), ("Premium_P1", "Premium"), ("Premium_P2", "Premium")]
)
def test_the_web_pubsub_sku_is_a_parameter(sku: str, tier: str) -> None:
    assert module_param(main_evaluator(webPubSubSku=sku), "webPubSub", "skuName") == sku
    template = parse(module_path("webpubsub"))
    service = only(template, "Microsoft.SignalRService/webPubSub")
    evaluated = Evaluator(template, {"skuName": sku, "capacity": 2}).evaluate(service["sku"])
    assert evaluated == {"name": sku, "tier": tier, "capacity": 2}


def test_free_web_pubsub_is_not_offered() -> None:
    # Free_F1 has no SLA, no network ACLs and no private endpoints.
    for template, name in ((parse(MAIN_BICEP), "webPubSubSku"), (parse(module_path("webpubsub")), "skuName")):
        decorators = template["parameters"][name]["decorators"]
        (allowed,) = [d["argument"] for d in decorators if d["type"] == "allowed"]
        assert set(allowed) == {"Standard_S1", "Premium_P1", "Premium_P2"}


def test_the_app_trusts_the_identity_and_host_of_the_web_pubsub_it_deploys() -> None:
    # EVENTHANDLER_BEARER_PRINCIPAL_ID and WEBPUBSUB_ENDPOINT come from these outputs.
    outputs = parse(module_path("webpubsub"))["outputs"]
    assert accessor_path(outputs["principalId"]["value"]) == "webPubSub.identity.principalId"
    assert accessor_path(outputs["hostName"]["value"]) == "webPubSub.properties.hostName"


@pytest.mark.parametrize(("credential", "local_auth_disabled"), [("entra", True), ("keyvault", False)])
def test_entra_mode_turns_access_keys_off(credential: str, local_auth_disabled: bool) -> None:
    assert module_param(main_evaluator(credential), "webPubSub", "disableLocalAuth") is local_auth_disabled
    service = only(parse(module_path("webpubsub")), "Microsoft.SignalRService/webPubSub")
    assert service["properties"]["disableLocalAuth"] == "disableLocalAuth"
    assert service["properties"]["disableAadAuth"] is False
    assert service["identity"]["type"] == "SystemAssigned"


def test_private_networking_leaves_only_client_connections_public() -> None:
    template = parse(module_path("webpubsub"))
    service = only(template, "Microsoft.SignalRService/webPubSub")
    private = Evaluator(template, {"restrictPublicNetwork": True}).evaluate(service["properties"]["networkACLs"])
    assert private["publicNetwork"]["allow"] == ["ClientConnection"]
    assert set(private["publicNetwork"]["deny"]) == {"ServerConnection", "RESTAPI", "Trace"}
    public = Evaluator(template, {"restrictPublicNetwork": False}).evaluate(service["properties"]["networkACLs"])
    assert "ClientConnection" in public["publicNetwork"]["allow"]

    evaluator = main_evaluator(privateNetworking=True)
    assert module_param(evaluator, "webPubSub", "restrictPublicNetwork") is True
    assert module_param(evaluator, "webPubSubEndpoint", "groupId") == "webpubsub"
    assert module_param(evaluator, "webPubSubEndpoint", "privateDnsZoneName") == "privatelink.webpubsub.azure.com"
    assert module_param(evaluator, "functionApp", "appSubnetId") == PLACEHOLDERS["network.outputs.appSubnetId"]
    assert module_param(main_evaluator(), "functionApp", "appSubnetId") == ""


def test_private_endpoints_use_the_private_dns_zones_of_their_services() -> None:
    evaluator = main_evaluator("keyvault", privateNetworking=True)
    zones = {
        name: (module_param(evaluator, name, "groupId"), module_param(evaluator, name, "privateDnsZoneName"))
        for name in ("webPubSubEndpoint", "keyVaultEndpoint")
    }
    assert zones["webPubSubEndpoint"] == ("webpubsub", "privatelink.webpubsub.azure.com")
    assert zones["keyVaultEndpoint"] == ("vault", "privatelink.vaultcore.azure.net")
    assert module_param(evaluator, "storageEndpoint", "groupId") == "blob"
    # environment().suffixes.storage keeps the zone right in every cloud.
    _, storage_endpoint = main_module("storageEndpoint")
    assert storage_endpoint["params"]["privateDnsZoneName"] == "privatelink.blob.${environment().suffixes.storage}"


def test_the_app_subnet_is_delegated_to_flex_consumption() -> None:
    template = parse(module_path("network"))
    vnet = only(template, "Microsoft.Network/virtualNetworks")
    subnets = {subnet["name"]: subnet["properties"] for subnet in vnet["properties"]["subnets"]}
    (delegation,) = subnets["snet-app"]["delegations"]
    assert delegation["properties"]["serviceName"] == "Microsoft.App/environments"
    assert "delegations" not in subnets["snet-private-endpoints"]
    assert template["outputs"]["appSubnetId"]["value"] == "${vnet.id}/subnets/snet-app"


@pytest.mark.parametrize("credential", ["entra", "keyvault"])
@pytest.mark.parametrize("private", [True, False])
def test_private_endpoints_exist_for_what_the_app_reaches_privately(credential: str, private: bool) -> None:
    evaluator = main_evaluator(credential, privateNetworking=private)
    expected = {
        "network": private,
        "webPubSubEndpoint": private,
        "storageEndpoint": private,
        "keyVaultEndpoint": private and credential == "keyvault",
    }
    deployed = {name: evaluator.evaluate(main_module(name)[0]) for name in expected}
    assert deployed == expected
    assert module_param(evaluator, "storage", "privateNetworking") is private
    if credential == "keyvault":
        access = module_param(evaluator, "keyVault", "publicNetworkAccess")
        assert access == ("Disabled" if private else "Enabled")
        vault = only(parse(module_path("keyvault")), "Microsoft.KeyVault/vaults")
        acls = Evaluator(parse(module_path("keyvault")), {"publicNetworkAccess": access}).evaluate(
            vault["properties"]["networkAcls"]["defaultAction"]
        )
        assert acls == ("Deny" if private else "Allow")


# --- roles ----------------------------------------------------------------------------------


def role_assignments() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(module, role GUID, scope symbol, body) for every role assignment in infra/."""
    found = []
    for path in bicep_files():
        template = parse(path)
        variables = template.get("variables", {})
        for body in resources_of_type(template, "Microsoft.Authorization/roleAssignments"):
            definition = body["properties"]["roleDefinitionId"]["function"]
            assert definition["type"] == "subscription_resource_id"
            assert definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role = variables[definition["parameters"]["resource_name_1"]]["value"]
            found.append((path.stem, role, body["scope"], body))
    return found


def test_role_assignments_grant_exactly_the_expected_built_in_roles() -> None:
    granted = {(module, ROLE_NAMES.get(role, role), scope) for module, role, scope, _ in role_assignments()}
    assert granted == EXPECTED_ROLE_ASSIGNMENTS


def test_role_assignments_are_named_with_guid_and_target_service_principals() -> None:
    for module, _, scope, body in role_assignments():
        assert body["name"]["function"]["type"] == "guid", module
        assert body["properties"]["principalType"] == "ServicePrincipal", module
        # The name covers the scope, the principal and the role, so it is stable and unique.
        name_parts = body["name"]["function"]["parameters"]
        assert accessor_path(name_parts["base_string"]) == f"{scope}.id", module


@pytest.mark.parametrize("credential", ["entra", "keyvault"])
def test_every_role_goes_to_the_identity_the_app_runs_as(credential: str) -> None:
    evaluator = main_evaluator(credential)
    app_identity = PLACEHOLDERS["identity.outputs.principalId"]
    assert module_param(evaluator, "functionApp", "identityId") == PLACEHOLDERS["identity.outputs.id"]
    assert module_param(evaluator, "storage", "blobDataOwnerPrincipalId") == app_identity
    assert module_param(evaluator, "monitoring", "metricsPublisherPrincipalId") == app_identity
    if credential == "keyvault":
        assert module_param(evaluator, "keyVault", "secretReaderPrincipalId") == app_identity
    for _, _, _, body in role_assignments():
        assert body["properties"]["principalId"].endswith("PrincipalId")


def test_no_broad_role_appears_anywhere() -> None:
    for path in bicep_files():
        text = path.read_text(encoding="utf-8").lower()
        assert {guid for guid in GUID.findall(text)} & BROAD_ROLES == set(), path.name


@pytest.mark.parametrize(("credential", "granted"), [("entra", True), ("keyvault", False)])
def test_service_owner_is_granted_only_in_entra_mode(credential: str, granted: bool) -> None:
    principal = module_param(main_evaluator(credential), "webPubSub", "serviceOwnerPrincipalId")
    assert (principal == PLACEHOLDERS["identity.outputs.principalId"]) is granted
    assert (principal == "") is not granted


@pytest.mark.parametrize(("credential", "deployed"), [("entra", False), ("keyvault", True)])
def test_key_vault_exists_only_in_keyvault_mode(credential: str, deployed: bool) -> None:
    condition, _ = main_module("keyVault")
    assert main_evaluator(credential).evaluate(condition) is deployed


# --- outputs hold no secret -----------------------------------------------------------------


def test_no_output_exposes_a_secret() -> None:
    for path in bicep_files():
        for name, output in parse(path).get("outputs", {}).items():
            assert not any(kind.startswith("list") for kind in function_types(output)), (path.name, name)
            assert not any(d["type"] == "secure" for d in output.get("decorators", [])), (path.name, name)
            for node in walk(output.get("value")):
                if isinstance(node, str):
                    assert not SECRET_PROPERTIES.search(node), (path.name, name, node)


def test_the_access_key_is_read_only_into_the_key_vault_secret() -> None:
    for path in bicep_files():
        template = parse(path)
        for name, kind, body in resources(template):
            uses_keys = "listkeys" in function_types(body)
            assert uses_keys == (path.stem == "keyvault" and kind == "Microsoft.KeyVault/vaults/secrets"), name
        assert "listkeys" not in function_types(template.get("variables", {})), path.name
        assert "listkeys" not in function_types(template.get("modules", {})), path.name


def test_main_outputs_what_azd_and_the_docs_use() -> None:
    outputs = parse(MAIN_BICEP)["outputs"]
    assert {"AZURE_FUNCTION_APP_NAME", "SERVICE_API_NAME", "NEGOTIATE_URL", "WEBPUBSUB_HOST_NAME"} <= set(outputs)
    evaluator = main_evaluator()
    host = PLACEHOLDERS["functionApp.outputs.defaultHostName"]
    assert evaluator.evaluate(outputs["NEGOTIATE_URL"]["value"]) == f"https://{host}{route_prefix()}/negotiate"
    assert evaluator.evaluate(outputs["AZURE_FUNCTION_APP_NAME"]["value"]) == PLACEHOLDERS["functionApp.outputs.name"]
    assert evaluator.evaluate(outputs["SERVICE_API_NAME"]["value"]) == PLACEHOLDERS["functionApp.outputs.name"]
    assert evaluator.evaluate(outputs["WEBPUBSUB_HOST_NAME"]["value"]) == PLACEHOLDERS["webPubSub.outputs.hostName"]
    assert evaluator.evaluate(outputs["KEYVAULT_NAME"]["value"]) == ""
    vault = main_evaluator("keyvault").evaluate(outputs["KEYVAULT_NAME"]["value"])
    assert vault == PLACEHOLDERS["keyVault.outputs.name"]
    assert evaluator.evaluate(outputs["HEALTH_URL"]["value"]) == f"https://{host}{route_prefix()}/health"


# --- diagnostics ----------------------------------------------------------------------------


def diagnostic_categories(module: str) -> set[str]:
    template = parse(module_path(module))
    (setting,) = resources_of_type(template, "Microsoft.Insights/diagnosticSettings")
    assert setting["properties"]["workspaceId"] == "logAnalyticsWorkspaceId"
    return {log.get("category") or log.get("categoryGroup") for log in setting["properties"]["logs"] if log["enabled"]}


def test_web_pubsub_resource_logs_go_to_log_analytics() -> None:
    assert diagnostic_categories("webpubsub") == {"ConnectivityLogs", "MessagingLogs", "HttpRequestLogs"}
    service = only(parse(module_path("webpubsub")), "Microsoft.SignalRService/webPubSub")
    categories = service["properties"]["resourceLogConfiguration"]["categories"]
    assert {c["name"] for c in categories if c["enabled"] == "true"} == {"ConnectivityLogs", "MessagingLogs"}


def test_function_app_storage_and_key_vault_logs_go_to_log_analytics() -> None:
    assert diagnostic_categories("function") == {"FunctionAppLogs", "AppServiceAuthenticationLogs"}
    assert diagnostic_categories("keyvault") == {"audit"}
    assert diagnostic_categories("storage") == {"StorageRead", "StorageWrite", "StorageDelete"}
    (blobs,) = resources_of_type(parse(module_path("storage")), "Microsoft.Insights/diagnosticSettings")
    assert blobs["scope"] == "blobService"
    assert (
        module_param(main_evaluator(), "storage", "logAnalyticsWorkspaceId")
        == (PLACEHOLDERS["monitoring.outputs.workspaceId"])
    )


def test_alerts_watch_closes_by_category_server_load_and_aborted_connections() -> None:
    template = parse(module_path("alerts"))
    variables = template["variables"]
    metric_alerts = resources_of_type(template, "Microsoft.Insights/metricAlerts")
    criteria = {alert["properties"]["criteria"]["allOf"][0]["metricName"]: alert for alert in metric_alerts}
    assert set(criteria) == {"ConnectionCloseCount", "ServerLoad"}

    (dimension,) = criteria["ConnectionCloseCount"]["properties"]["criteria"]["allOf"][0]["dimensions"]
    assert dimension["name"] == "ConnectionCloseCategory"
    assert dimension["operator"] == "Include"
    categories = variables[dimension["values"]]["value"]
    assert set(categories) == {"Unauthorized", "EventHandlerNotFound", "SendEventFailed", "Throttled"}

    (log_alert,) = resources_of_type(template, "Microsoft.Insights/scheduledQueryRules")
    query = variables[log_alert["properties"]["criteria"]["allOf"][0]["query"]]["value"]
    assert query.startswith("WebPubSubConnectivity")
    assert "ConnectionAborted" in query
    assert log_alert["properties"]["scopes"] == ["logAnalyticsWorkspaceId"]
    # The table does not exist until the first log arrives; validation would fail the deployment.
    assert log_alert["properties"]["skipQueryValidation"] is True


# --- hardening ------------------------------------------------------------------------------


def test_function_app_is_https_only_with_publishing_credentials_off() -> None:
    template = parse(module_path("function"))
    site = only(template, "Microsoft.Web/sites")
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    assert set(properties["siteConfig"]) & FLEX_REJECTED_SITE_CONFIG == set()
    assert site["identity"]["type"] == "UserAssigned"
    storage = properties["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert "'azd-service-name': 'api'" in (INFRA_DIR / "modules" / "function.bicep").read_text(encoding="utf-8")

    policies = {
        body["name"]: body["properties"]["allow"]
        for body in resources_of_type(template, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    }
    assert policies == {"ftp": False, "scm": False}


def test_cors_origins_come_from_the_parameter() -> None:
    origins = "https://chat.example.com, https://admin.example.com"
    evaluator = main_evaluator(corsAllowedOrigins=origins)
    expected = ["https://chat.example.com", "https://admin.example.com"]
    assert module_param(evaluator, "functionApp", "corsAllowedOrigins") == expected
    assert module_param(main_evaluator(), "functionApp", "corsAllowedOrigins") == []
    sloppy = main_evaluator(corsAllowedOrigins=" https://chat.example.com,, https://admin.example.com , ")
    assert module_param(sloppy, "functionApp", "corsAllowedOrigins") == expected
    site = only(parse(module_path("function")), "Microsoft.Web/sites")
    assert site["properties"]["siteConfig"]["cors"] == {
        "allowedOrigins": "corsAllowedOrigins",
        "supportCredentials": False,
    }


def test_storage_takes_entra_tokens_only() -> None:
    storage = only(parse(module_path("storage")), "Microsoft.Storage/storageAccounts")
    properties = storage["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    vault = only(parse(module_path("keyvault")), "Microsoft.KeyVault/vaults")
    properties = vault["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    secret = only(parse(module_path("keyvault")), "Microsoft.KeyVault/vaults/secrets")
    assert secret["properties"]["attributes"]["exp"] == "secretExpiresOn"


def test_monitoring_accepts_entra_authenticated_telemetry_only() -> None:
    template = parse(module_path("monitoring"))
    assert only(template, "Microsoft.Insights/components")["properties"]["DisableLocalAuth"] is True
    workspace = only(template, "Microsoft.OperationalInsights/workspaces")
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


# --- deployment plumbing --------------------------------------------------------------------


def test_modules_are_local_files() -> None:
    for path in bicep_files():
        for name, module in parse(path).get("modules", {}).items():
            assert module["type"] == "local", f"{path.name}: module {name} is not a local file"
            assert (path.parent / module["detail"]["path"]).is_file(), name
        assert "br/public:" not in path.read_text(encoding="utf-8")
        assert "br:" not in path.read_text(encoding="utf-8")


def test_the_parameters_file_matches_main_bicep() -> None:
    document = json.loads((INFRA_DIR / "main.parameters.json").read_text(encoding="utf-8"))
    given = document["parameters"]
    declared = parse(MAIN_BICEP)["parameters"]
    assert set(given) - set(declared) == set()
    required = {name for name, spec in declared.items() if "default" not in spec or spec["default"] is None}
    assert required - set(given) == set()
    for name, entry in given.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", entry["value"]), name


def test_azure_yaml_deploys_this_folder_as_a_python_function() -> None:
    text = (REPO_ROOT / "azure.yaml").read_text(encoding="utf-8")
    service = text.split("services:", 1)[1]
    fields = dict(re.findall(r"^\s{4}(\w+):\s*(\S+)\s*$", service, flags=re.MULTILINE))
    assert re.search(r"^\s{2}api:\s*$", service, flags=re.MULTILINE)
    assert fields == {"project": ".", "language": "python", "host": "function"}


def test_infra_is_not_deployed_with_the_code() -> None:
    ignored = Path(REPO_ROOT / ".funcignore").read_text(encoding="utf-8").split()
    assert "infra" in ignored or "infra/" in ignored
