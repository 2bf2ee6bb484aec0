// Alerts on Web PubSub: abnormal connection closes (one time series per close category), server
// load, and aborted connections in the connectivity logs. Notifications go to an action group
// when an e-mail address is given; without one the alerts still fire in the portal.

@description('Prefix of the alert names.')
param namePrefix string

@description('Tags applied to the resources.')
param tags object = {}

@description('Azure region of the log alert.')
param location string

@description('Resource id of the Web PubSub resource.')
param webPubSubId string

@description('Resource id of the Log Analytics workspace that holds WebPubSubConnectivity.')
param logAnalyticsWorkspaceId string

@description('E-mail address notified when an alert fires; empty creates no action group.')
param alertEmail string = ''

@description('Closes per category in 15 minutes above which the close alert fires.')
@minValue(1)
param connectionCloseThreshold int = 10

@description('ServerLoad percentage above which the load alert fires.')
@minValue(1)
@maxValue(100)
param serverLoadThreshold int = 80

@description('Aborted connections in 15 minutes above which the log alert fires.')
@minValue(1)
param connectionAbortThreshold int = 20

var notify = !empty(alertEmail)
var closeCategories = [
  'Unauthorized'
  'EventHandlerNotFound'
  'SendEventFailed'
  'Throttled'
]
var abortedConnectionsQuery = 'WebPubSubConnectivity | where _ResourceId =~ "${webPubSubId}" | where OperationName == "ConnectionAborted"'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: '${namePrefix}-ag'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'wps-alerts'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var metricActions = notify ? [
  {
    actionGroupId: actionGroup.id
  }
] : []
var logActionGroups = notify ? [
  actionGroup.id
] : []

resource connectionCloseAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-connection-closes'
  location: 'global'
  tags: tags
  properties: {
    description: 'Web PubSub closed connections for Unauthorized, EventHandlerNotFound, SendEventFailed or Throttled: check the event handler and the tokens negotiate issues.'
    severity: 2
    enabled: true
    scopes: [
      webPubSubId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    targetResourceType: 'Microsoft.SignalRService/WebPubSub'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'AbnormalCloses'
          metricNamespace: 'Microsoft.SignalRService/WebPubSub'
          metricName: 'ConnectionCloseCount'
          dimensions: [
            {
              name: 'ConnectionCloseCategory'
              operator: 'Include'
              values: closeCategories
            }
          ]
          operator: 'GreaterThan'
          threshold: connectionCloseThreshold
          timeAggregation: 'Total'
        }
      ]
    }
    actions: metricActions
  }
}

resource serverLoadAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-server-load'
  location: 'global'
  tags: tags
  properties: {
    description: 'Web PubSub server load is high: add units or move to a larger SKU.'
    severity: 2
    enabled: true
    scopes: [
      webPubSubId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    targetResourceType: 'Microsoft.SignalRService/WebPubSub'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'HighServerLoad'
          metricNamespace: 'Microsoft.SignalRService/WebPubSub'
          metricName: 'ServerLoad'
          dimensions: []
          operator: 'GreaterThan'
          threshold: serverLoadThreshold
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: metricActions
  }
}

resource connectionFailureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-connection-aborts'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${namePrefix}-connection-aborts'
    description: 'Web PubSub aborted many connections (WebPubSubConnectivity, OperationName ConnectionAborted); the Message column says why.'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: abortedConnectionsQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: connectionAbortThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: logActionGroups
    }
  }
}
