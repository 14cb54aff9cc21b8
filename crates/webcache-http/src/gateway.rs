//! What the client gets when the answer it was promised breaks off before anything was sent:
//! the one home of that rule, for the page cache (a body that failed while it was buffered) and
//! the proxy's routers (a body that failed before its first byte).

use http::StatusCode;

#[cfg(feature = "proxy")]
use crate::proxy::UpstreamBodyError;

/// Whether `error`, or what caused it, is a timeout.
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.downcast_ref::<tokio::time::error::Elapsed>().is_some()
            || is_upstream_timeout(e)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether `error` is the proxy's total timeout on an upstream body.
#[cfg(feature = "proxy")]
fn is_upstream_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        error.downcast_ref::<UpstreamBodyError>(),
        Some(UpstreamBodyError::TotalTimeout { .. })
    )
}

/// Without the proxy there is no upstream body to time out.
#[cfg(not(feature = "proxy"))]
fn is_upstream_timeout(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

/// The answer for a body that broke off before anything was sent: 504 when it was a timeout,
/// 502 otherwise, with what happened in words.
pub(crate) fn broken_body(error: &(dyn std::error::Error + 'static)) -> (StatusCode, String) {
    let status = if is_timeout(error) {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    (
        status,
        format!("{reason}: the response body broke off before it was complete: {error}\n"),
    )
}
