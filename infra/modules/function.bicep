// The Flex Consumption plan and the Linux Function App that runs the Python code, with its
// platform settings (identity-based storage and telemetry), App Service Authentication for
// negotiate, publishing-credential policies, CORS and diagnostic settings.
//
// Flex Consumption rejects several settings older plans used: none of FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENT*, SCM_DO_BUILD_DURING_DEPLOYMENT
// or ENABLE_ORYX_BUILD appears below, and siteConfig leaves out ftpsState, linuxFxVersion and
// the other properties the plan refuses. FTP and basic-auth publishing are switched off with
// the basicPublishingCredentialsPolicies resources instead.

@description('Name of the Flex Consumption plan.')
param planName string

@description('Name of the Function App.')
param appName string

@description('Azure region.')
param location string

@description('Tags applied to the resources; the app also gets azd-service-name.')
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Name of the storage account used for AzureWebJobsStorage and deployments.')
param storageAccountName string

@description('Name of the deployment blob container in that account.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Resource id of the Log Analytics workspace that receives the app logs.')
param logAnalyticsWorkspaceId string

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Upper bound of instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Resource id of the subnet for outbound VNet integration; empty for none.')
param appSubnetId string = ''

@description('Origins allowed to call the app from a browser (CORS).')
param corsAllowedOrigins array = []

@description('The application settings the code reads, as name/value pairs; appended to the platform settings.')
param appSettings array

@description('Largest request body the Functions host accepts, in bytes (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT); larger ones get 413 before the app sees them.')
@minValue(1024)
@maxValue(104857600)
param requestBodyLimitBytes int = 1048576

@description('When true, App Service Authentication (Entra ID) guards every path except the excluded ones.')
param enableAppServiceAuth bool = true

@description('Client id of the Entra app registration App Service Authentication validates tokens for.')
param authClientId string

@description('Paths App Service Authentication lets through unauthenticated; the app checks them itself.')
param authExcludedPaths array

@description('Client ids of the applications whose tokens App Service Authentication accepts (the appid or azp claim); empty accepts any application of the tenant that can get a token for the registration.')
param authAllowedClientApplications array = []

@description('Object ids of the users and service principals App Service Authentication lets through; empty lets every principal of the tenant through.')
param authAllowedPrincipalIds array = []

@description('Object ids of the groups whose members App Service Authentication lets through; empty means no group requirement.')
param authAllowedGroupIds array = []

var tenantId = tenant().tenantId
// The v1 endpoint of the tenant, whose metadata names https://sts.windows.net/<tenant>/ as issuer: the
// issuer of the v1 access tokens the app registration issues (requestedAccessTokenVersion unset), which
// the app's own bearer checks (EVENTHANDLER_BEARER_ISSUER, NEGOTIATE_BEARER_ISSUER) expect as well.
var loginEndpoint = environment().authentication.loginEndpoint
var entraV1Authority = '${loginEndpoint}${tenantId}/'
// App Service Authentication's built-in authorization policy, set only when something is listed.
var restrictCallers = !empty(authAllowedClientApplications) || !empty(authAllowedPrincipalIds) || !empty(authAllowedGroupIds)
var callerPolicy = {
  allowedApplications: authAllowedClientApplications
  allowedPrincipals: {
    identities: authAllowedPrincipalIds
    groups: authAllowedGroupIds
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Identity-based host storage and Entra-authenticated telemetry: no connection string with a key.
var platformSettings = [
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  {
    // Read by the host itself (its request-size middleware), on every plan: without it, the host
    // buffers bodies up to its 100 MB default before the app can refuse them.
    name: 'FUNCTIONS_REQUEST_BODY_SIZE_LIMIT'
    value: string(requestBodyLimitBytes)
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Zone redundancy on Flex Consumption needs always-ready instances and is region-limited; left to the operator.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: false
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_78:Flex Consumption rejects siteConfig.ftpsState; FTP is off through the ftp basicPublishingCredentialsPolicies resource below.
  //checkov:skip=CKV_AZURE_222:The app is the public front door: browsers call negotiate and Web PubSub calls the event handler over the internet.
  //checkov:skip=CKV_AZURE_17:Browsers and Web PubSub do not present client certificates; callers are authenticated by Entra tokens or signatures.
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero per app (scaleAndConcurrency); there is no fixed worker count.
  //checkov:skip=CKV_AZURE_213:Instance health-check pings would keep a scale-to-zero plan warm; /api/health is for external probes.
  name: appName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
      appSettings: concat(platformSettings, appSettings)
    }
  }
}

resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13:This check reads the v1 authsettings shape. This authsettingsV2 is enabled when negotiateAuth=appservice; with negotiateAuth=bearer it is off by design, since the app validates each caller's Entra token itself and events carry the service's token or signature.
  //checkov:skip=CKV_AZURE_63:Applies to the web config resource, not authsettingsV2; app logs go to Log Analytics.
  //checkov:skip=CKV_AZURE_65:Applies to the web config resource, not authsettingsV2.
  //checkov:skip=CKV_AZURE_66:Applies to the web config resource, not authsettingsV2.
  //checkov:skip=CKV_AZURE_80:Applies to the web config resource, not authsettingsV2; the app runs Python.
  //checkov:skip=CKV_AZURE_88:Applies to the web config resource, not authsettingsV2; Flex Consumption uses no Azure Files share.
  //checkov:skip=CKV_AZURE_222:Applies to the web config resource, not authsettingsV2.
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: enableAppServiceAuth
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: authExcludedPaths
    }
    httpSettings: {
      requireHttps: true
      routes: {
        apiPrefix: '/.auth'
      }
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: entraV1Authority
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
          defaultAuthorizationPolicy: restrictCallers ? callerPolicy : {}
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
      preserveUrlFragmentsForLogins: false
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
      {
        // Who App Service Authentication let through or refused (negotiate in appservice mode).
        category: 'AppServiceAuthenticationLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
