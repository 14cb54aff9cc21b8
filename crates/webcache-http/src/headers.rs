//! Cache-related response headers: `Cache-Control` parsing and patching, `Vary`, `Expires`,
//! and the Django helpers built on them (`cache_control`, `never_cache`, `vary_on_headers`,
//! `vary_on_cookie`), both as functions on a [`HeaderMap`] and as tower layers.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::header::{CACHE_CONTROL, EXPIRES, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::future::MapHeadersFuture;

/// The largest delta-seconds value (`max-age`, `s-maxage`, `Age`) the cache works with: RFC 9111
/// §1.2.2 says a larger value, or one whose arithmetic overflows, is taken as 2^31 seconds
/// (about 68 years). Every duration the policy computes stays within it.
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// A caching header field whose value does not follow its grammar. A cache cannot know what
/// such a field meant (an unreadable `Cache-Control` may hide `private`, an unreadable `Vary`
/// the header a page varies on), so a response carrying one is never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Unparsable {
    /// `Cache-Control` is not a comma-separated list of `token[=token / quoted-string]`
    /// (RFC 9111 §5.2), or is not ASCII.
    #[error("the Cache-Control header does not parse: it must be a comma-separated list of `name` or `name=value` (value a token or a quoted string), in ASCII (RFC 9111 §5.2)")]
    CacheControl,
    /// `Vary` is not `*` or a comma-separated list of header names (RFC 9110 §12.5.5).
    #[error("the Vary header does not parse: it must be `*` or a comma-separated list of header names (RFC 9110 §12.5.5)")]
    Vary,
    /// `Age` is not a non-negative integer (RFC 9111 §5.1).
    #[error("the Age header does not parse: it must be a number of seconds (RFC 9111 §5.1)")]
    Age,
    /// `Date` is not an HTTP date (RFC 9110 §6.6.1).
    #[error("the Date header does not parse: it must be an HTTP date such as `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7)")]
    Date,
}

/// The directives of the `Cache-Control` header fields of a message, in order.
///
/// Parsed as RFC 9111 §5.2 and RFC 9110 §5.6 say: a comma-separated list (empty elements and
/// whitespace around commas allowed) of `name` or `name=value`, where the name is a token
/// (compared case-insensitively, kept lower-cased) and the value a token or a quoted string
/// (quotes removed, `\x` quoted pairs unescaped). Several header lines are read as one list.
/// Anything else (a stray quote, a space around `=`, a byte outside ASCII) is an error, never a
/// partial reading: a directive the parser skipped could have been `private`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    directives: Vec<(String, Option<String>)>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers` (none: no directives).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, Unparsable> {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            cc.parse_into(value.as_bytes())?;
        }
        Ok(cc)
    }

    /// Parses one header value.
    pub fn parse(text: impl AsRef<[u8]>) -> Result<Self, Unparsable> {
        let mut cc = CacheControl::default();
        cc.parse_into(text.as_ref())?;
        Ok(cc)
    }

    fn parse_into(&mut self, text: &[u8]) -> Result<(), Unparsable> {
        let mut rest = text;
        loop {
            rest = skip_list_separators(rest);
            if rest.is_empty() {
                return Ok(());
            }
            let (name, after) = take_token(rest).ok_or(Unparsable::CacheControl)?;
            rest = after;
            let mut value = None;
            if let Some(after) = rest.strip_prefix(b"=") {
                let (v, after) = if after.starts_with(b"\"") {
                    take_quoted_string(after)
                } else {
                    take_token(after).map(|(t, r)| (t.to_owned(), r))
                }
                .ok_or(Unparsable::CacheControl)?;
                value = Some(v);
                rest = after;
            }
            self.directives.push((name.to_ascii_lowercase(), value));
            rest = end_of_list_element(rest).ok_or(Unparsable::CacheControl)?;
        }
    }

    /// Whether the directive is present (with or without a value: `private="set-cookie"` counts
    /// as `private`, which is the safe reading for a cache).
    pub fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|(n, _)| n == name)
    }

    /// The value of the first occurrence of a directive.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A delta-seconds directive (`max-age`, `s-maxage`), at most [`MAX_DELTA_SECONDS`]. A
    /// present but unreadable value reads as 0 (RFC 9111 §4.2.1: treat an invalid freshness as
    /// stale).
    pub fn seconds(&self, name: &str) -> Option<u64> {
        if !self.has(name) {
            return None;
        }
        Some(
            self.get(name)
                .and_then(|v| delta_seconds(v.as_bytes()))
                .unwrap_or(0),
        )
    }

    /// Sets a directive, replacing an older occurrence.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        let name = name.to_ascii_lowercase();
        self.directives.retain(|(n, _)| *n != name);
        self.directives.push((name, value));
    }

    /// Removes a directive.
    pub fn remove(&mut self, name: &str) {
        self.directives.retain(|(n, _)| n != name);
    }

    /// Whether there are no directives.
    pub fn is_empty(&self) -> bool {
        self.directives.is_empty()
    }

    /// Writes the directives back as one `Cache-Control` field (or removes the field when there
    /// are none).
    pub fn write_to(&self, headers: &mut HeaderMap) {
        if self.is_empty() {
            headers.remove(CACHE_CONTROL);
            return;
        }
        match HeaderValue::from_str(&self.to_string()) {
            Ok(v) => {
                headers.insert(CACHE_CONTROL, v);
            }
            Err(_) => tracing::warn!(
                "Cache-Control directives are not a valid header value; left unchanged"
            ),
        }
    }
}

