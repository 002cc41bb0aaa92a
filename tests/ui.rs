//! Compile-time errors of `#[webmesh::on]`, one file per message, and the
//! accepted handler shapes.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
