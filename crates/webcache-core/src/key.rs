//! Final keys: prefix, version, the key function, validation and glob patterns.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::backend::KeyRules;
use crate::error::{Error, Result};

/// Builds the stored key from the cache's prefix, the version and the caller's key.
///
/// The default, [`KeyFunction::default`], gives `prefix:version:key` (`:1:foo` with no prefix),
/// as Django does, so data is recognisable in `redis-cli`.
#[derive(Clone, Default)]
pub struct KeyFunction(Option<Arc<KeyFn>>);

type KeyFn = dyn Fn(&str, i64, &str) -> String + Send + Sync;

impl KeyFunction {
    /// A custom key function.
    ///
    /// ```
    /// use webcache::KeyFunction;
    /// let f = KeyFunction::new(|prefix, version, key| format!("{prefix}/v{version}/{key}"));
    /// assert_eq!(f.make("app", 2, "user"), "app/v2/user");
    /// ```
    pub fn new(f: impl Fn(&str, i64, &str) -> String + Send + Sync + 'static) -> Self {
        KeyFunction(Some(Arc::new(f)))
    }

    /// Applies the function.
    pub fn make(&self, prefix: &str, version: i64, key: &str) -> String {
        match &self.0 {
            None => Self::default_format(prefix, version, key),
            Some(f) => f(prefix, version, key),
        }
    }

    /// The default `prefix:version:key` form.
    pub fn default_format(prefix: &str, version: i64, key: &str) -> String {
        let version = version.to_string();
        let mut out = String::with_capacity(prefix.len() + version.len() + key.len() + 2);
        out.push_str(prefix);
        out.push(':');
        out.push_str(&version);
        out.push(':');
        out.push_str(key);
        out
    }

    /// Whether this is the default function (then every key of a cache starts with `prefix:`,
    /// which makes prefix-scoped `clear` and `keys` possible).
    pub fn is_default(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for KeyFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_default() {
            "KeyFunction(prefix:version:key)"
        } else {
            "KeyFunction(custom)"
        })
    }
}

/// What to do with a key the backend cannot store (see [`KeyRules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidKeyPolicy {
    /// Refuse it with [`Error::InvalidKey`], saying what to change (the default: as Django).
    #[default]
    Reject,
    /// Store it under `prefix:version:#<sha256 of the key>` instead.
    ///
    /// Every key that starts with `#` is hashed too, valid or not, so that the
    /// hashed keys live in a namespace no plain key reaches: the key `#<sha256 of "a b">` must
    /// not read the entry stored for `a b`.
    Hash,
}

/// The first character of a hashed key's name (`prefix:version:#<sha256>`).
const HASH_MARK: char = '#';

impl InvalidKeyPolicy {
    /// Whether `key` must go through [`final_key`] even when the backend accepts any key.
    pub(crate) fn rewrites(self, key: &str) -> bool {
        self == InvalidKeyPolicy::Hash && key.starts_with(HASH_MARK)
    }
}

/// Makes the final key for `key`, checking it against the backend's rules.
pub(crate) fn final_key(
    function: &KeyFunction,
    prefix: &str,
    version: i64,
    key: &str,
    rules: &KeyRules,
    policy: InvalidKeyPolicy,
) -> Result<String> {
    let full = function.make(prefix, version, key);
    let violation = rules.violation(&full);
    if violation.is_none() && !policy.rewrites(key) {
        return Ok(full);
    }
    match (policy, violation) {
        (InvalidKeyPolicy::Reject, Some(reason)) => Err(Error::InvalidKey {
            key: shorten(key),
            reason: format!("{reason}; use a shorter key without spaces, or set `invalid_keys = \"hash\"` in the cache's configuration"),
        }),
        (InvalidKeyPolicy::Reject, None) => Ok(full),
        (InvalidKeyPolicy::Hash, _) => {
            let hashed = function.make(
                prefix,
                version,
                &format!("{HASH_MARK}{:x}", Sha256::digest(key)),
            );
            match rules.violation(&hashed) {
                None => Ok(hashed),
                Some(reason) => Err(Error::InvalidKey {
                    key: shorten(key),
                    reason: format!("even its hashed form is refused: {reason}; shorten the key prefix"),
                }),
            }
        }
    }
}

fn shorten(key: &str) -> String {
    if key.len() <= 80 {
        return key.to_owned();
    }
    let mut end = 77;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &key[..end])
}