impl fmt::Display for CacheControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.directives.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            if let Some(v) = value {
                let token = !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if token {
                    write!(f, "={v}")?;
                } else {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    f.write_char('"')?;
                }
            }
        }
        Ok(())
    }
}

/// The directives of a targeted cache-control field (RFC 9213: `CDN-Cache-Control`, or a
/// cache's own name such as `Webcache-Cache-Control`), or `None` when `headers` has no such
/// field, it is empty, or it does not parse: RFC 9213 §2.1 says such a field is ignored, and
/// the cache falls back to `Cache-Control`.
///
/// The field is a Structured Field Dictionary (RFC 8941 §3.2), parsed strictly (§4.2.2):
/// lower-case keys, values that are integers, decimals, strings, tokens, byte sequences,
/// booleans or inner lists, parameters (ignored). Several lines are one dictionary; a key given
/// twice keeps its last value. As directives: `key` and `key=?1` are the directive without a
/// value, `key=?0` is absent, an inner list (field names of `private` / `no-cache`) is the
/// directive without a value (the safe reading), anything else is its text.
pub(crate) fn targeted_cache_control(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Option<CacheControl> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut cc = CacheControl::default();
    let mut line = Some(first);
    let mut empty = true;
    while let Some(value) = line {
        let text = value.as_bytes();
        empty &= text.trim_ascii().is_empty();
        parse_sf_dictionary(text, &mut cc)?;
        line = lines.next();
    }
    (!empty).then_some(cc)
}

/// RFC 8941 §4.2.2 into `cc`: `None` when `text` is not a dictionary.
fn parse_sf_dictionary(text: &[u8], cc: &mut CacheControl) -> Option<()> {
    let mut rest = skip_sp(text);
    while !rest.is_empty() {
        let (key, after) = sf_key(rest)?;
        rest = after;
        let value = if let Some(after) = rest.strip_prefix(b"=") {
            let (value, after) = if after.starts_with(b"(") {
                (SfValue::Present, sf_inner_list(after)?)
            } else {
                sf_bare_item(after)?
            };
            rest = sf_parameters(after)?;
            value
        } else {
            rest = sf_parameters(rest)?;
            SfValue::Present
        };
        cc.directives.retain(|(n, _)| n != key);
        match value {
            SfValue::Absent => {}
            SfValue::Present => cc.directives.push((key.to_owned(), None)),
            SfValue::Text(v) => cc.directives.push((key.to_owned(), Some(v))),
        }
        rest = skip_ows(rest);
        if rest.is_empty() {
            return Some(());
        }
        // A comma must be followed by another member (§4.2.2: no trailing comma).
        rest = skip_ows(rest.strip_prefix(b",")?);
        if rest.is_empty() {
            return None;
        }
    }
    Some(())
}

/// A dictionary member's value, as a directive sees it.
enum SfValue {
    /// `?0`: the member says no.
    Absent,
    /// A boolean true or an inner list: the directive, without a value.
    Present,
    Text(String),
}

fn skip_sp(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|b| *b != b' ').unwrap_or(text.len());
    &text[start..]
}

/// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
fn sf_key(text: &[u8]) -> Option<(&str, &[u8])> {
    let first = *text.first()?;
    if !(first.is_ascii_lowercase() || first == b'*') {
        return None;
    }
    let end = text
        .iter()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(b)))
        .unwrap_or(text.len());
    Some((std::str::from_utf8(&text[..end]).ok()?, &text[end..]))
}

