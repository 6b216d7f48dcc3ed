import Testing

@testable import InventoryCore

/// The serving check's decisions alone (the checks against a real server are in AccessControlTests).
@Suite struct ServingCheckTests {
    /// The check's verdicts, one fact at a time.
    @Test func theServingCheckNamesEachProblem() {
        let fine = ServingCheck(
            user: "app", superuser: false, ownsTables: false, writesTables: false, createsRoles: false, inServiceRole: true,
            synchronousCommit: "on")
        #expect(fine.refusals(.init()).isEmpty)
        var owner = fine
        owner.ownsTables = true
        owner.writesTables = true
        #expect(owner.roleProblems == ["owns the tables"])
        var writer = fine
        writer.writesTables = true
        #expect(writer.roleProblems == ["may write the tables directly"])
        var roleMaker = fine
        roleMaker.createsRoles = true
        #expect(roleMaker.roleProblems == ["may create roles"])
        var outsider = fine
        outsider.inServiceRole = false
        #expect(outsider.roleProblems == ["is not a member of flashsale_service"])
        #expect(outsider.refusals(.init(privilegedRole: true)).isEmpty)
        for value in ["off", "local"] {
            var lazy = fine
            lazy.synchronousCommit = value
            #expect(lazy.refusals(.init()).count == 1 && lazy.refusals(.init(asynchronousCommit: true)).isEmpty)
        }
        var remote = fine
        remote.synchronousCommit = "remote_apply"
        #expect(remote.durabilityProblem == nil)
    }
}
