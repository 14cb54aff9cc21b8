//! One connection speaking memcached's meta text protocol (`mg`, `ms`, `md`, `ma`, `mn`), plus
//! the few classic commands the meta protocol lacks (`stats`, `flush_all`,
//! `lru_crawler metadump`).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::server::DEFAULT_ITEM_SIZE_MAX;

/// The longest reply line accepted; anything longer means the stream is out of step.
const MAX_LINE: usize = 64 * 1024;

/// The most memory set aside for a value before its bytes arrive; a longer value grows as it
/// is read, so a server that announces more than it sends costs no more than this.
const PREALLOCATE_MAX: usize = DEFAULT_ITEM_SIZE_MAX;

/// What a request expects back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// This many meta replies (`VA`, `HD`, `EN`, ... or an error line), in request order.
    Replies(usize),
    /// Text lines up to and including a line equal to `END` (`stats`, metadump).
    LinesUntilEnd,
}

/// One meta-protocol reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// `VA`, `HD`, `EN`, `NF`, `NS`, `EX`, `MN`, or an error kind.
    pub(crate) code: Code,
    /// Returned flags such as `t120` or `c42`, as `(flag letter, token)`.
    pub(crate) flags: Vec<(u8, String)>,
    /// The value of a `VA` reply, or the message of an error reply.
    pub(crate) data: Bytes,
}

/// The status of a meta reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// `VA`: a value follows.
    Value,
    /// `HD`: success, no value.
    Stored,
    /// `EN`: miss (mg).
    Miss,
    /// `NF`: not found (md, ma, touch).
    NotFound,
    /// `NS`: not stored (add on a present key).
    NotStored,
    /// `EX`: the compare-and-swap token did not match.
    Exists,
    /// `MN`: end of a pipelined batch.
    NoOp,
    /// `OK`: a classic command (`flush_all`) succeeded.
    Ok,
    /// `CLIENT_ERROR ...`: the server refused the request (the connection stays usable).
    ClientError,
    /// `SERVER_ERROR ...`: the server failed the request (too large, out of memory, ...).
    ServerError,
    /// `ERROR`: unknown command.
    UnknownCommand,
}

impl Reply {
    /// The token of returned flag `flag`, if present.
    pub(crate) fn flag(&self, flag: u8) -> Option<&str> {
        self.flags
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, token)| token.as_str())
    }

    /// The message of an error reply.
    pub(crate) fn message(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// What went wrong on the wire.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The socket failed or closed.
    Io(io::Error),
    /// The server said something this client does not understand; the stream cannot be trusted.
    Protocol(String),
    /// The server stopped answering for this long in the middle of an answer.
    Stalled(Duration),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(m) => write!(f, "unexpected reply: {m}"),
            WireError::Stalled(d) => write!(f, "no answer within {d:?}"),
        }
    }
}

/// The replies to one request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Meta replies, one per pipelined command.
    Replies(Vec<Reply>),
    /// Text lines (without `END` and line ends).
    Lines(Vec<Vec<u8>>),
}

/// A connection to one server.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: BufStream<TcpStream>,
    line: Vec<u8>,
    /// The longest value a reply may carry: the server's item size limit. A `VA` announcing
    /// more is out of protocol (a broken or hostile server), never an allocation.
    value_limit: usize,
}

