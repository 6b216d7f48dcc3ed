// The messages the fuzz harness decodes: every message type of proto/, and every method of every service (the
// generated method table) with the request type its server decodes and the response type its client decodes.
// Compiled into the harness only (Fuzz/build.sh), in one module with Sources/Proto and the frame decoder.
import NIOCore

/// One message type: decodes bytes and checks that what decoded survives a round trip unchanged.
struct MessageKind: Sendable {
    let name: String
    let roundTrip: @Sendable (UnsafeRawBufferPointer) -> Void
    /// A realistic instance, serialized: the seed corpus.
    let sample: @Sendable () -> [UInt8]

    init<M: ProtoMessage & Equatable>(_ type: M.Type, sample: @escaping @Sendable () -> M) {
        self.name = String(describing: M.self)
        self.roundTrip = { bytes in checkRoundTrip(M.self, bytes) }
        self.sample = { sample().serializedBytes() }
    }
}

/// Bytes that decode must re-encode to bytes that decode to the same value: a bridge that misreads a C field
/// (a length, a oneof case, a repeated count) shows up here even when it does not crash.
func checkRoundTrip<M: ProtoMessage & Equatable>(_ type: M.Type, _ bytes: UnsafeRawBufferPointer) {
    guard let first = try? M(decoding: bytes) else { return }
    let encoded = first.serializedBytes()
    guard let second = try? M(decoding: encoded) else {
        fatalError("\(M.self): re-encoding of a decoded message does not decode")
    }
    guard second == first else { fatalError("\(M.self): round trip changed the message: \(first) -> \(second)") }
}

private func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

private let product = Product(
    productId: "p1", totalStock: 1_000, slotCount: 8, hot: true, database: "hot", saleLimit: 500, sold: 125,
    remaining: 875)
private let edgeQuota = EdgeQuota(edgeId: 3, address: "127.0.0.1:20001", granted: 125, used: 100, released: 5, sold: 95)

