// Deploys the Web PubSub serverless backend: a Python Function App on Flex Consumption in front
// of Azure Web PubSub, with identity-based storage and telemetry, App Service Authentication for
// negotiate, diagnostics, alerts and an optional private network. Subscription scope, as azd
// expects: the deployment creates its own resource group.
//
// Credential modes (credentialMode, WEBPUBSUB_CREDENTIAL in the app):
//   entra    (default) no keys anywhere: Web PubSub local auth is off, the app's identity holds
//            Web PubSub Service Owner, and the service authenticates event-handler calls with a
//            managed-identity token for the app registration (EVENTHANDLER_AUTH=bearer).
//   keyvault the access key lives in Key Vault only; the app reads it with its identity and checks
//            the ce-signature of every event (EVENTHANDLER_AUTH=signature).

targetScope = 'subscription'

@description('Name of the environment (azd AZURE_ENV_NAME); it seeds every resource name.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of every resource; it must offer Flex Consumption.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create; empty means rg-<environmentName>.')
param resourceGroupName string = ''

@description('How the app authenticates to Web PubSub: entra (managed identity, no keys) or keyvault (access key held in Key Vault).')
@allowed([
  'entra'
  'keyvault'
])
param credentialMode string = 'entra'

@description('Client id of the Entra app registration: App Service Authentication validates tokens for it, and in entra mode Web PubSub requests its event-handler tokens for it.')
@minLength(36)
@maxLength(36)
param authClientId string

@description('How negotiate identifies the caller: appservice (App Service Authentication) or bearer (the app validates a JWT itself).')
@allowed([
  'appservice'
  'bearer'
])
param negotiateAuth string = 'appservice'

@description('Issuer negotiate accepts in bearer mode; empty means the Entra v1 issuer of this tenant.')
param negotiateBearerIssuer string = ''

@description('Audience negotiate accepts in bearer mode; empty means api://<authClientId>.')
param negotiateBearerAudience string = ''

@description('JWKS URI for negotiate bearer tokens; empty means the Entra signing keys for the default issuer, or discovery from a custom issuer.')
param negotiateBearerJwksUri string = ''

@description('Bearer mode: also accept app-only tokens (service principals, managed identities) as negotiate callers; by default only tokens of signed-in users pass.')
param negotiateBearerAllowAppTokens bool = false

@description('Comma-separated groups negotiate lets clients join and send to.')
param negotiateGroups string = 'chat'

@description('Lifetime of client access tokens, in minutes.')
@minValue(1)
@maxValue(1440)
param tokenLifetimeMinutes int = 60

@description('Name of the Web PubSub hub; negotiate issues for it unless a client names another served hub.')
param hubName string = 'chat'

@description('More hubs the same app serves beside hubName (e.g. [\'notifications\']), each with the same event handler and auth.')
param additionalHubNames array = []

// Every hub the app serves: a hub resource each, all listed in WEBPUBSUB_HUBS (space-separated,
// because a hub name may contain a comma).
var hubNames = concat([hubName], additionalHubNames)

@description('Web PubSub SKU.')
@allowed([
  'Standard_S1'
  'Premium_P1'
  'Premium_P2'
])
param webPubSubSku string = 'Standard_S1'

@description('Web PubSub units.')
@minValue(1)
@maxValue(1000)
param webPubSubCapacity int = 1

@description('appservice mode: client ids of the applications allowed to call negotiate (App Service Authentication checks the token\'s appid/azp); empty allows any application of the tenant. List authClientId too if browsers sign in through /.auth/login/aad.')
param authAllowedClientApplications array = []

@description('appservice mode: object ids of the users (or service principals) allowed to call negotiate; empty allows every principal of the tenant.')
param authAllowedPrincipalIds array = []

@description('appservice mode: object ids of the groups whose members may call negotiate; empty means no group requirement.')
param authAllowedGroupIds array = []

