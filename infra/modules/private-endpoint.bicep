// One private endpoint with its private DNS zone, the zone's link to the virtual network and
// the DNS zone group that keeps the A record in step with the endpoint's address.

@description('Name of the private endpoint.')
param name string

@description('Azure region of the private endpoint.')
param location string

@description('Tags applied to the resources.')
param tags object = {}

@description('Resource id of the subnet that holds the endpoint.')
param subnetId string

@description('Resource id of the virtual network the DNS zone is linked to.')
param virtualNetworkId string

@description('Resource id of the resource the endpoint connects to.')
param privateLinkResourceId string

@description('Sub-resource (group id) of the target: webpubsub, vault or blob.')
param groupId string

@description('Private DNS zone of that sub-resource, for example privatelink.webpubsub.azure.com.')
param privateDnsZoneName string

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: privateDnsZoneName
  location: 'global'
  tags: tags
}

resource zoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: zone
  name: 'link-${uniqueString(virtualNetworkId)}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: privateLinkResourceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(privateDnsZoneName, '.', '-')
        properties: {
          privateDnsZoneId: zone.id
        }
      }
    ]
  }
}

output id string = endpoint.id
