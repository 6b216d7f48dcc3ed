// Process management lives in `Cluster` (the `flashsale` tool uses it too); tests see it through TestSupport.
@_exported import Cluster

public typealias TestSupportError = ClusterError
@_exported import enum PostgresClient.PostgresDSN
