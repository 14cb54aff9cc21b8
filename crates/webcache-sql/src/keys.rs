//! Key ranges: the `[from, end)` range of keys a prefix or a glob pattern can match, so that
//! prefix clears and scans use the primary key's index; and key lists padded for `IN (...)`.

/// The smallest string greater than every string that starts with `prefix` (in code point
/// order, which is the byte order of UTF-8), or `None` when there is none.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The literal text every match of a glob pattern starts with (up to its first wildcard).
pub(crate) fn glob_literal_prefix(pattern: &str) -> String {
    let mut prefix = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(escaped) => prefix.push(escaped),
                None => break,
            },
            c => prefix.push(c),
        }
    }
    prefix
}

/// Pads a key list to a power of two by repeating its last key, so that `IN (...)` lists of
/// any length map to a handful of prepared statements (duplicates change nothing in `IN`).
pub(crate) fn padded(keys: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = keys.iter().map(String::as_str).collect();
    if let Some(&last) = out.last() {
        out.resize(out.len().next_power_of_two(), last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_end("app:1:").as_deref(), Some("app:1;"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }

    #[test]
    fn glob_prefixes() {
        assert_eq!(glob_literal_prefix("app:1:user.*"), "app:1:user.");
        assert_eq!(glob_literal_prefix("a\\*b?c"), "a*b");
        assert_eq!(glob_literal_prefix("[ab]c"), "");
        assert_eq!(glob_literal_prefix("plain"), "plain");
    }

    #[test]
    fn key_lists_pad_to_powers_of_two() {
        let keys: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(padded(&keys), ["a", "b", "c", "c"]);
        assert!(padded(&[]).is_empty());
    }
}
