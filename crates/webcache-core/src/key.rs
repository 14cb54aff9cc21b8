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
    /// use webcache_core::KeyFunction;
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
    /// Every key that starts with [`HASH_MARK`] is hashed too, valid or not, so that the
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

/// Whether `text` matches the glob `pattern`, with Redis's syntax: `*` any run, `?` one
/// character, `[abc]`, `[a-z]`, `[^a]` classes, and `\` to escape.
///
/// Backends without a native pattern match use it for [`Backend::scan`](crate::Backend::scan).
///
/// ```
/// use webcache_core::glob_match;
/// assert!(glob_match(":1:user.*", ":1:user.42"));
/// assert!(!glob_match(":1:user.?", ":1:user.42"));
/// assert!(glob_match("h[ae]llo", "hallo"));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with single-star backtracking: linear for typical patterns and never
    // exponential, so a user's pattern cannot stall a scan.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns whether it matched and
/// the index after the class, or `None` if the class is not closed.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if p[i] == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            p[i]
        };
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            let hi = p[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Escapes the glob metacharacters in `literal`, so a prefix can be combined with a pattern.
///
/// ```
/// use webcache_core::{glob_escape, glob_match};
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
        assert!(glob_match("[unclosed", "[unclosed"));
        assert!(glob_match("*:1:k?y", "p:1:key"));
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