/// A bare item (§4.2.3.1) and what follows it.
fn sf_bare_item(text: &[u8]) -> Option<(SfValue, &[u8])> {
    let first = *text.first()?;
    match first {
        b'-' | b'0'..=b'9' => {
            let (negative, digits) = match text.strip_prefix(b"-") {
                Some(d) => (true, d),
                None => (false, text),
            };
            let int_len = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            let mut end = int_len;
            if int_len == 0 || int_len > 15 {
                return None;
            }
            if digits.get(int_len) == Some(&b'.') {
                let frac = digits[int_len + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(digits.len() - int_len - 1);
                if int_len > 12 || frac == 0 || frac > 3 {
                    return None;
                }
                end = int_len + 1 + frac;
            }
            let number = std::str::from_utf8(&digits[..end]).ok()?;
            let value = if negative {
                format!("-{number}")
            } else {
                number.to_owned()
            };
            Some((SfValue::Text(value), &digits[end..]))
        }
        b'"' => {
            let mut value = String::new();
            let mut i = 1;
            loop {
                match *text.get(i)? {
                    b'\\' => {
                        let escaped = *text.get(i + 1)?;
                        if escaped != b'"' && escaped != b'\\' {
                            return None;
                        }
                        value.push(char::from(escaped));
                        i += 2;
                    }
                    b'"' => return Some((SfValue::Text(value), &text[i + 1..])),
                    b @ b' '..=b'~' => {
                        value.push(char::from(b));
                        i += 1;
                    }
                    _ => return None,
                }
            }
        }
        b'?' => match text.get(1)? {
            b'0' => Some((SfValue::Absent, &text[2..])),
            b'1' => Some((SfValue::Present, &text[2..])),
            _ => None,
        },
        b':' => {
            let body = &text[1..];
            let end = body.iter().position(|b| *b == b':')?;
            let bytes = &body[..end];
            if !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
            {
                return None;
            }
            let value = std::str::from_utf8(bytes).ok()?.to_owned();
            Some((SfValue::Text(value), &body[end + 1..]))
        }
        b if b.is_ascii_alphabetic() || b == b'*' => {
            let end = text
                .iter()
                .position(|b| !(is_tchar(*b) || *b == b':' || *b == b'/'))
                .unwrap_or(text.len());
            let token = std::str::from_utf8(&text[..end]).ok()?.to_owned();
            Some((SfValue::Text(token), &text[end..]))
        }
        _ => None,
    }
}

/// `*( ";" *SP key [ "=" bare-item ] )` (§4.2.3.2), skipped: what follows.
fn sf_parameters(mut text: &[u8]) -> Option<&[u8]> {
    while let Some(after) = text.strip_prefix(b";") {
        let (_, after) = sf_key(skip_sp(after))?;
        text = match after.strip_prefix(b"=") {
            Some(value) => sf_bare_item(value)?.1,
            None => after,
        };
    }
    Some(text)
}

/// An inner list (§4.2.1.2) starting at `(`, skipped: what follows its parameters' start.
fn sf_inner_list(text: &[u8]) -> Option<&[u8]> {
    let mut rest = skip_sp(text.strip_prefix(b"(")?);
    loop {
        if let Some(after) = rest.strip_prefix(b")") {
            return Some(after);
        }
        let (_, after) = sf_bare_item(rest)?;
        let after = sf_parameters(after)?;
        // Items are separated by at least one space, or the list ends.
        if !(after.starts_with(b" ") || after.starts_with(b")")) {
            return None;
        }
        rest = skip_sp(after);
    }
}

/// Parses delta-seconds (`1*DIGIT`, RFC 9111 §1.2.2), clamped at [`MAX_DELTA_SECONDS`];
/// `None` when it is not digits.
pub(crate) fn delta_seconds(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for digit in text {
        n = n * 10 + u64::from(digit - b'0');
        if n >= MAX_DELTA_SECONDS {
            return Some(MAX_DELTA_SECONDS);
        }
    }
    Some(n)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ows(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|b| !is_ows(*b)).unwrap_or(text.len());
    &text[start..]
}

/// Skips whitespace and the empty elements a list may contain (RFC 9110 §5.6.1: `, ,a` is `a`).
fn skip_list_separators(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|b| !is_ows(*b) && *b != b',')
        .unwrap_or(text.len());
    &text[start..]
}

/// After a list element: whitespace, then a comma (what follows it) or the end; `None` for
/// anything else.
fn end_of_list_element(text: &[u8]) -> Option<&[u8]> {
    let text = skip_ows(text);
    match text.split_first() {
        None => Some(text),
        Some((b',', rest)) => Some(rest),
        Some(_) => None,
    }
}

/// A token (`1*tchar`) at the start of `text`, and what follows it.
fn take_token(text: &[u8]) -> Option<(&str, &[u8])> {
    let end = text
        .iter()
        .position(|b| !is_tchar(*b))
        .unwrap_or(text.len());
    if end == 0 {
        return None;
    }
    let token = std::str::from_utf8(&text[..end]).ok()?;
    Some((token, &text[end..]))
}

/// A quoted string (RFC 9110 §5.6.4) at the start of `text`, unescaped, and what follows it.
/// Only ASCII is accepted (`obs-text` is refused: its meaning is unknown).
fn take_quoted_string(text: &[u8]) -> Option<(String, &[u8])> {
    let mut bytes = text.strip_prefix(b"\"")?.iter().enumerate();
    let mut value = String::new();
    while let Some((i, &b)) = bytes.next() {
        match b {
            b'"' => return Some((value, &text[i + 2..])),
            b'\\' => {
                let (_, &escaped) = bytes.next()?;
                if !(escaped == b'\t' || (b' '..=b'~').contains(&escaped)) {
                    return None;
                }
                value.push(char::from(escaped));
            }
            b'\t' | b' '..=b'~' => value.push(char::from(b)),
            _ => return None,
        }
    }
    None
}

/// What [`patch_cache_control`] changes, Django's `patch_cache_control(**kwargs)` as a builder.
///
/// ```
/// use std::time::Duration;
/// use webcache::http::headers::{patch_cache_control, CacheControlPatch};
/// let mut headers = http::HeaderMap::new();
/// headers.insert("cache-control", "public, max-age=600".parse().unwrap());
/// patch_cache_control(&mut headers, &CacheControlPatch::new().private().max_age(Duration::from_secs(60)));
/// assert_eq!(headers["cache-control"], "private, max-age=60");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControlPatch {
    set: Vec<(String, Option<String>)>,
}