@description('Comma-separated browser origins allowed to call the app (CORS), for example https://chat.example.com.')
param corsAllowedOrigins string = ''

@description('Serve the demo page at /api/client.')
param clientPageEnabled bool = true

@description('Who may call the publish API (/api/messages, /api/groups, /api/connections, /api/permissions): bearer, an Entra ID access token the app validates; appservice, App Service Authentication (requires negotiateAuth appservice). Either way the caller must hold the app role publishRole.')
@allowed([
  'bearer'
  'appservice'
])
param publishAuth string = 'bearer'

@description('Issuer the publish API accepts in bearer mode; empty means this tenant\'s v1 issuer (https://sts.windows.net/<tenant>/).')
param publishBearerIssuer string = ''

@description('Audience the publish API accepts in bearer mode; empty means api://<authClientId>.')
param publishBearerAudience string = ''

@description('The app role (in the token\'s roles claim) a publish API caller must hold; define it on the app registration.')
param publishRole string = 'WebPubSub.Publish'

@description('Private networking: VNet integration for the app, private endpoints for Web PubSub, storage and Key Vault; Web PubSub keeps only client connections public.')
param privateNetworking bool = false

@description('keyvault mode: seconds the app caches the access key read from Key Vault.')
@minValue(5)
@maxValue(86400)
param keyVaultRefreshSeconds int = 300

@description('keyvault mode: name of the secret that holds the access key.')
param keyVaultSecretName string = 'webpubsub-access-key'

@description('keyvault mode: days until the secret expires; every deployment renews the expiry.')
@minValue(1)
@maxValue(730)
param keyVaultSecretLifetimeDays int = 365

@description('Time of this deployment; leave the default. Used to compute the secret expiry.')
param deploymentTime string = utcNow()

@description('E-mail address that receives alert notifications; empty creates the alerts without notifications.')
param alertEmail string = ''

@description('Largest event body the event handler accepts, in bytes; larger ones get 413.')
@minValue(1024)
@maxValue(16777216)
param eventHandlerMaxBodyBytes int = 1048576

@description('Seconds /api/health waits for its probes before reporting a dependency as down.')
@minValue(1)
@maxValue(30)
param healthDeadlineSeconds int = 2

@description('Seconds /api/health reuses its last report, so frequent probes do not load the dependencies.')
@minValue(0)
@maxValue(300)
param healthCacheSeconds int = 10

@description('Upper bound of Function App instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of each Function App instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Extra tags applied to every resource.')
param extraTags object = {}

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = union(extraTags, {
  'azd-env-name': environmentName
})
var names = {
  resourceGroup: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  identity: 'id-${resourceToken}'
  logAnalytics: 'log-${resourceToken}'
  appInsights: 'appi-${resourceToken}'
  storage: 'st${resourceToken}'
  deploymentContainer: 'app-package-${resourceToken}'
  plan: 'plan-${resourceToken}'
  functionApp: 'func-${resourceToken}'
  webPubSub: 'wps-${resourceToken}'
  keyVault: 'kv-${resourceToken}'
  vnet: 'vnet-${resourceToken}'
  alerts: 'alert-${resourceToken}'
}

var useKeyVault = credentialMode == 'keyvault'
var useAppServiceAuth = negotiateAuth == 'appservice'
var tenantId = tenant().tenantId
// Managed-identity tokens for an app registration that keeps the default token version are v1
// tokens: this issuer, signed with the keys published at entraSigningKeysUri.
var entraV1Issuer = 'https://sts.windows.net/${tenantId}/'
var loginEndpoint = environment().authentication.loginEndpoint
var entraSigningKeysUri = '${loginEndpoint}${tenantId}/discovery/v2.0/keys'
var secretExpiresOn = dateTimeToEpoch(dateTimeAdd(deploymentTime, 'P${keyVaultSecretLifetimeDays}D'))
// Origins never contain spaces, so 'https://a.example, https://b.example' is read as two origins.
// Spaces and empty entries (a trailing comma) are dropped: an empty origin is not a valid CORS entry.
var corsOrigins = filter(split(replace(corsAllowedOrigins, ' ', ''), ','), origin => !empty(origin))

