//! [`SessionMark`]: how a session layer tells the page cache that an answer depends on who is
//! asking.
//!
//! A page that reads the session (a cart, a greeting by name) must never be served to another
//! user. A session layer puts a `SessionMark` in the request's extensions and sets it while the
//! request is handled; the page cache reads it after the inner service answered, whichever
//! order the two layers are in:
//!
//! - page cache *inside* the session layer: the mark is in the request the page cache sees, so
//!   a personal answer is not stored and an answer that varies on the cookie is stored only as
//!   the variant for the request's `Cookie` header;
//! - page cache *outside* the session layer: the session layer adds `Vary: Cookie` to the
//!   response (as Django's session middleware does) and the page cache honours it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const VARIES_ON_COOKIE: u8 = 1;
const PERSONAL: u8 = 2;

/// A request extension shared between a session layer and the page cache: whether the answer
/// to this request depends on the client's session. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct SessionMark(Arc<AtomicU8>);

impl SessionMark {
    /// A mark that says nothing yet: the answer does not depend on a session.
    pub fn new() -> Self {
        SessionMark::default()
    }

    /// The request's own session was read or written: its answer belongs to one user, so it is
    /// never stored or shared.
    pub fn set_personal(&self) {
        self.0.fetch_max(PERSONAL, Ordering::AcqRel);
    }

    /// The answer may depend on whether the request carries a session cookie (a client without
    /// one may have read an empty session): it may be shared only with requests whose `Cookie`
    /// header is the same.
    pub fn set_varies_on_cookie(&self) {
        self.0.fetch_max(VARIES_ON_COOKIE, Ordering::AcqRel);
    }

    /// Whether [`set_personal`](Self::set_personal) was called.
    pub fn is_personal(&self) -> bool {
        self.0.load(Ordering::Acquire) >= PERSONAL
    }

    /// Whether the answer must at least vary on `Cookie` (true when personal too).
    pub fn varies_on_cookie(&self) -> bool {
        self.0.load(Ordering::Acquire) >= VARIES_ON_COOKIE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_wins_over_varies_on_cookie() {
        let mark = SessionMark::new();
        assert!(!mark.varies_on_cookie() && !mark.is_personal());
        let shared = mark.clone();
        shared.set_personal();
        mark.set_varies_on_cookie();
        assert!(mark.is_personal() && mark.varies_on_cookie());
    }
}