impl CacheControlPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any directive, with or without a value.
    pub fn directive(mut self, name: &str, value: Option<&str>) -> Self {
        self.set
            .push((name.to_ascii_lowercase(), value.map(str::to_owned)));
        self
    }

    /// `public` (removes `private`).
    pub fn public(self) -> Self {
        self.directive("public", None)
    }
    /// `private` (removes `public`).
    pub fn private(self) -> Self {
        self.directive("private", None)
    }
    /// `no-cache`.
    pub fn no_cache(self) -> Self {
        self.directive("no-cache", None)
    }
    /// `no-store`.
    pub fn no_store(self) -> Self {
        self.directive("no-store", None)
    }
    /// `must-revalidate`.
    pub fn must_revalidate(self) -> Self {
        self.directive("must-revalidate", None)
    }
    /// `proxy-revalidate`.
    pub fn proxy_revalidate(self) -> Self {
        self.directive("proxy-revalidate", None)
    }
    /// `no-transform`.
    pub fn no_transform(self) -> Self {
        self.directive("no-transform", None)
    }
    /// `immutable`.
    pub fn immutable(self) -> Self {
        self.directive("immutable", None)
    }
    /// `max-age` (when the response already has one, the smaller wins).
    pub fn max_age(self, d: Duration) -> Self {
        self.directive("max-age", Some(&d.as_secs().to_string()))
    }
    /// `s-maxage`.
    pub fn s_maxage(self, d: Duration) -> Self {
        self.directive("s-maxage", Some(&d.as_secs().to_string()))
    }
}

/// Django's `patch_cache_control`: adds or replaces directives. When both the response and the
/// patch have `max-age`, the smaller wins; `private` and `public` replace each other.
///
/// A `Cache-Control` that does not parse is left as it is (with a warning): rewriting it would
/// drop what it meant, perhaps `private`, and the page cache never stores such a response.
pub fn patch_cache_control(headers: &mut HeaderMap, patch: &CacheControlPatch) {
    let mut cc = match CacheControl::from_headers(headers) {
        Ok(cc) => cc,
        Err(e) => {
            tracing::warn!("Cache-Control not patched: {e}");
            return;
        }
    };
    for (name, value) in &patch.set {
        match name.as_str() {
            "private" => cc.remove("public"),
            "public" => cc.remove("private"),
            _ => {}
        }
        let mut value = value.clone();
        if name == "max-age" {
            if let (Some(old), Some(new)) = (
                cc.seconds("max-age"),
                value.as_deref().and_then(|v| delta_seconds(v.as_bytes())),
            ) {
                value = Some(old.min(new).to_string());
            }
        }
        cc.set(name, value);
    }
    cc.write_to(headers);
}

/// Django's `patch_response_headers`: sets `Expires` to now + `ttl` when absent and patches
/// `max-age` to at most `ttl` (`ttl` counts as at most [`MAX_DELTA_SECONDS`]).
pub fn patch_response_headers(headers: &mut HeaderMap, ttl: Duration) {
    let ttl = ttl.min(Duration::from_secs(MAX_DELTA_SECONDS));
    if !headers.contains_key(EXPIRES) {
        headers.insert(EXPIRES, http_date(add_saturating(SystemTime::now(), ttl)));
    }
    patch_cache_control(headers, &CacheControlPatch::new().max_age(ttl));
}

/// Django's `add_never_cache_headers`: `Expires` now and
/// `Cache-Control: max-age=0, no-cache, no-store, must-revalidate, private`. A `Cache-Control`
/// that does not parse is replaced (never caching is safe whatever it said).
pub fn add_never_cache_headers(headers: &mut HeaderMap) {
    headers.insert(EXPIRES, http_date(SystemTime::now()));
    if CacheControl::from_headers(headers).is_err() {
        headers.remove(CACHE_CONTROL);
    }
    patch_cache_control(
        headers,
        &CacheControlPatch::new()
            .max_age(Duration::ZERO)
            .no_cache()
            .no_store()
            .must_revalidate()
            .private(),
    );
}

/// The header names listed in the response's `Vary` fields (RFC 9110 §12.5.5), lower-cased, in
/// order, without duplicates; `*` is kept as `*`.
///
/// A `Vary` that does not parse (not `*` or comma-separated header names, or not ASCII) reads
/// as `["*"]`: the response varies on something unknown, so no cache may reuse it.
pub fn vary_names(headers: &HeaderMap) -> Vec<String> {
    parse_vary(headers).unwrap_or_else(|_| vec!["*".to_owned()])
}

/// The names of the `Vary` fields, as [`vary_names`], or why they do not parse.
pub(crate) fn parse_vary(headers: &HeaderMap) -> Result<Vec<String>, Unparsable> {
    let mut names: Vec<String> = Vec::new();
    for value in headers.get_all(VARY) {
        let mut rest = value.as_bytes();
        loop {
            rest = skip_list_separators(rest);
            if rest.is_empty() {
                break;
            }
            // `*` is a tchar, so a token covers it (RFC 9110: `Vary = #( "*" / field-name )`).
            let (name, after) = take_token(rest).ok_or(Unparsable::Vary)?;
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
            rest = end_of_list_element(after).ok_or(Unparsable::Vary)?;
        }
    }
    Ok(names)
}

