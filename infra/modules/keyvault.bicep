// Key Vault for keyvault mode: RBAC authorization, soft delete and purge protection. It holds
// one secret, the Web PubSub access key, which the app reads with its managed identity (Key
// Vault Secrets User, scoped to that secret alone) and caches for KEYVAULT_REFRESH_SECONDS.

@description('Name of the key vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the resources.')
param tags object = {}

@description('Name of the Web PubSub resource whose primary access key is stored.')
param webPubSubName string

@description('Name of the secret that holds the access key.')
param secretName string

@description('Expiry of the secret, in seconds since the Unix epoch; every deployment renews it.')
param secretExpiresOn int

@description('Principal id granted Key Vault Secrets User on the secret (the Function App identity).')
param secretReaderPrincipalId string

@description('Disabled with private networking (the app reaches the vault through a private endpoint); Enabled otherwise.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

@description('Resource id of the Log Analytics workspace that receives the audit logs.')
param logAnalyticsWorkspaceId string

var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var denyPublicNetwork = publicNetworkAccess == 'Disabled'

resource webPubSub 'Microsoft.SignalRService/webPubSub@2024-03-01' existing = {
  name: webPubSubName
}

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  //checkov:skip=CKV_AZURE_109:Deny applies with private networking (publicNetworkAccess=Disabled); without a VNet the Flex app has no fixed egress to allow-list. Access is RBAC-only.
  //checkov:skip=CKV_AZURE_189:main.bicep passes publicNetworkAccess=Enabled unless privateNetworking=true; without a VNet the app reaches the vault over the internet with RBAC.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: denyPublicNetwork ? 'Deny' : 'Allow'
      bypass: 'None'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

// Written through Azure Resource Manager, which reaches the vault whatever its network rules.
resource keySecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: secretName
  properties: {
    value: webPubSub.listKeys().primaryKey
    contentType: 'Azure Web PubSub access key'
    attributes: {
      enabled: true
      exp: secretExpiresOn
    }
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keySecret.id, secretReaderPrincipalId, keyVaultSecretsUserRoleId)
  scope: keySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: secretReaderPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
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

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
output secretName string = keySecret.name
