import Testing

/// The operator's suites (commands, metrics, graceful shutdown, scaling), one after another: each starts whole
/// platforms, and on a 2-core machine they would otherwise compete with each other and with the other suites.
@Suite(.serialized) enum OperatingTests {}