/// Whether the response's `Vary` lists `name` (case-insensitive).
pub fn has_vary_header(headers: &HeaderMap, name: &str) -> bool {
    vary_names(headers)
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// Django's `patch_vary_headers`: adds `names` to `Vary` unless already there (an existing
/// `Vary: *` stays `*`). A `Vary` that does not parse is kept and the names are added on a line
/// of their own, so neither what it said nor what is added is lost.
pub fn patch_vary_headers(headers: &mut HeaderMap, names: &[&str]) {
    let Ok(mut current) = parse_vary(headers) else {
        match HeaderValue::from_str(&names.join(", ")) {
            Ok(v) if !names.is_empty() => {
                headers.append(VARY, v);
            }
            Ok(_) => {}
            Err(_) => tracing::warn!("Vary names are not a valid header value; left unchanged"),
        }
        return;
    };
    if current.iter().any(|n| n == "*") {
        return;
    }
    let original_len = current.len();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if !current.contains(&lower) {
            current.push(lower);
        }
    }
    if current.len() == original_len && headers.get_all(VARY).iter().count() <= 1 {
        return;
    }
    match HeaderValue::from_str(&current.join(", ")) {
        Ok(v) => {
            headers.insert(VARY, v);
        }
        Err(_) => tracing::warn!("Vary names are not a valid header value; left unchanged"),
    }
}

/// The last instant an HTTP date can show (9999-12-31 23:59:59 UTC).
const LAST_HTTP_DATE: Duration = Duration::from_secs(253_402_300_799);

/// `at + d`, or the latest representable HTTP date when that overflows.
pub(crate) fn add_saturating(at: SystemTime, d: Duration) -> SystemTime {
    at.checked_add(d)
        .unwrap_or(SystemTime::UNIX_EPOCH + LAST_HTTP_DATE)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) as a header value. Times before 1970 or
/// after 9999 are written as the nearest date that can be written.
pub fn http_date(at: SystemTime) -> HeaderValue {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST_HTTP_DATE);
    // An IMF-fixdate is always visible ASCII.
    HeaderValue::from_str(&httpdate::fmt_http_date(
        SystemTime::UNIX_EPOCH + since_epoch,
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The longest HTTP date in any of its three formats (`Wednesday, 09-Nov-94 08:49:37 GMT`).
const LONGEST_HTTP_DATE: usize = 33;

/// Parses an HTTP date header value (`None` when it is not one): any of the three formats of
/// RFC 9110 §5.6.7 (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete RFC 850
/// `Sunday, 06-Nov-94 08:49:37 GMT` and asctime `Sun Nov  6 08:49:37 1994`), with day and
/// month names and `GMT` in any case (a recipient should be lenient, §5.6.7; origins do send
/// `EXPIRES: THU, 01 DEC 1994 16:00:00 gmt`). Leading and trailing whitespace is ignored.
/// Works on a copy on the stack: no allocation.
pub fn parse_http_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.as_bytes().trim_ascii();
    if text.len() > LONGEST_HTTP_DATE || !text.is_ascii() {
        return None;
    }
    // Names as httpdate expects them: `Sun`, `Sunday`, `Nov`, `GMT`.
    let mut buf = [0u8; LONGEST_HTTP_DATE];
    let canonical = &mut buf[..text.len()];
    let mut previous_letter = false;
    for (out, b) in canonical.iter_mut().zip(text) {
        *out = if previous_letter {
            b.to_ascii_lowercase()
        } else {
            b.to_ascii_uppercase()
        };
        previous_letter = b.is_ascii_alphabetic();
    }
    if let Some(zone) = canonical.strip_suffix(b"Gmt").map(<[u8]>::len) {
        canonical[zone..].copy_from_slice(b"GMT");
    }
    httpdate::parse_http_date(std::str::from_utf8(canonical).ok()?).ok()
}

type Patch = Arc<dyn Fn(&mut HeaderMap) + Send + Sync>;

/// A layer that edits the headers of every response of the wrapped service; what the helper
/// functions [`cache_control`], [`never_cache`], [`vary_on_headers`] and [`vary_on_cookie`]
/// return. Like Django's decorators, it can wrap one handler, one route or a whole router.
#[derive(Clone)]
pub struct ResponseHeadersLayer {
    patch: Patch,
}

impl fmt::Debug for ResponseHeadersLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseHeadersLayer")
            .finish_non_exhaustive()
    }
}

impl ResponseHeadersLayer {
    /// A layer that applies `patch` to every response's headers.
    pub fn new(patch: impl Fn(&mut HeaderMap) + Send + Sync + 'static) -> Self {
        ResponseHeadersLayer {
            patch: Arc::new(patch),
        }
    }
}

impl<S> Layer<S> for ResponseHeadersLayer {
    type Service = ResponseHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaders {
            inner,
            patch: self.patch.clone(),
        }
    }
}

/// The service built by [`ResponseHeadersLayer`].
#[derive(Clone)]
pub struct ResponseHeaders<S> {
    inner: S,
    patch: Patch,
}

impl<S: fmt::Debug> fmt::Debug for ResponseHeaders<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseHeaders")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for ResponseHeaders<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = MapHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        MapHeadersFuture::new(self.inner.call(req), self.patch.clone())
    }
}

/// Django's `@cache_control(...)` as a layer: patches `Cache-Control` on every response.
pub fn cache_control(patch: CacheControlPatch) -> ResponseHeadersLayer {
    ResponseHeadersLayer::new(move |h| patch_cache_control(h, &patch))
}

/// Django's `@never_cache` as a layer: see [`add_never_cache_headers`].
pub fn never_cache() -> ResponseHeadersLayer {
    ResponseHeadersLayer::new(add_never_cache_headers)
}

