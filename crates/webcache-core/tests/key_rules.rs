//! `KeyRules::no_nul` refuses exactly the keys with a NUL character.

use proptest::prelude::*;
use webcache_core::backend::KeyRules;

const NO_NUL: KeyRules = KeyRules {
    no_nul: true,
    ..KeyRules::ANY
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_nul_refuses_exactly_keys_with_a_nul(key in "(.|\\x00){0,40}") {
        let refused = NO_NUL.violation(&key);
        prop_assert_eq!(refused.is_some(), key.contains('\0'), "{:?}", refused);
        prop_assert!(KeyRules::ANY.violation(&key).is_none());
    }
}

#[test]
fn the_reason_names_the_nul() {
    let reason = NO_NUL.violation("a\0b").unwrap();
    assert!(reason.contains("NUL character"), "{reason}");
    // Memcached's rules refuse it too (as a control character).
    assert!(KeyRules::MEMCACHED.violation("a\0b").is_some());
}
