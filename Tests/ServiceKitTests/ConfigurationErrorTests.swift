import ServiceKit
import Testing

@Suite struct ConfigurationErrorTests {
    @Test func anUnreadableSecretFileIsAConfigurationError() {
        #expect(throws: ConfigurationError("cannot read the file named by FLASHSALE_SERVICE_TOKEN_FILE")) {
            try Secret.read("FLASHSALE_SERVICE_TOKEN", environment: ["FLASHSALE_SERVICE_TOKEN_FILE": "/nonexistent/token"])
        }
    }

    @Test func credentialsThatCannotServeAreConfigurationErrors() throws {
        #expect(throws: ConfigurationError.self) { try ServiceRuntime.credentials(environment: [:], operator: false) }
        #expect(throws: ConfigurationError("the operator and service tokens are the same: give each its own")) {
            try ServiceRuntime.credentials(
                environment: ["FLASHSALE_SERVICE_TOKEN": "same", "FLASHSALE_OPERATOR_TOKEN": "same"], operator: true)
        }
        let credentials = try ServiceRuntime.credentials(
            environment: ["FLASHSALE_SERVICE_TOKEN": "s", "FLASHSALE_OPERATOR_TOKEN": "o"], operator: true)
        #expect(credentials.serviceToken == "s" && credentials.operatorToken == "o")
    }
}