/// Django's `@vary_on_headers(...)` as a layer.
pub fn vary_on_headers(names: &[&str]) -> ResponseHeadersLayer {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    ResponseHeadersLayer::new(move |h| {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        patch_vary_headers(h, &refs);
    })
}

/// Django's `@vary_on_cookie` as a layer.
pub fn vary_on_cookie() -> ResponseHeadersLayer {
    vary_on_headers(&["cookie"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_values_and_case() {
        let cc =
            CacheControl::parse("Public, MAX-AGE=60, private=\"Set-Cookie, X\", no-cache").unwrap();
        assert!(cc.has("public"));
        assert!(cc.has("private"));
        assert_eq!(cc.get("private"), Some("Set-Cookie, X"));
        assert_eq!(cc.seconds("max-age"), Some(60));
        assert_eq!(
            CacheControl::parse("max-age=abc")
                .unwrap()
                .seconds("max-age"),
            Some(0)
        );
    }

    #[test]
    fn patch_keeps_the_smaller_max_age() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=30, public"),
        );
        patch_cache_control(
            &mut h,
            &CacheControlPatch::new().max_age(Duration::from_secs(60)),
        );
        assert_eq!(h[CACHE_CONTROL], "public, max-age=30");
        patch_cache_control(
            &mut h,
            &CacheControlPatch::new()
                .max_age(Duration::from_secs(10))
                .private(),
        );
        assert_eq!(h[CACHE_CONTROL], "max-age=10, private");
    }

    #[test]
    fn vary_patch_dedups_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        patch_vary_headers(&mut h, &["accept-encoding", "Cookie"]);
        assert_eq!(h[VARY], "accept-encoding, cookie");
        h.insert(VARY, HeaderValue::from_static("*"));
        patch_vary_headers(&mut h, &["cookie"]);
        assert_eq!(h[VARY], "*");
    }

    #[test]
    fn cache_control_follows_the_rfc_grammar() {
        let cc = CacheControl::parse(", max-age=60 ,, foo=\"a\\\"b\\\\c,d\" ,\tPrivate").unwrap();
        assert_eq!(cc.seconds("max-age"), Some(60));
        assert_eq!(cc.get("foo"), Some("a\"b\\c,d"));
        assert!(cc.has("private"));
        assert_eq!(CacheControl::parse("").unwrap(), CacheControl::default());
        for bad in [
            &b"max-age=60, foo=\"bar, private"[..],
            b"max-age = 60, private",
            b"max-age=, private",
            b"private; max-age=60",
            b"foo=\"a\\\xe9\", private",
            b"private, x=\"\xe9\"",
            b"pri\xffvate",
            b"=60",
            b"foo=\"a\"b, private",
        ] {
            assert_eq!(
                CacheControl::parse(bad),
                Err(Unparsable::CacheControl),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut h = HeaderMap::new();
        h.append(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        h.append(CACHE_CONTROL, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(
            CacheControl::from_headers(&h),
            Err(Unparsable::CacheControl)
        );
    }

    #[test]
    fn delta_seconds_clamp_at_2_pow_31() {
        assert_eq!(delta_seconds(b"0"), Some(0));
        assert_eq!(delta_seconds(b"2147483647"), Some(2_147_483_647));
        assert_eq!(delta_seconds(b"2147483648"), Some(MAX_DELTA_SECONDS));
        assert_eq!(
            delta_seconds(b"99999999999999999999999999999"),
            Some(MAX_DELTA_SECONDS)
        );
        for bad in [&b""[..], b"-1", b"1.5", b" 1", b"+1"] {
            assert_eq!(delta_seconds(bad), None);
        }
        let cc = CacheControl::parse("max-age=18446744073709551615").unwrap();
        assert_eq!(cc.seconds("max-age"), Some(MAX_DELTA_SECONDS));
    }

    #[test]
    fn an_unparsable_cache_control_is_never_rewritten_except_by_never_cache() {
        let bad = HeaderValue::from_bytes(b"private, x=\"\xe9\"").unwrap();
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, bad.clone());
        patch_response_headers(&mut h, Duration::from_secs(60));
        assert_eq!(h[CACHE_CONTROL], bad);
        add_never_cache_headers(&mut h);
        assert_eq!(
            h[CACHE_CONTROL],
            "max-age=0, no-cache, no-store, must-revalidate, private"
        );
    }

    #[test]
    fn vary_follows_the_rfc_grammar_and_an_unparsable_one_reads_as_star() {
        let mut h = HeaderMap::new();
        h.append(
            VARY,
            HeaderValue::from_static(" , Accept-Language,,cookie "),
        );
        h.append(VARY, HeaderValue::from_static("COOKIE"));
        assert_eq!(vary_names(&h), ["accept-language", "cookie"]);
        for bad in [&b"accept language"[..], b"x-\xe9", b"a;b", b"\"a\""] {
            let mut h = HeaderMap::new();
            h.append(VARY, HeaderValue::from_static("accept"));
            h.append(VARY, HeaderValue::from_bytes(bad).unwrap());
            assert_eq!(parse_vary(&h), Err(Unparsable::Vary));
            assert_eq!(vary_names(&h), ["*"]);
            // Patching keeps the unreadable line and adds the name on a line of its own.
            patch_vary_headers(&mut h, &["authorization"]);
            let lines: Vec<&[u8]> = h.get_all(VARY).iter().map(HeaderValue::as_bytes).collect();
            assert_eq!(lines, [&b"accept"[..], bad, b"authorization"]);
        }
    }

    #[test]
    fn http_date_saturates_outside_what_it_can_write() {
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let far = add_saturating(SystemTime::UNIX_EPOCH, Duration::MAX);
        assert_eq!(http_date(far), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}

/// Strategies for the property tests of the parsers of client and origin input.
#[cfg(test)]
pub(crate) mod strategies {
    use http::HeaderValue;
    use proptest::prelude::*;

    /// Header values made of the bytes and words that matter to caching headers (quotes,
    /// backslashes, commas, `=`, whitespace, non-ASCII, directive names, numbers), plus any
    /// byte a header value may hold.
    pub(crate) fn header_value() -> impl Strategy<Value = HeaderValue> {
        let piece = prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b",".to_vec()),
            Just(b"=".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"W/".to_vec()),
            Just(b"*".to_vec()),
            Just(b"private".to_vec()),
            Just(b"public".to_vec()),
            Just(b"no-store".to_vec()),
            Just(b"max-age".to_vec()),
            Just(b"s-maxage".to_vec()),
            Just(b"cookie".to_vec()),
            Just(b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec()),
            "[0-9]{1,25}".prop_map(String::into_bytes),
            "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,8}".prop_map(String::into_bytes),
            (0x80u8..=0xff).prop_map(|b| vec![b]),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(piece, 0..12).prop_filter_map("not a header value", |pieces| {
            HeaderValue::from_bytes(&pieces.concat()).ok()
        })
    }
}

#[cfg(test)]
mod proptests {
    use super::strategies::header_value;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Anything parses or is refused without a panic; what parses writes back to itself.
        #[test]
        fn cache_control_parses_or_refuses_and_round_trips(value in header_value()) {
            if let Ok(cc) = CacheControl::parse(value.as_bytes()) {
                let written = cc.to_string();
                prop_assert_eq!(CacheControl::parse(&written), Ok(cc));
            }
        }

        /// Nothing written before or after `private` can hide it: the header either parses
        /// with `private` or does not parse at all.
        #[test]
        fn private_is_never_hidden(before in header_value(), after in header_value()) {
            let mut text = before.as_bytes().to_vec();
            text.extend_from_slice(b", private, ");
            text.extend_from_slice(after.as_bytes());
            if let Ok(cc) = CacheControl::parse(&text) {
                // Inside a quoted string `private` is a value, not a directive: then the
                // string must have been closed and reopened around it by what came before.
                let quotes_before = before.as_bytes().iter().filter(|b| **b == b'"').count();
                prop_assert!(cc.has("private") || quotes_before > 0);
            }
            let mut text = b"private, ".to_vec();
            text.extend_from_slice(after.as_bytes());
            if let Ok(cc) = CacheControl::parse(&text) {
                prop_assert!(cc.has("private"));
            }
        }

        /// Well-formed directive lists read back exactly, whatever their values hold.
        #[test]
        fn well_formed_directives_read_back(
            directives in proptest::collection::vec(
                ("[a-zA-Z][a-zA-Z0-9-]{0,10}", proptest::option::of("[ -~\t]{0,12}")),
                0..6,
            )
        ) {
            let mut text = String::new();
            for (i, (name, value)) in directives.iter().enumerate() {
                if i > 0 { text.push_str(" ,\t"); }
                text.push_str(name);
                if let Some(v) = value {
                    text.push_str("=\"");
                    for c in v.chars() {
                        if c == '"' || c == '\\' { text.push('\\'); }
                        text.push(c);
                    }
                    text.push('"');
                }
            }
            let cc = CacheControl::parse(&text).unwrap();
            for (name, value) in &directives {
                prop_assert!(cc.has(&name.to_ascii_lowercase()));
                let first = directives
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_deref());
                prop_assert_eq!(cc.get(&name.to_ascii_lowercase()), first);
                let _ = value;
            }
        }

        #[test]
        fn delta_seconds_never_exceed_2_pow_31(digits in "[0-9]{1,40}", junk in header_value()) {
            let n = delta_seconds(digits.as_bytes()).unwrap();
            prop_assert!(n <= MAX_DELTA_SECONDS);
            if let Ok(exact) = digits.parse::<u64>() {
                prop_assert_eq!(n, exact.min(MAX_DELTA_SECONDS));
            }
            if let Some(n) = delta_seconds(junk.as_bytes()) {
                prop_assert!(n <= MAX_DELTA_SECONDS);
                prop_assert!(junk.as_bytes().iter().all(u8::is_ascii_digit));
            }
        }

        /// A Vary that does not parse reads as `*`; one that parses lists only header names.
        #[test]
        fn vary_parses_or_reads_as_star(lines in proptest::collection::vec(header_value(), 0..3)) {
            let mut h = HeaderMap::new();
            for line in &lines {
                h.append(VARY, line.clone());
            }
            match parse_vary(&h) {
                Ok(names) => {
                    for n in &names {
                        prop_assert!(n == "*" || http::HeaderName::from_bytes(n.as_bytes()).is_ok());
                    }
                    prop_assert_eq!(vary_names(&h), names);
                }
                Err(_) => prop_assert_eq!(vary_names(&h), vec!["*".to_owned()]),
            }
            // Patching never loses what was there: the result still varies on all of it.
            let before = vary_names(&h);
            patch_vary_headers(&mut h, &["authorization"]);
            let after = vary_names(&h);
            prop_assert!(after.iter().any(|n| n == "*" || n == "authorization"));
            for n in before {
                prop_assert!(after.contains(&n) || after.iter().any(|a| a == "*"));
            }
        }

        /// Patching never panics, and never rewrites a Cache-Control it could not read.
        #[test]
        fn patches_never_rewrite_what_they_cannot_read(value in header_value(), ttl in any::<u64>()) {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, value.clone());
            patch_response_headers(&mut h, Duration::from_secs(ttl));
            prop_assert!(parse_http_date(&h[EXPIRES]).is_some());
            if CacheControl::parse(value.as_bytes()).is_err() {
                prop_assert_eq!(&h[CACHE_CONTROL], &value);
            } else {
                let cc = CacheControl::from_headers(&h).unwrap();
                prop_assert!(cc.seconds("max-age").unwrap() <= ttl.min(MAX_DELTA_SECONDS));
            }
        }

        /// A targeted field (RFC 9213) of any bytes: directives or `None`, never a panic; what
        /// it reads is a valid Cache-Control again.
        #[test]
        fn targeted_fields_parse_or_are_ignored(lines in proptest::collection::vec(header_value(), 0..3)) {
            let mut h = HeaderMap::new();
            for line in &lines {
                h.append("cdn-cache-control", line.clone());
            }
            let name = HeaderName::from_static("cdn-cache-control");
            if let Some(cc) = targeted_cache_control(&h, &name) {
                prop_assert!(!lines.is_empty());
                prop_assert_eq!(CacheControl::parse(cc.to_string()), Ok(cc));
            }
        }

        /// A well-formed dictionary reads back member by member: integers as seconds,
        /// strings and tokens as values, booleans as presence, parameters ignored.
        #[test]
        fn targeted_dictionaries_read_back(
            members in proptest::collection::vec(
                ("[a-z*][a-z0-9_.*-]{0,8}", 0..5u8, 0u32..100_000, "[ -!#-\\[\\]-~]{0,8}"),
                1..6,
            ),
            params in any::<bool>(),
        ) {
            let mut text = String::new();
            let mut expected: Vec<(String, Option<Option<String>>)> = Vec::new();
            for (i, (key, kind, n, string)) in members.iter().enumerate() {
                if i > 0 { text.push_str(" ,  "); }
                text.push_str(key);
                let value = match kind {
                    0 => { Some(None) }
                    1 => { text.push_str(&format!("={n}")); Some(Some(n.to_string())) }
                    2 => { text.push_str(&format!("=\"{string}\"")); Some(Some(string.clone())) }
                    3 => { text.push_str("=?0"); None }
                    _ => { text.push_str("=?1"); Some(None) }
                };
                if params { text.push_str(";a=1;b"); }
                expected.retain(|(k, _)| k != key);
                expected.push((key.clone(), value));
            }
            let mut h = HeaderMap::new();
            h.insert("webcache-cache-control", HeaderValue::from_str(&text).unwrap());
            let cc = targeted_cache_control(&h, &HeaderName::from_static("webcache-cache-control"));
            let cc = cc.unwrap();
            for (key, value) in &expected {
                match value {
                    None => prop_assert!(!cc.has(key)),
                    Some(v) => {
                        prop_assert!(cc.has(key));
                        prop_assert_eq!(cc.get(key), v.as_deref());
                    }
                }
            }
        }

        /// Dates in any of the three formats and any case read as the instant they name.
        #[test]
        fn http_dates_in_every_format_and_case(secs in 0u64..4_000_000_000, format in 0..3, upper in any::<bool>()) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let imf = httpdate::fmt_http_date(at);
            let parsed = httpdate::HttpDate::from(at);
            let _ = parsed;
            // `Sun, 06 Nov 1994 08:49:37 GMT`: rebuild the two obsolete formats from its parts.
            let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
            let (wday, day, mon, year, time) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
            let text = match format {
                0 => imf.clone(),
                1 if (1970..2070).contains(&year.parse::<u32>().unwrap()) => {
                    let long = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
                        .iter().find(|l| l.starts_with(wday)).unwrap();
                    format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..])
                }
                1 => imf.clone(),
                _ => format!("{wday} {mon} {:>2} {time} {year}", day.trim_start_matches('0')),
            };
            let text = if upper { text.to_ascii_uppercase() } else { text.to_ascii_lowercase() };
            let value = HeaderValue::from_str(&text).unwrap();
            prop_assert_eq!(parse_http_date(&value), Some(at), "{}", text);
        }

        /// Dates are written for any instant and read back; any bytes read as a date or none.
        #[test]
        fn http_dates_never_panic(secs in any::<u64>(), back in any::<bool>(), value in header_value()) {
            let d = Duration::from_secs(secs);
            let at = if back {
                SystemTime::UNIX_EPOCH.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)
            } else {
                add_saturating(SystemTime::UNIX_EPOCH, d)
            };
            prop_assert!(parse_http_date(&http_date(at)).is_some());
            let _ = parse_http_date(&value);
        }
    }
}