impl Conn {
    /// Connects within `timeout`.
    pub(crate) async fn connect(addr: &str, timeout: Duration) -> Result<Conn, WireError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                WireError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting took longer than {timeout:?}"),
                ))
            })??;
        // Requests are small and answered at once; Nagle would add delay to each round trip.
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufStream::new(stream),
            line: Vec::with_capacity(128),
            value_limit: DEFAULT_ITEM_SIZE_MAX,
        })
    }

    /// Sets the longest value a reply may carry (the server's item size limit, once read).
    pub(crate) fn set_value_limit(&mut self, limit: usize) {
        self.value_limit = limit;
    }

    /// Whether the server closed this idle connection (or sent something unasked), so that a
    /// pooled connection is not handed out only to fail.
    pub(crate) fn is_stale(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.get_ref().try_read(&mut probe) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// Sends `segments` (one or more pipelined commands) and reads what `expect` says. With
    /// `idle`, each wait (to send, for the next reply or line) is bounded by it, which bounds an
    /// answer of any length (a metadump) without cutting one that keeps coming.
    pub(crate) async fn request(
        &mut self,
        segments: &[Bytes],
        expect: Expect,
        idle: Option<Duration>,
    ) -> Result<Answer, WireError> {
        let stream = &mut self.stream;
        within(idle, async {
            for segment in segments {
                stream.write_all(segment).await?;
            }
            stream.flush().await?;
            Ok(())
        })
        .await?;
        match expect {
            Expect::Replies(n) => {
                let mut replies = Vec::with_capacity(n);
                for _ in 0..n {
                    let reply = read_reply(&mut self.stream, &mut self.line, self.value_limit);
                    replies.push(within(idle, reply).await?);
                }
                Ok(Answer::Replies(replies))
            }
            Expect::LinesUntilEnd => {
                let mut lines = Vec::new();
                loop {
                    let line = within(idle, read_line(&mut self.stream, &mut self.line)).await?;
                    if line == b"END" {
                        return Ok(Answer::Lines(lines));
                    }
                    if line == b"ERROR"
                        || line.starts_with(b"CLIENT_ERROR")
                        || line.starts_with(b"SERVER_ERROR")
                        || line.starts_with(b"BUSY")
                    {
                        // The caller decides what a refusal means; no END follows it.
                        lines.push(line.to_vec());
                        return Ok(Answer::Lines(lines));
                    }
                    lines.push(line.to_vec());
                }
            }
        }
    }
}

/// `work`, failed with [`WireError::Stalled`] if it takes longer than `idle` (if given).
async fn within<T>(
    idle: Option<Duration>,
    work: impl std::future::Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    match idle {
        None => work.await,
        Some(bound) => tokio::time::timeout(bound, work)
            .await
            .map_err(|_| WireError::Stalled(bound))?,
    }
}

/// One line without its `\r\n` (or bare `\n`, which metadump uses), into `line`.
async fn read_line<'l, R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &'l mut Vec<u8>,
) -> Result<&'l [u8], WireError> {
    line.clear();
    let n = reader.take(MAX_LINE as u64).read_until(b'\n', line).await?;
    if n == 0 {
        return Err(WireError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )));
    }
    if line.last() != Some(&b'\n') {
        return Err(WireError::Protocol(format!(
            "a reply line longer than {MAX_LINE} bytes"
        )));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Reads one meta reply; a value longer than `value_limit` is refused before it is read.
async fn read_reply<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    value_limit: usize,
) -> Result<Reply, WireError> {
    let line = read_line(reader, line).await?;
    // Reply lines are ASCII; borrowing the line (no copy) ends before the value is read.
    let text = std::str::from_utf8(line).map_err(|_| {
        WireError::Protocol(format!(
            "a reply line that is not text: {:?}",
            line.escape_ascii().to_string()
        ))
    })?;
    let mut tokens = text.split(' ').filter(|t| !t.is_empty());
    let head = tokens.next().unwrap_or("");
    let (code, value_len) = match head {
        "VA" => {
            let len = tokens
                .next()
                .and_then(|t| t.parse::<usize>().ok())
                .ok_or_else(|| WireError::Protocol(format!("`{text}` has no value length")))?;
            if len > value_limit {
                return Err(WireError::Protocol(format!(
                    "`{}` announces a value of {len} bytes, over the item size limit of {value_limit} bytes",
                    text.escape_debug()
                )));
            }
            (Code::Value, Some(len))
        }
        "HD" => (Code::Stored, None),
        "EN" => (Code::Miss, None),
        "NF" => (Code::NotFound, None),
        "NS" => (Code::NotStored, None),
        "EX" => (Code::Exists, None),
        "MN" => (Code::NoOp, None),
        "OK" => (Code::Ok, None),
        "CLIENT_ERROR" | "SERVER_ERROR" | "ERROR" => {
            let code = match head {
                "CLIENT_ERROR" => Code::ClientError,
                "SERVER_ERROR" => Code::ServerError,
                _ => Code::UnknownCommand,
            };
            let message = text.get(head.len()..).unwrap_or("").trim().to_owned();
            return Ok(Reply {
                code,
                flags: Vec::new(),
                data: Bytes::from(message),
            });
        }
        _ => return Err(WireError::Protocol(format!("`{}`", text.escape_debug()))),
    };
    let mut flags = Vec::new();
    for token in tokens {
        // A flag is one ASCII letter followed by its token.
        match token.split_at_checked(1) {
            Some((flag, rest)) if flag.as_bytes()[0].is_ascii_alphabetic() => {
                flags.push((flag.as_bytes()[0], rest.to_owned()));
            }
            _ => {
                return Err(WireError::Protocol(format!(
                    "`{}` has a flag that is not a letter",
                    text.escape_debug()
                )))
            }
        }
    }
    let data = match value_len {
        None => Bytes::new(),
        Some(len) => read_value(reader, len).await?,
    };
    Ok(Reply { code, flags, data })
}