// The routes of function_app.py under the default "api" prefix of host.json. App Service
// Authentication guards negotiate; the other routes check their callers themselves (events) or
// serve nothing secret (health, the demo page and its assets under /api/client/).
var eventHandlerPath = '/api/eventhandler'
var negotiatePath = '/api/negotiate'
// The publish API checks its own bearer tokens in bearer mode; in appservice mode App Service
// Authentication guards it like negotiate. Presence (/api/groups/{group}/users) always has
// negotiate's guard: it answers negotiate's callers.
var publishChecksItsOwnTokens = publishAuth == 'bearer'
var publishPaths = [
  '/api/messages'
  '/api/groups'
  '/api/connections'
  '/api/permissions'
]
var authExcludedPaths = concat([
  eventHandlerPath
  '/api/health'
  '/api/health/live'
  '/api/client'
  '/api/client/*'
], publishChecksItsOwnTokens ? publishPaths : [])

// The Functions host's request body limit: what the largest route accepts (the event handler's
// limit, negotiate's 16 KB or the publish API's 1 MB), so the host refuses a larger body before
// buffering it for the app.
var negotiateMaxBodyBytes = 16384
var publishMaxBodyBytes = 1048576
var requestBodyLimitBytes = max(eventHandlerMaxBodyBytes, negotiateMaxBodyBytes, publishMaxBodyBytes)

