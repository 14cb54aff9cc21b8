//! [`Outcome`]: what a `get_or_set` call did to produce its value.

/// What a call of the `get_or_set` family did to produce its value, as the `_outcome` forms
/// ([`get_or_set_with_outcome`](crate::Cache::get_or_set_with_outcome) and its siblings)
/// report it: single flight that says what happened, so an application can answer
/// `x-cache: HIT` or count its computations without setting a flag inside the closure.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
/// use webcache::{Cache, Outcome};
///
/// let cache = Cache::locmem();
/// let (n, outcome) = cache.get_or_set_with_outcome("answer", 60, || async { 42 }).await?;
/// assert_eq!((n, outcome), (42, Outcome::Computed));
/// let (n, outcome) = cache.get_or_set_with_outcome("answer", 60, || async { 0 }).await?;
/// assert_eq!((n, outcome), (42, Outcome::Hit));
/// assert_eq!(if outcome.is_hit() { "HIT" } else { "MISS" }, "HIT");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The value was in the cache, fresh: nothing was computed.
    Hit,
    /// The value was in the cache past its fresh time but within its stale window (the
    /// `_stale` forms only): it was returned at once, and one refresh runs in the background.
    Stale,
    /// This call ran the computation. Its value is stored unless the timeout keeps nothing;
    /// when another process stored a value for the key meanwhile, that value wins and is the
    /// one returned.
    Computed,
    /// Another caller was computing the value (in this process, or, for the `_stale` forms, in
    /// another process holding the key's lease): this call waited and returned its value
    /// without computing.
    Waited,
}

impl Outcome {
    /// Whether the value came out of the cache (fresh or stale) rather than from a
    /// computation, here or by a caller this one waited for: what `x-cache: HIT` means.
    pub fn is_hit(self) -> bool {
        matches!(self, Outcome::Hit | Outcome::Stale)
    }
}
