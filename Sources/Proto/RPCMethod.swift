/// Who may call a method: `option (access)` in proto/services.proto, through the generated method table. A method
/// that is not public needs its kind of token in the request (`flashsale.wire.Request.token`).
public enum RPCAccess: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// No token: purchases from clients, health, read-only counters and reads.
    case `public`
    /// The service token (`FLASHSALE_SERVICE_TOKEN`): what one service asks of another that changes state.
    case service
    /// The operator token (`FLASHSALE_OPERATOR_TOKEN`): an operator changing the sale.
    case `operator`

    public var description: String {
        switch self {
        case .public: "public"
        case .service: "service"
        case .operator: "operator"
        }
    }
}

/// One method of the platform's contract, as proto/services.proto declares it (generated into
/// `Generated/services.rpc.swift`).
public struct RPCMethodDescriptor: Sendable, CustomStringConvertible {
    /// The proto service, fully qualified: "flashsale.Inventory".
    public let service: String
    /// The method's name in its service: "Purchase".
    public let method: String
    /// The name a request carries on the wire (`flashsale.wire.Request.method`), as `inventory.Purchase`.
    public let name: String
    public let access: RPCAccess
    /// What its server decodes, and what it answers.
    public let input: any ProtoMessage.Type
    public let output: any ProtoMessage.Type

    public init(
        service: String, method: String, name: String, access: RPCAccess, input: any ProtoMessage.Type,
        output: any ProtoMessage.Type
    ) {
        self.service = service
        self.method = method
        self.name = name
        self.access = access
        self.input = input
        self.output = output
    }

    public var description: String { "\(name) (\(input) -> \(output), \(access))" }
}

/// A proto service: its fully qualified name and its methods in declaration order.
public struct RPCServiceDescriptor: Sendable, CustomStringConvertible {
    public let name: String
    public let methods: [RPCMethodDescriptor]

    public init(name: String, methods: [RPCMethodDescriptor]) {
        self.name = name
        self.methods = methods
    }

    public var description: String { name }
}

/// A method with its types, as the generated namespaces declare each one (`InventoryRPC.Purchase`): servers register
/// and clients call it through Wire's overloads taking `M.Type`, so its name, types and access are written once.
public protocol RPCMethod {
    associatedtype Input: ProtoMessage
    associatedtype Output: ProtoMessage
    static var descriptor: RPCMethodDescriptor { get }
}

extension RPCMethod {
    /// The wire name, as `inventory.Purchase`.
    public static var name: String { descriptor.name }
    public static var access: RPCAccess { descriptor.access }
}
