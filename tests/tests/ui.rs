//! Compile-fail tests: each file under `tests/ui/<macro>/` is one misuse of a macro, with the
//! expected compiler output beside it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/event/*.rs");
    t.compile_fail("ui/command/*.rs");
    t.compile_fail("ui/aggregate/*.rs");
    t.compile_fail("ui/projection/*.rs");
    t.compile_fail("ui/process_manager/*.rs");
}
