//! Template fragment caching: Django's `{% cache 500 sidebar request.user.username %}` for Rust
//! templates.
//!
//! - [`fragment`] / [`try_fragment`]: for any engine (askama, tera, maud, minijinja, a
//!   `format!`): the rendered text of a fragment under `name` and the values it varies on,
//!   rendered by your closure on a miss.
//! - [`fragment_key`]: the key a fragment is stored under (Django's
//!   `make_template_fragment_key`), so code, or `webcache del` on the command line, can
//!   invalidate one.
//! - `minijinja` (cargo feature `minijinja`): `{% call cache(500, "sidebar", user.name) %}...
//!   {% endcall %}` in templates.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
//! use webcache::fragment::{fragment, fragment_key};
//! use webcache::Cache;
//!
//! let cache = Cache::locmem();
//! let user = "alice";
//! let sidebar = fragment(&cache, "sidebar", &[&user], 500, || async {
//!     format!("<aside>hello {user}</aside>") // render_sidebar(user).await
//! })
//! .await?;
//! assert_eq!(sidebar, "<aside>hello alice</aside>");
//! // Invalidate it from code (the user changed their name):
//! assert!(cache.delete(&fragment_key("sidebar", &[&user])).await?);
//! # Ok(()) }
//! ```
//!
//! A fragment is stored as text with the cache's typed API, so every backend holds it and
//! concurrent misses of one fragment in a process render it once (the cache's single flight).
//! What a cached fragment shows is what it showed when it was rendered: put everything it
//! depends on (the user, the language, a version) in `vary_on`, or tag it: pass a tagged
//! handle (`&cache.tagged(["product:42"])`) and `invalidate_tags` drops it with the rest.

use std::fmt::Display;
use std::future::Future;

use sha2::{Digest, Sha256};
use webcache_core::{Cache, Error, Result, Timeout};

/// The key of fragment `name` varied on `vary_on`: `template.cache.NAME.HASH`, as Django's
/// `make_template_fragment_key`, where HASH stands for the `Display` text of every value of
/// `vary_on`, in order. The minijinja `cache` function builds the same key from the same
/// name and values (a template string `"alice"` and a Rust `"alice"` give one key).
///
/// Unlike Django's (MD5 of the values joined with `:`, so `("a:", "b")` and `("a", ":b")`
/// collide), each value is hashed with its length, so two different lists never share a key.
///
/// ```
/// use webcache::fragment::fragment_key;
/// let key = fragment_key("sidebar", &[&"alice", &42]);
/// assert!(key.starts_with("template.cache.sidebar."));
/// assert_ne!(key, fragment_key("sidebar", &[&"alice", &43]));
/// assert_eq!(fragment_key("sidebar", &[]), "template.cache.sidebar.e3b0c44298fc1c149afbf4c8996fb924");
/// ```
pub fn fragment_key(name: &str, vary_on: &[&dyn Display]) -> String {
    let mut hash = Sha256::new();
    for value in vary_on {
        let text = value.to_string();
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(text.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("template.cache.{name}.{hex}")
}

/// The fragment `name` varied on `vary_on`: the stored text, or on a miss the text `render`
/// gives, stored for `ttl` (seconds, a `Duration`, a [`Timeout`]).
///
/// Cache failures are errors, as with [`Cache::get_or_set_with`]; a cache configured to
/// degrade renders instead. The key is computed before this returns, so `vary_on` need not
/// outlive the call (nor be `Send`).
pub fn fragment<'a, F, Fut>(
    cache: &'a Cache,
    name: &str,
    vary_on: &[&dyn Display],
    ttl: impl Into<Timeout>,
    render: F,
) -> impl Future<Output = Result<String>> + 'a
where
    F: FnOnce() -> Fut + 'a,
    Fut: Future<Output = String> + 'a,
{
    try_fragment(cache, name, vary_on, ttl, move || async move {
        Ok::<_, Error>(render().await)
    })
}

/// [`fragment`] for a renderer that can fail (askama's `render()`, a template error): its error
/// is returned and nothing is stored.
pub fn try_fragment<'a, E, F, Fut>(
    cache: &'a Cache,
    name: &str,
    vary_on: &[&dyn Display],
    ttl: impl Into<Timeout>,
    render: F,
) -> impl Future<Output = Result<String, E>> + 'a
where
    E: From<Error> + 'a,
    F: FnOnce() -> Fut + 'a,
    Fut: Future<Output = Result<String, E>> + 'a,
{
    let key = fragment_key(name, vary_on);
    let ttl = ttl.into();
    async move { cache.try_get_or_set_with(&key, ttl, render).await }
}

#[cfg(feature = "minijinja")]
pub mod minijinja;
