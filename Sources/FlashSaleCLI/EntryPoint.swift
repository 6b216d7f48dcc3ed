@main
struct FlashSaleCLIMain {
    static func main() async throws {}
}
