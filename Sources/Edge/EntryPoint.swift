@main
struct EdgeMain {
    static func main() async throws {}
}
