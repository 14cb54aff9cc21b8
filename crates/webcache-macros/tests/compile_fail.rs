//! Mistakes in `#[cached]` are compile errors that point at the mistake: the `.stderr` files
//! next to each case hold the expected message and its span.

#[test]
fn mistakes_point_at_what_is_wrong() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
