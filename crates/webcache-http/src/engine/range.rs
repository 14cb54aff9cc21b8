//! Byte ranges (RFC 9110 §14) answered from a stored complete page: one range per request,
//! `first-last`, `first-` and `-suffix`, guarded by `If-Range`; a range past the end is a 416.
//! Several ranges, another unit or a `Range` that does not parse are ignored (§14.2 lets a
//! server do so): the whole page is sent, as a 200.

use bytes::Bytes;
use http::header::{IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue};

use crate::conditional;

/// One `bytes` range as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `first-last` (last included).
    FromTo(u64, u64),
    /// `first-`: to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Parses a `Range` value (RFC 9110 §14.1.1): `Some` for exactly one well-formed `bytes`
/// range (unit in any case, whitespace around the range allowed); `None` for anything else.
pub(crate) fn parse_range(value: &[u8]) -> Option<ByteRange> {
    let (unit, set) = value.trim_ascii().split_at_checked(6)?;
    if !unit.eq_ignore_ascii_case(b"bytes=") {
        return None;
    }
    let spec = set.trim_ascii();
    if spec.contains(&b',') {
        return None;
    }
    let dash = spec.iter().position(|b| *b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    let number = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(ByteRange::Suffix(number(last)?)),
        (false, true) => Some(ByteRange::From(number(first)?)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(ByteRange::FromTo(first, last))
        }
        (true, true) => None,
    }
}

/// What a range asks of a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of it exists (§15.5.17: 416).
    Unsatisfiable,
}

impl ByteRange {
    /// The bytes of a body of `len` bytes this range selects (§14.1.2).
    pub(crate) fn resolve(self, len: u64) -> Resolved {
        let last = match len.checked_sub(1) {
            Some(last) => last,
            None => return Resolved::Unsatisfiable,
        };
        match self {
            ByteRange::FromTo(start, end) if start <= last => Resolved::Part {
                start,
                end: end.min(last),
            },
            ByteRange::From(start) if start <= last => Resolved::Part { start, end: last },
            ByteRange::Suffix(n) if n > 0 => Resolved::Part {
                start: len - n.min(len),
                end: last,
            },
            _ => Resolved::Unsatisfiable,
        }
    }
}

/// The answer to a ranged GET on a stored complete page.
#[derive(Debug)]
pub(crate) enum RangeAnswer {
    /// 206 with this part of the body and this `Content-Range`.
    Partial(Bytes, HeaderValue),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable(HeaderValue),
}

/// What a GET with `Range` gets from a stored complete 200 with `headers` and `body`: `None`
/// when the whole page is sent (no usable single range, or `If-Range` does not hold).
pub(crate) fn answer(
    request: &HeaderMap,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<RangeAnswer> {
    let range = parse_range(request.get(RANGE)?.as_bytes())?;
    if let Some(if_range) = request.get(IF_RANGE) {
        if !conditional::if_range_holds(if_range, headers) {
            return None;
        }
    }
    let len = body.len() as u64;
    Some(match range.resolve(len) {
        Resolved::Part { start, end } => {
            let content_range = format!("bytes {start}-{end}/{len}");
            let part = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .map(|(s, e)| body.slice(s..=e))?;
            RangeAnswer::Partial(part, HeaderValue::from_str(&content_range).ok()?)
        }
        Resolved::Unsatisfiable => {
            RangeAnswer::Unsatisfiable(HeaderValue::from_str(&format!("bytes */{len}")).ok()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_ranges_parse_and_others_do_not() {
        assert_eq!(parse_range(b"bytes=0-499"), Some(ByteRange::FromTo(0, 499)));
        assert_eq!(parse_range(b" Bytes= 9500- "), Some(ByteRange::From(9500)));
        assert_eq!(parse_range(b"bytes=-500"), Some(ByteRange::Suffix(500)));
        for bad in [
            &b"bytes=0-1,4-5"[..],
            b"bytes=5-1",
            b"bytes=-",
            b"items=0-1",
            b"bytes=a-b",
            b"bytes=99999999999999999999-",
            b"bytes",
            b"",
        ] {
            assert_eq!(parse_range(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ranges_resolve_within_the_body() {
        use Resolved::*;
        assert_eq!(
            ByteRange::FromTo(2, 100).resolve(10),
            Part { start: 2, end: 9 }
        );
        assert_eq!(ByteRange::From(10).resolve(10), Unsatisfiable);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Part { start: 7, end: 9 });
        assert_eq!(ByteRange::Suffix(30).resolve(10), Part { start: 0, end: 9 });
        assert_eq!(ByteRange::Suffix(0).resolve(10), Unsatisfiable);
        assert_eq!(ByteRange::From(0).resolve(0), Unsatisfiable);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes: a range or none, never a panic; a range always resolves inside the body.
        #[test]
        fn any_range_resolves_inside_the_body(
            value in proptest::collection::vec(any::<u8>(), 0..40),
            spec in "[bB][yY][tT][eE][sS]= ?[0-9]{0,21}-?[0-9]{0,21} ?",
            len in 0u64..10_000,
        ) {
            for text in [&value[..], spec.as_bytes()] {
                if let Some(range) = parse_range(text) {
                    match range.resolve(len) {
                        Resolved::Part { start, end } => {
                            prop_assert!(start <= end && end < len);
                        }
                        Resolved::Unsatisfiable => {}
                    }
                }
            }
        }

        /// A well-formed single range reads back as written.
        #[test]
        fn well_formed_ranges_read_back(first in any::<u32>(), extra in any::<u32>(), kind in 0..3) {
            let (first, last) = (u64::from(first), u64::from(first) + u64::from(extra));
            let (text, expected) = match kind {
                0 => (format!("bytes={first}-{last}"), ByteRange::FromTo(first, last)),
                1 => (format!("bytes={first}-"), ByteRange::From(first)),
                _ => (format!("bytes=-{last}"), ByteRange::Suffix(last)),
            };
            prop_assert_eq!(parse_range(text.as_bytes()), Some(expected));
        }
    }
}
