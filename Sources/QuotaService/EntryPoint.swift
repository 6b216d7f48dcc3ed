@main
struct QuotaServiceMain {
    static func main() async throws {}
}
