//! One connection speaking memcached's meta text protocol (`mg`, `ms`, `md`, `ma`, `mn`), plus
//! the few classic commands the meta protocol lacks (`stats`, `flush_all`,
//! `lru_crawler metadump`).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// The longest reply line accepted; anything longer means the stream is out of step.
const MAX_LINE: usize = 64 * 1024;

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
        })
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

    /// Sends `segments` (one or more pipelined commands) and reads what `expect` says.
    pub(crate) async fn request(
        &mut self,
        segments: &[Bytes],
        expect: Expect,
    ) -> Result<Answer, WireError> {
        for segment in segments {
            self.stream.write_all(segment).await?;
        }
        self.stream.flush().await?;
        match expect {
            Expect::Replies(n) => {
                let mut replies = Vec::with_capacity(n);
                for _ in 0..n {
                    replies.push(self.read_reply().await?);
                }
                Ok(Answer::Replies(replies))
            }
            Expect::LinesUntilEnd => {
                let mut lines = Vec::new();
                loop {
                    let line = self.read_line().await?;
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

    /// One line without its `\r\n` (or bare `\n`, which metadump uses).
    async fn read_line(&mut self) -> Result<&[u8], WireError> {
        self.line.clear();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .await?;
        if n == 0 {
            return Err(WireError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        if self.line.last() != Some(&b'\n') {
            return Err(WireError::Protocol(format!(
                "a reply line longer than {MAX_LINE} bytes"
            )));
        }
        self.line.pop();
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(&self.line)
    }

    async fn read_reply(&mut self) -> Result<Reply, WireError> {
        let line = self.read_line().await?;
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
        let flags: Vec<(u8, String)> = tokens
            .filter_map(|t| t.as_bytes().first().map(|f| (*f, t[1..].to_owned())))
            .collect();
        let data = match value_len {
            None => Bytes::new(),
            Some(len) => {
                let mut buf = BytesMut::zeroed(len + 2);
                self.stream.read_exact(&mut buf).await?;
                if &buf[len..] != b"\r\n" {
                    return Err(WireError::Protocol("a value not followed by \\r\\n".into()));
                }
                buf.truncate(len);
                buf.freeze()
            }
        };
        Ok(Reply { code, flags, data })
    }
}
