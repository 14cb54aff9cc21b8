//! Page tags: a handler names the data a page was built from, and invalidating a tag drops
//! those pages in every process that shares the cache.
//!
//! A response is tagged by a [`PageTags`] extension (`(Extension(PageTags::new([..])), body)`
//! in axum) or by a header: `Cache-Tag` (comma-separated, Cloudflare's form) or `Surrogate-Key`
//! (space-separated, Fastly's form). The headers are removed before the client sees the
//! response (see [`CachePageLayer::keep_tag_headers`](crate::CachePageLayer::keep_tag_headers)),
//! and the tags ride in the stored entry's header (webcache-core's tags), so
//! [`Cache::invalidate_tags`](webcache_core::Cache::invalidate_tags) makes those pages misses.

use http::header::HeaderName;
use http::{Extensions, HeaderMap};

/// The header Cloudflare reads tags from: comma-separated.
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
/// The header Fastly reads tags from: space-separated.
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// The most tags a page may carry (webcache-core's bound for one entry).
const MAX_TAGS: usize = 64;
/// The longest tag, in bytes (webcache-core's bound).
const MAX_TAG_LEN: usize = 200;

/// Tags for a page, set by a handler as a response extension.
///
/// ```
/// use axum::{response::IntoResponse, Extension};
/// use webcache::http::PageTags;
///
/// async fn product() -> impl IntoResponse {
///     (Extension(PageTags::new(["products", "product:42"])), "<h1>Teapot</h1>")
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageTags(Vec<String>);

impl PageTags {
    /// Tags for a page.
    pub fn new<I, S>(tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PageTags(tags.into_iter().map(Into::into).collect())
    }

    /// The tags.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Why a response's tags cannot be recorded: such a page is not stored, since invalidating its
/// tags could not drop it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTags {
    /// More tags than an entry carries.
    #[error("more than {MAX_TAGS} tags")]
    TooMany,
    /// A tag longer than the bound, or a header value that is not visible ASCII.
    #[error("a tag is longer than {MAX_TAG_LEN} bytes or not visible ASCII")]
    Unreadable,
}

/// The tags of a response (extension and headers, without duplicates), with the tag headers
/// removed unless `keep_headers`. Empty for an untagged response (the common case, with no
/// allocation).
pub(crate) fn take(
    headers: &mut HeaderMap,
    extensions: &mut Extensions,
    keep_headers: bool,
) -> Result<Vec<String>, BadTags> {
    let mut tags: Vec<String> = extensions
        .remove::<PageTags>()
        .map(|t| t.0)
        .unwrap_or_default();
    let mut unreadable = false;
    for (name, separators) in [(&CACHE_TAG, &[','][..]), (&SURROGATE_KEY, &[' ', '\t'][..])] {
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else {
                unreadable = true;
                continue;
            };
            tags.extend(
                text.split(separators)
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
        // Removed whatever they hold: they are the site's business, readable or not.
        if !keep_headers {
            headers.remove(name);
        }
    }
    if unreadable {
        return Err(BadTags::Unreadable);
    }
    let mut unique: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(BadTags::Unreadable);
        }
        if !unique.contains(&tag) {
            unique.push(tag);
        }
    }
    if unique.len() > MAX_TAGS {
        return Err(BadTags::TooMany);
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn tags_of(
        pairs: &[(&HeaderName, &str)],
        keep: bool,
    ) -> (Result<Vec<String>, BadTags>, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        let result = take(&mut headers, &mut Extensions::new(), keep);
        (result, headers)
    }

    #[test]
    fn both_header_forms_and_the_extension_are_read_and_the_headers_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(&CACHE_TAG, HeaderValue::from_static("products, product:42"));
        headers.append(&CACHE_TAG, HeaderValue::from_static("home"));
        headers.insert(
            &SURROGATE_KEY,
            HeaderValue::from_static("  a  b\tproducts "),
        );
        let mut ext = Extensions::new();
        ext.insert(PageTags::new(["ext"]));
        let tags = take(&mut headers, &mut ext, false).unwrap();
        assert_eq!(tags, ["ext", "products", "product:42", "home", "a", "b"]);
        assert!(headers.is_empty());
        let (kept, headers) = tags_of(&[(&CACHE_TAG, "x")], true);
        assert_eq!(kept.unwrap(), ["x"]);
        assert!(headers.contains_key(&CACHE_TAG));
    }

    #[test]
    fn unrecordable_tags_are_refused() {
        let many = (0..65).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(
            tags_of(&[(&CACHE_TAG, &many)], false).0,
            Err(BadTags::TooMany)
        );
        let long = "x".repeat(201);
        assert_eq!(
            tags_of(&[(&CACHE_TAG, &long)], false).0,
            Err(BadTags::Unreadable)
        );
        let mut headers = HeaderMap::new();
        headers.insert(&CACHE_TAG, HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(
            take(&mut headers, &mut Extensions::new(), false),
            Err(BadTags::Unreadable)
        );
        assert_eq!(
            tags_of(&[(&CACHE_TAG, " , ,")], false).0.unwrap(),
            Vec::<String>::new()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any header bytes give tags that core accepts or a refusal, never a panic; the
            /// headers are gone either way.
            #[test]
            fn arbitrary_tag_headers(
                a in prop::collection::vec(any::<u8>(), 0..300),
                b in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut headers = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&a) {
                    headers.insert(&CACHE_TAG, v);
                }
                if let Ok(v) = HeaderValue::from_bytes(&b) {
                    headers.insert(&SURROGATE_KEY, v);
                }
                if let Ok(tags) = take(&mut headers, &mut Extensions::new(), false) {
                    prop_assert!(tags.len() <= MAX_TAGS);
                    for t in &tags {
                        prop_assert!(!t.is_empty() && t.len() <= MAX_TAG_LEN);
                        prop_assert!(t.trim() == t);
                    }
                }
                prop_assert!(headers.is_empty());
            }
        }
    }
}
