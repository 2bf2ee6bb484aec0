// The Web PubSub hubs the app serves, each with the same event handler, which points at the
// Function App's event handler route. In entra mode the service authenticates each call with a token from its managed
// identity for the app registration (upstreamAuthResource); in keyvault mode the app checks
// the ce-signature HMAC made with the access key instead.

@description('Name of the existing Web PubSub resource.')
param webPubSubName string

@description('Names of the hubs; the app reads the same list from WEBPUBSUB_HUBS.')
param hubNames array

@description('URL the service posts CloudEvents to: https://<function host>/api/eventhandler.')
param eventHandlerUrl string

@description('Resource (audience) of the managed-identity token sent upstream; empty sends no token.')
param upstreamAuthResource string = ''

var managedIdentityAuth = {
  type: 'ManagedIdentity'
  managedIdentity: {
    resource: upstreamAuthResource
  }
}
var noAuth = {
  type: 'None'
}

resource webPubSub 'Microsoft.SignalRService/webPubSub@2024-03-01' existing = {
  name: webPubSubName
}

resource hubs 'Microsoft.SignalRService/webPubSub/hubs@2024-03-01' = [for hubName in hubNames: {
  parent: webPubSub
  name: hubName
  properties: {
    anonymousConnectPolicy: 'deny'
    eventHandlers: [
      {
        urlTemplate: eventHandlerUrl
        userEventPattern: '*'
        systemEvents: [
          'connect'
          'connected'
          'disconnected'
        ]
        auth: empty(upstreamAuthResource) ? noAuth : managedIdentityAuth
      }
    ]
    eventListeners: []
  }
}]

output names array = [for (hubName, index) in hubNames: hubs[index].name]