/// Whether `text` matches the glob `pattern`, by the rules of Redis's `KEYS` and `SCAN MATCH`
/// (`stringmatchlen` in Redis's `util.c`), so a pattern selects the same keys on every backend.
///
/// Matching is on bytes, as in Redis: `?` is one byte, so it does not match a multi-byte
/// character such as `é` (`??` does).
/// - `*` matches any run of bytes, the empty run included; `?` exactly one byte.
/// - `[abc]` one byte of the set; `[a-z]` a range, either way round (`[z-a]` is `[a-z]`);
///   bytes compare as signed, as Redis does on x86-64, so a range reaching past ASCII is odd.
/// - `[^abc]` any byte not in the set. Only `^` negates: `[!a]` is the set of `!` and `a`.
/// - `]` right after `[` (or `[^`) closes an empty set: `[]]` never matches, `[^]]` is any
///   byte followed by `]`.
/// - `\` makes the next character literal, inside a class too; a `\` at the very end is a
///   literal `\`.
/// - An unclosed `[` ends at the end of the pattern: `[ab` is `[ab]`, and a `[` that ends the
///   pattern matches nothing.
///
/// Two corner cases leave Redis's matcher for what `KEYS` lists: the empty text matches a
/// pattern of stars (Redis's matcher says no, but `KEYS *` lists the empty key), and patterns
/// with more than a thousand `*` are matched (Redis's matcher gives up on them).
///
/// The time is at most proportional to the text's length times its length plus the pattern's,
/// whatever the pattern (no exponential or quadratic blow-up on `*`s or `[`s), so a user's
/// pattern cannot stall a scan.
///
/// Backends without a native pattern match use it for [`Backend::scan`](crate::backend::Backend::scan).
///
/// ```
/// use webcache::backend::glob_match;
/// assert!(glob_match(":1:user.*", ":1:user.42"));
/// assert!(!glob_match(":1:user.?", ":1:user.42"));
/// assert!(glob_match("h[ae]llo", "hallo"));
/// assert!(glob_match("h[!e]llo", "h!llo") && !glob_match("h[!e]llo", "hallo"));
/// assert!(!glob_match("?", "é") && glob_match("??", "é"));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let tokens = compile(pattern.as_bytes());
    let text = text.as_bytes();
    // Each token other than `*` matches exactly one byte, so the classic matcher that
    // remembers only the last `*` is exact: on a mismatch it lets that star take one more byte
    // and retries the rest from there; earlier stars never need to take more.
    let (mut ti, mut pi) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while ti < text.len() {
        match tokens.get(pi) {
            Some(Token::Star) => {
                pi += 1;
                last_star = Some((pi, ti));
            }
            Some(token) if token.matches(text[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match last_star {
                Some((after_star, taken_from)) => {
                    pi = after_star;
                    ti = taken_from + 1;
                    last_star = Some((after_star, ti));
                }
                None => return false,
            },
        }
    }
    tokens[pi..].iter().all(|t| matches!(t, Token::Star))
}

/// One step of a compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Any run of bytes (consecutive stars are one).
    Star,
    /// Any one byte.
    Any,
    /// This byte.
    Byte(u8),
    /// One byte of the set (a 256-bit map, negation already applied).
    Class([u64; 4]),
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(c) => *c == b,
            Token::Class(set) => set[usize::from(b >> 6)] & (1 << (b & 63)) != 0,
        }
    }
}

/// Parses a pattern the way Redis's `stringmatchlen` walks it; each class becomes a byte set
/// once, so matching never re-reads it.
fn compile(p: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            b'?' => tokens.push(Token::Any),
            b'[' => {
                let (set, end) = compile_class(p, i + 1);
                tokens.push(Token::Class(set));
                i = end;
            }
            b'\\' if i + 1 < p.len() => {
                i += 1;
                tokens.push(Token::Byte(p[i]));
            }
            b => tokens.push(Token::Byte(b)),
        }
        i += 1;
    }
    tokens
}

/// The set of the class whose body starts at `p[i]` (just after its `[`), and the index of its
/// last byte (the `]`, or the pattern's last byte when it is not closed).
fn compile_class(p: &[u8], mut i: usize) -> ([u64; 4], usize) {
    let mut set = [0u64; 4];
    let mut add = |b: u8| set[usize::from(b >> 6)] |= 1 << (b & 63);
    let negate = p.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    loop {
        match p.get(i) {
            Some(b'\\') if i + 1 < p.len() => {
                i += 1;
                add(p[i]);
            }
            Some(b']') => break,
            // Unclosed: the class ends with the pattern.
            None => {
                i = p.len().saturating_sub(1);
                break;
            }
            Some(&start) if i + 2 < p.len() && p[i + 1] == b'-' => {
                // Redis compares C `char`s, signed on x86-64: a range is taken between the
                // bytes read as `i8`, either way round.
                let (a, b) = (start as i8, p[i + 2] as i8);
                let (lo, hi) = (a.min(b), a.max(b));
                for c in lo..=hi {
                    add(c as u8);
                }
                i += 2;
            }
            Some(&b) => add(b),
        }
        i += 1;
    }
    if negate {
        for word in &mut set {
            *word = !*word;
        }
    }
    (set, i)
}

