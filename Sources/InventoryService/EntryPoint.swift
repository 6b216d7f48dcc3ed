@main
struct InventoryServiceMain {
    static func main() async throws {}
}