/// The `len` bytes of a value and the `\r\n` after them. Memory grows with the bytes that
/// arrive (beyond [`PREALLOCATE_MAX`]), not with what the reply line announced.
async fn read_value<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> Result<Bytes, WireError> {
    let total = len
        .checked_add(2)
        .ok_or_else(|| WireError::Protocol(format!("a value of {len} bytes")))?;
    let mut buf = BytesMut::with_capacity(total.min(PREALLOCATE_MAX));
    while buf.len() < total {
        let missing = (total - buf.len()) as u64;
        if (&mut *reader).take(missing).read_buf(&mut buf).await? == 0 {
            return Err(WireError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection in the middle of a value",
            )));
        }
    }
    if buf.get(len..) != Some(&b"\r\n"[..]) {
        return Err(WireError::Protocol("a value not followed by \\r\\n".into()));
    }
    buf.truncate(len);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every reply in `input` (until the first error), read with `limit`.
    fn replies(mut input: &[u8], limit: usize) -> (Vec<Reply>, Option<WireError>) {
        futures::executor::block_on(async {
            let mut line = Vec::new();
            let mut replies = Vec::new();
            loop {
                match read_reply(&mut input, &mut line, limit).await {
                    Ok(reply) => replies.push(reply),
                    Err(e) => return (replies, Some(e)),
                }
            }
        })
    }

    #[test]
    fn replies_are_read() {
        let (got, end) = replies(
            b"VA 3 t-1 c7\r\nabc\r\nHD\r\nEN\r\nSERVER_ERROR out of memory\r\n",
            10,
        );
        assert!(matches!(end, Some(WireError::Io(_))), "{end:?}");
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].code, &got[0].data[..]), (Code::Value, &b"abc"[..]));
        assert_eq!(
            (got[0].flag(b't'), got[0].flag(b'c')),
            (Some("-1"), Some("7"))
        );
        assert_eq!(got[3].message(), "out of memory");
    }

    #[test]
    fn lengths_past_the_limit_are_out_of_protocol() {
        for head in [
            "VA 11",
            "VA 100000000000",
            "VA 18446744073709551615",
            "VA 18446744073709551614",
            "VA 99999999999999999999999",
            "VA -1",
        ] {
            let (got, end) = replies(format!("{head}\r\n").as_bytes(), 10);
            assert!(got.is_empty(), "{head}");
            assert!(
                matches!(end, Some(WireError::Protocol(_))),
                "{head}: {end:?}"
            );
        }
        let (got, _) = replies(b"VA 10\r\n0123456789\r\n", 10);
        assert_eq!(got[0].data.len(), 10);
    }

    #[test]
    fn flags_that_are_not_letters_are_out_of_protocol() {
        for line in ["HD \u{e9}t", "HD 1"] {
            let (got, end) = replies(format!("{line}\r\n").as_bytes(), 10);
            assert!(got.is_empty(), "{line}");
            assert!(
                matches!(end, Some(WireError::Protocol(_))),
                "{line}: {end:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Arbitrary bytes never panic, and no value is longer than the limit.
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512), limit in 0usize..64) {
            let (got, _) = replies(&input, limit);
            for reply in got {
                prop_assert!(reply.code != Code::Value || reply.data.len() <= limit);
            }
        }

        /// Replies shaped like a value (any length, flags and bytes after it): a value is
        /// exactly its announced length and within the limit.
        #[test]
        fn announced_lengths_are_bounded(len in prop_oneof![0u64..100, any::<u64>()], flags in "[ a-zA-Z0-9\u{e9}-]{0,12}", tail in proptest::collection::vec(any::<u8>(), 0..160), limit in 0usize..128) {
            let mut input = format!("VA {len}{flags}\r\n").into_bytes();
            input.extend_from_slice(&tail);
            let (got, _) = replies(&input, limit);
            if let Some(first) = got.first() {
                prop_assert_eq!(first.code, Code::Value);
                prop_assert_eq!(first.data.len() as u64, len);
                prop_assert!(first.data.len() <= limit);
            }
        }
    }
}