// Application settings the code reads (shared/config.py), as name/value pairs, by mode.
var commonSettings = [
  {
    name: 'WEBPUBSUB_HUB'
    value: hubName
  }
  {
    name: 'WEBPUBSUB_HUBS'
    value: join(hubNames, ' ')
  }
  {
    name: 'WEBPUBSUB_CREDENTIAL'
    value: credentialMode
  }
  {
    name: 'WEBPUBSUB_ENDPOINT'
    value: 'https://${webPubSub.outputs.hostName}'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.outputs.clientId
  }
  {
    name: 'NEGOTIATE_AUTH'
    value: negotiateAuth
  }
  {
    name: 'NEGOTIATE_GROUPS'
    value: negotiateGroups
  }
  {
    name: 'TOKEN_LIFETIME_MINUTES'
    value: string(tokenLifetimeMinutes)
  }
  {
    name: 'CLIENT_PAGE_ENABLED'
    value: clientPageEnabled ? 'true' : 'false'
  }
  {
    // The only origin of abuse-protection requests: the service itself (no custom domain).
    name: 'WEBPUBSUB_ALLOWED_ORIGINS'
    value: webPubSub.outputs.hostName
  }
  {
    name: 'EVENTHANDLER_MAX_BODY_BYTES'
    value: string(eventHandlerMaxBodyBytes)
  }
  {
    name: 'HEALTH_DEADLINE_SECONDS'
    value: string(healthDeadlineSeconds)
  }
  {
    name: 'HEALTH_CACHE_SECONDS'
    value: string(healthCacheSeconds)
  }
]
var keyVaultModeSettings = [
  {
    name: 'KEYVAULT_URI'
    value: useKeyVault ? keyVault.outputs.uri : ''
  }
  {
    name: 'WEBPUBSUB_KEY_SECRET_NAME'
    value: keyVaultSecretName
  }
  {
    name: 'KEYVAULT_REFRESH_SECONDS'
    value: string(keyVaultRefreshSeconds)
  }
  {
    name: 'EVENTHANDLER_AUTH'
    value: 'signature'
  }
]
var entraModeSettings = [
  {
    name: 'EVENTHANDLER_AUTH'
    value: 'bearer'
  }
  {
    name: 'EVENTHANDLER_BEARER_ISSUER'
    value: entraV1Issuer
  }
  {
    name: 'EVENTHANDLER_BEARER_AUDIENCE'
    value: authClientId
  }
  {
    name: 'EVENTHANDLER_BEARER_JWKS_URI'
    value: entraSigningKeysUri
  }
  {
    // Only the Web PubSub resource's own identity may call the event handler.
    name: 'EVENTHANDLER_BEARER_PRINCIPAL_ID'
    value: webPubSub.outputs.principalId
  }
]
var negotiateBearerSettings = [
  {
    name: 'NEGOTIATE_BEARER_ISSUER'
    value: empty(negotiateBearerIssuer) ? entraV1Issuer : negotiateBearerIssuer
  }
  {
    name: 'NEGOTIATE_BEARER_AUDIENCE'
    value: empty(negotiateBearerAudience) ? 'api://${authClientId}' : negotiateBearerAudience
  }
  {
    name: 'NEGOTIATE_BEARER_ALLOW_APP_TOKENS'
    value: negotiateBearerAllowAppTokens ? 'true' : 'false'
  }
]
var defaultNegotiateJwksUri = empty(negotiateBearerIssuer) ? entraSigningKeysUri : ''
var negotiateJwksUri = empty(negotiateBearerJwksUri) ? defaultNegotiateJwksUri : negotiateBearerJwksUri
var negotiateJwksSettings = empty(negotiateJwksUri) ? [] : [
  {
    name: 'NEGOTIATE_BEARER_JWKS_URI'
    value: negotiateJwksUri
  }
]
var publishCommonSettings = [
  {
    name: 'PUBLISH_AUTH'
    value: publishAuth
  }
  {
    name: 'PUBLISH_ROLE'
    value: publishRole
  }
]
var publishBearerSettings = [
  {
    name: 'PUBLISH_BEARER_ISSUER'
    value: empty(publishBearerIssuer) ? entraV1Issuer : publishBearerIssuer
  }
  {
    name: 'PUBLISH_BEARER_AUDIENCE'
    value: empty(publishBearerAudience) ? 'api://${authClientId}' : publishBearerAudience
  }
]
// This tenant's keys for this tenant's issuer; another issuer publishes its own (discovery).
var publishJwksSettings = empty(publishBearerIssuer) ? [
  {
    name: 'PUBLISH_BEARER_JWKS_URI'
    value: entraSigningKeysUri
  }
] : []
var publishSettings = publishChecksItsOwnTokens ? concat(publishCommonSettings, publishBearerSettings, publishJwksSettings) : publishCommonSettings
var credentialSettings = useKeyVault ? keyVaultModeSettings : entraModeSettings
var negotiateSettings = useAppServiceAuth ? [] : concat(negotiateBearerSettings, negotiateJwksSettings)
var appSettings = concat(commonSettings, credentialSettings, negotiateSettings, publishSettings)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: tags
    metricsPublisherPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    deploymentContainerName: names.deploymentContainer
    blobDataOwnerPrincipalId: identity.outputs.principalId
    privateNetworking: privateNetworking
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: rg
  params: {
    name: names.vnet
    location: location
    tags: tags
  }
}