/// Escapes the glob metacharacters in `literal`, so a prefix can be combined with a pattern.
///
/// ```
/// use webcache::glob_escape;
/// use webcache::backend::glob_match;
/// let pattern = format!("{}*", glob_escape("app[1]:"));
/// assert!(glob_match(&pattern, "app[1]:x"));
/// assert!(!glob_match(&pattern, "app1:x"));
/// ```
pub fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_key_cannot_reach_a_hashed_one() {
        let f = KeyFunction::default();
        let rules = KeyRules::MEMCACHED;
        let hash = |key: &str| final_key(&f, "p", 1, key, &rules, InvalidKeyPolicy::Hash);
        let hashed = hash("a b").unwrap();
        let name = hashed.strip_prefix("p:1:").unwrap();
        assert!(name.starts_with('#'), "{hashed}");
        // The hashed key's own name, given as a key, is hashed again: another entry.
        assert_ne!(hash(name).unwrap(), hashed);
        assert_ne!(hash(name).unwrap(), format!("p:1:{name}"));
        // The same rule whatever the backend accepts.
        let any = final_key(&f, "p", 1, name, &KeyRules::ANY, InvalidKeyPolicy::Hash).unwrap();
        assert_eq!(any, hash(name).unwrap());
        // Rejecting keys hashes nothing, so `#` keys stay as they are.
        assert_eq!(
            final_key(
                &f,
                "p",
                1,
                "#x",
                &KeyRules::MEMCACHED,
                InvalidKeyPolicy::Reject
            )
            .unwrap(),
            "p:1:#x"
        );
    }

    #[test]
    fn default_key_format_matches_django() {
        let f = KeyFunction::default();
        assert_eq!(f.make("", 1, "foo"), ":1:foo");
        assert_eq!(f.make("app", 3, "foo"), "app:3:foo");
        assert!(f.is_default());
        assert!(!KeyFunction::new(KeyFunction::default_format).is_default());
    }

    #[test]
    fn glob_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("a\\*", "ab"));
        assert!(!glob_match("[unclosed", "[unclosed"));
        assert!(glob_match("[unclosed", "u"));
        assert!(glob_match("*:1:k?y", "p:1:key"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn rules() -> impl Strategy<Value = KeyRules> {
            prop_oneof![Just(KeyRules::ANY), Just(KeyRules::MEMCACHED)]
        }

        fn policy() -> impl Strategy<Value = InvalidKeyPolicy> {
            prop_oneof![Just(InvalidKeyPolicy::Reject), Just(InvalidKeyPolicy::Hash)]
        }

        /// Keys that often break the rules or look like hashed names.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[#a b\t:é]{0,12}",
                "#[0-9a-f]{64}",
                "[a-z]{240,300}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Any key, prefix and version gives a key the backend accepts, or an error that
            /// says how to fix it; never a panic.
            #[test]
            fn building_never_panics_and_obeys_the_rules(
                key in key(),
                prefix in any::<String>(),
                version in any::<i64>(),
                rules in rules(),
                policy in policy(),
            ) {
                let f = KeyFunction::default();
                match final_key(&f, &prefix, version, &key, &rules, policy) {
                    Ok(full) => prop_assert_eq!(rules.violation(&full), None),
                    Err(Error::InvalidKey { reason, .. }) => prop_assert!(!reason.is_empty()),
                    Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                }
            }

            /// Two different keys of one cache never share a stored key, hashed or plain.
            #[test]
            fn different_keys_never_collide(
                a in key(),
                b in key(),
                prefix in "[a-z:]{0,8}",
                version in any::<i64>(),
                rules in rules(),
                policy in policy(),
            ) {
                prop_assume!(a != b);
                let f = KeyFunction::default();
                let build = |k: &str| final_key(&f, &prefix, version, k, &rules, policy);
                if let (Ok(x), Ok(y)) = (build(&a), build(&b)) {
                    prop_assert_ne!(x, y);
                }
                // In particular a key spelled like the hashed name of another.
                let hashed_name = format!("#{:x}", Sha256::digest(&a));
                if let (Ok(x), Ok(y)) = (build(&a), build(&hashed_name)) {
                    prop_assert_ne!(x, y);
                }
            }
        }
    }

    #[test]
    fn invalid_keys_are_rejected_or_hashed() {
        let f = KeyFunction::default();
        let rules = KeyRules::MEMCACHED;
        let long = "k".repeat(300);
        let err = final_key(&f, "", 1, &long, &rules, InvalidKeyPolicy::Reject).unwrap_err();
        assert!(err.to_string().contains("at most 250"), "{err}");
        let err = final_key(&f, "", 1, "a b", &rules, InvalidKeyPolicy::Reject).unwrap_err();
        assert!(err.to_string().contains("' '"), "{err}");
        let hashed = final_key(&f, "p", 1, &long, &rules, InvalidKeyPolicy::Hash).unwrap();
        assert_eq!(
            final_key(&f, "p", 1, "ok", &rules, InvalidKeyPolicy::Hash).unwrap(),
            "p:1:ok"
        );
        assert!(
            hashed.starts_with("p:1:#") && hashed.len() == 5 + 64,
            "{hashed}"
        );
        assert_eq!(
            final_key(&f, "", 1, "ok", &rules, InvalidKeyPolicy::Reject).unwrap(),
            ":1:ok"
        );
    }
}