/// Every message type of the platform, by index (the first byte of a direct-mode input picks one).
let messageKinds: [MessageKind] = [
    MessageKind(WireRequest.self) {
        WireRequest(callId: 7, method: EdgeRPC.Purchase.name, timeoutUs: 2_000_000, token: "",
                    payload: buffer(PurchaseRequest(requestId: 1, userId: 2, productId: "p1").serializedBytes()))
    },
    MessageKind(WireResponse.self) {
        WireResponse(callId: 7, status: .ok, message: "",
                     payload: buffer(PurchaseResponse(outcome: .purchased, orderId: 99).serializedBytes()))
    },
    MessageKind(WirePingRequest.self) { WirePingRequest(data: buffer([1, 2, 3])) },
    MessageKind(WirePingResponse.self) { WirePingResponse(data: buffer([1, 2, 3]), service: "edge") },
    MessageKind(PurchaseRequest.self) {
        PurchaseRequest(requestId: 123_456_789, userId: 42, productId: "p1", edgeId: 2, retry: true, lookupOnly: false)
    },
    MessageKind(PurchaseResponse.self) { PurchaseResponse(outcome: .alreadyPurchased, orderId: 77, replayed: true) },
    MessageKind(Product.self) { product },
    MessageKind(CreateProductRequest.self) {
        CreateProductRequest(productId: "p1", totalStock: 1_000, slotCount: 8, hot: true, saleLimit: 0)
    },
    MessageKind(ProductRequest.self) { ProductRequest(productId: "p2") },
    MessageKind(ProductList.self) { ProductList(products: [product, Product(productId: "p2", totalStock: 10)]) },
    MessageKind(ListProductsRequest.self) { ListProductsRequest() },
    MessageKind(AdjustStockRequest.self) { AdjustStockRequest(productId: "p1", change: .raiseBy(100)) },
    MessageKind(EdgeSold.self) { EdgeSold(edgeId: 1, sold: 10) },
    MessageKind(ProductSold.self) {
        ProductSold(productId: "p1", sold: 30, edges: [EdgeSold(edgeId: 1, sold: 10), EdgeSold(edgeId: 2, sold: 20)])
    },
    MessageKind(SoldCountsRequest.self) { SoldCountsRequest(productId: "p1") },
    MessageKind(SoldCountsResponse.self) {
        SoldCountsResponse(products: [ProductSold(productId: "p1", sold: 3, edges: [EdgeSold(edgeId: 1, sold: 3)])])
    },
    MessageKind(AuditRequest.self) { AuditRequest(productId: "") },
    MessageKind(ProductAudit.self) {
        ProductAudit(productId: "p1", totalStock: 1_000, remaining: 10, orders: 990, negativeSlots: 0, clean: true)
    },
    MessageKind(AuditResponse.self) {
        AuditResponse(products: [ProductAudit(productId: "p1", totalStock: 5, remaining: 2, orders: 3, clean: true)], clean: true)
    },
    MessageKind(ProductConfig.self) { ProductConfig(totalStock: 1_000, hot: true, database: "hot", saleLimit: 0) },
    MessageKind(QuotaGrant.self) { QuotaGrant(granted: 125) },
    MessageKind(ShedConfig.self) { ShedConfig(keepPerMillion: 100_000) },
    MessageKind(ProductUsage.self) { ProductUsage(productId: "p1", used: 100, released: 5, granted: 125) },
    MessageKind(EdgeRegistration.self) {
        EdgeRegistration(edgeId: 3, address: "127.0.0.1:20001",
                         usage: [ProductUsage(productId: "p1", used: 100, released: 5, granted: 125)])
    },
    MessageKind(GrantMoreRequest.self) { GrantMoreRequest(edgeId: 3, productId: "p1", used: 125) },
    MessageKind(GrantMoreResponse.self) { GrantMoreResponse(granted: 250, soldOut: false) },
    MessageKind(ReleaseQuotaRequest.self) { ReleaseQuotaRequest(productId: "p1", maxUnits: 50) },
    MessageKind(ReleaseQuotaResponse.self) { ReleaseQuotaResponse(released: 20, releasedTotal: 25) },
    MessageKind(SetShedRequest.self) { SetShedRequest(keepPerMillion: 100_000) },
    MessageKind(EdgeQuota.self) { edgeQuota },
    MessageKind(ProductQuotas.self) {
        ProductQuotas(productId: "p1", sellable: 875, grantedUnused: 25, edges: [edgeQuota, EdgeQuota(edgeId: 4)])
    },
    MessageKind(QuotaStatusRequest.self) { QuotaStatusRequest(productId: "p1") },
    MessageKind(QuotaStatusResponse.self) {
        QuotaStatusResponse(products: [ProductQuotas(productId: "p1", sellable: 10, edges: [edgeQuota])], keepPerMillion: 1_000_000)
    },
    MessageKind(EdgeStatsRequest.self) { EdgeStatsRequest() },
    MessageKind(EdgeStatsResponse.self) {
        EdgeStatsResponse(edgeId: 1, attempts: 1_000, shed: 900, soldOut: 10, purchased: 80, alreadyPurchased: 5,
                          errors: 1, forwarded: 100, inDoubt: 0, keepPerMillion: 100_000)
    },
    MessageKind(EdgeAllotment.self) {
        EdgeAllotment(edge: "edge-0000000007", edgeId: 8, granted: 125, reclaimed: 3, retired: false, address: "127.0.0.1:20001")
    },
    MessageKind(ProductQuotaState.self) {
        ProductQuotaState(totalStock: 1_000, hot: false, database: "main", saleLimit: 0,
                          allotments: [EdgeAllotment(edge: "edge-0000000001", edgeId: 2, granted: 500)])
    },
    // Appended, so that the corpus's first bytes keep naming the kinds they did.
    MessageKind(OrderRequest.self) { OrderRequest(productId: "p1", key: .orderId(42)) },
    MessageKind(Order.self) {
        Order(productId: "p1", requestId: 7, orderId: 42, userId: 9, state: .released, payByUnixMs: 1_764_000_000_000,
              endedUnixMs: 1_764_000_180_000, reason: .expired)
    },
]

func kind(_ type: Any.Type) -> Int {
    let name = String(describing: type)
    guard let index = messageKinds.firstIndex(where: { $0.name == name }) else { fatalError("no kind \(name)") }
    return index
}

/// A method of one of the services: what its server decodes, what its client decodes.
struct Method: Sendable {
    let name: String
    let request: Int
    let response: Int
    /// It needs a token (the seeds carry one, so that a server would read past the token check).
    let needsToken: Bool

    init(_ descriptor: RPCMethodDescriptor) {
        self.name = descriptor.name
        self.request = kind(descriptor.input)
        self.response = kind(descriptor.output)
        self.needsToken = descriptor.access != .public
    }
}

/// Every method of every service, from the generated method table (proto/services.proto).
let methods: [Method] = RPCContract.methods.map(Method.init)