module webPubSub 'modules/webpubsub.bicep' = {
  name: 'webpubsub'
  scope: rg
  params: {
    name: names.webPubSub
    location: location
    tags: tags
    skuName: webPubSubSku
    capacity: webPubSubCapacity
    disableLocalAuth: !useKeyVault
    restrictPublicNetwork: privateNetworking
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    serviceOwnerPrincipalId: useKeyVault ? '' : identity.outputs.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = if (useKeyVault) {
  name: 'keyvault'
  scope: rg
  params: {
    name: names.keyVault
    location: location
    tags: tags
    webPubSubName: webPubSub.outputs.name
    secretName: keyVaultSecretName
    secretExpiresOn: secretExpiresOn
    secretReaderPrincipalId: identity.outputs.principalId
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module webPubSubEndpoint 'modules/private-endpoint.bicep' = if (privateNetworking) {
  name: 'webpubsub-private-endpoint'
  scope: rg
  params: {
    name: 'pe-${names.webPubSub}'
    location: location
    tags: tags
    subnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    virtualNetworkId: privateNetworking ? network.outputs.id : ''
    privateLinkResourceId: webPubSub.outputs.id
    groupId: 'webpubsub'
    privateDnsZoneName: 'privatelink.webpubsub.azure.com'
  }
}

module storageEndpoint 'modules/private-endpoint.bicep' = if (privateNetworking) {
  name: 'storage-private-endpoint'
  scope: rg
  params: {
    name: 'pe-${names.storage}-blob'
    location: location
    tags: tags
    subnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    virtualNetworkId: privateNetworking ? network.outputs.id : ''
    privateLinkResourceId: storage.outputs.id
    groupId: 'blob'
    privateDnsZoneName: 'privatelink.blob.${environment().suffixes.storage}'
  }
}

module keyVaultEndpoint 'modules/private-endpoint.bicep' = if (privateNetworking && useKeyVault) {
  name: 'keyvault-private-endpoint'
  scope: rg
  params: {
    name: 'pe-${names.keyVault}'
    location: location
    tags: tags
    subnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    virtualNetworkId: privateNetworking ? network.outputs.id : ''
    privateLinkResourceId: useKeyVault ? keyVault.outputs.id : ''
    groupId: 'vault'
    privateDnsZoneName: 'privatelink.vaultcore.azure.net'
  }
}

module functionApp 'modules/function.bicep' = {
  name: 'function-app'
  scope: rg
  dependsOn: [
    webPubSubEndpoint
    storageEndpoint
    keyVaultEndpoint
  ]
  params: {
    planName: names.plan
    appName: names.functionApp
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    pythonVersion: '3.11'
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSubnetId: privateNetworking ? network.outputs.appSubnetId : ''
    corsAllowedOrigins: corsOrigins
    appSettings: appSettings
    requestBodyLimitBytes: requestBodyLimitBytes
    enableAppServiceAuth: useAppServiceAuth
    authClientId: authClientId
    authExcludedPaths: authExcludedPaths
    authAllowedClientApplications: authAllowedClientApplications
    authAllowedPrincipalIds: authAllowedPrincipalIds
    authAllowedGroupIds: authAllowedGroupIds
  }
}

var eventHandlerUrl = 'https://${functionApp.outputs.defaultHostName}${eventHandlerPath}'

module hub 'modules/hub.bicep' = {
  name: 'webpubsub-hub'
  scope: rg
  params: {
    webPubSubName: webPubSub.outputs.name
    hubNames: hubNames
    eventHandlerUrl: eventHandlerUrl
    upstreamAuthResource: useKeyVault ? '' : authClientId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: names.alerts
    location: location
    tags: tags
    webPubSubId: webPubSub.outputs.id
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    alertEmail: alertEmail
  }
}

// Read by azd (written to the environment's .env) and by docs/deploy.md. Never a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output NEGOTIATE_URL string = 'https://${functionApp.outputs.defaultHostName}${negotiatePath}'
output EVENT_HANDLER_URL string = eventHandlerUrl
// Right after the first deployment: checks.configuration says whether negotiate's posture holds (in
// appservice mode, that the platform reports App Service Authentication on: WEBSITE_AUTH_ENABLED).
output HEALTH_URL string = 'https://${functionApp.outputs.defaultHostName}/api/health'
output WEBPUBSUB_NAME string = webPubSub.outputs.name
output WEBPUBSUB_HOST_NAME string = webPubSub.outputs.hostName
output WEBPUBSUB_HUB_NAME string = hubName
output WEBPUBSUB_HUB_NAMES array = hub.outputs.names
output KEYVAULT_NAME string = useKeyVault ? keyVault.outputs.name : ''
