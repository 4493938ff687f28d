//! HTTP/1.x on the wire: reading a request head and body with timeouts, writing a reply.
//!
//! Written by hand on httparse rather than hyper because the mock must misbehave the way
//! Odoo's werkzeug server does (HTTP/1.0 replies, silent closes, RSTs, garbage) and count
//! exactly what arrived.

use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Odoo's `DEFAULT_MAX_CONTENT_LENGTH` (128 MiB); larger bodies get 413.
pub(crate) const MAX_BODY: u64 = 128 * 1024 * 1024;

/// A head bigger than this is refused with 400 rather than buffered forever.
const MAX_HEAD: usize = 64 * 1024;

/// Bytes asked of the kernel per read; small so thousands of idle connections stay cheap.
const READ_CHUNK: usize = 8 * 1024;

/// `mock_size` replies are written in pieces of this size so a big reply streams.
const WRITE_CHUNK: usize = 64 * 1024;

/// Byte `i` of a `mock_size` body is `PATTERN[i % 64]`; 64 divides `WRITE_CHUNK`, so every
/// chunk continues the pattern.
pub const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

static PATTERN_CHUNK: [u8; WRITE_CHUNK] = {
    let mut chunk = [0u8; WRITE_CHUNK];
    let mut i = 0;
    while i < WRITE_CHUNK {
        chunk[i] = PATTERN[i % PATTERN.len()];
        i += 1;
    }
    chunk
};

/// Why a request could not be read; each maps to one way of ending the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("peer closed the connection")]
    Closed,
    #[error("no data within the read timeout")]
    Timeout,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request body above the 128 MiB limit")]
    TooLarge,
    #[error("read failed")]
    Io(#[from] io::Error),
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// In received order; names lowercased, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
}

/// What the body was, without keeping it: bodies may be 128 MiB.
#[derive(Debug)]
pub(crate) struct BodyDigest {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// One reply; `Pattern(n)` is `n` bytes of [`PATTERN`], streamed; `File` is streamed from disk.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
}

/// A reply body: bytes in memory, a streamed run of [`PATTERN`], or a slice of a file.
#[derive(Debug)]
pub(crate) enum ReplyBody {
    Bytes(Vec<u8>),
    Pattern(u64),
    /// `len` bytes of the file at `path` from offset `start`, read only when written, so a
    /// HEAD or a big static file costs no memory.
    File {
        path: PathBuf,
        start: u64,
        len: u64,
    },
}

/// One accepted connection with its read-ahead buffer.
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Bytes read but not consumed yet (the next request, or websocket frames after a head).
    pub buf: BytesMut,
    read_timeout: Duration,
}

// === impl Head ===

impl Head {
    /// The path part of the request target.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The raw query string, if the target has a `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// A query parameter's raw value; `Some("")` when present without `=`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// A query parameter percent-decoded (lossily as UTF-8), as a controller receives it.
    pub fn query_decoded(&self, key: &str) -> Option<String> {
        let raw = self.query_param(key)?;
        Some(String::from_utf8_lossy(&percent_decode(raw, true)).into_owned())
    }

    /// The first value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header joined with `", "`, as WSGI presents repeated headers.
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether a comma-separated header carries `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// "HTTP/1.0" or "HTTP/1.1".
    pub fn version(&self) -> &'static str {
        if self.minor_version == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    /// The body framing, from `Transfer-Encoding` then `Content-Length`.
    pub fn framing(&self) -> Result<Framing, ReadError> {
        if let Some(te) = self.header_joined("transfer-encoding") {
            // Only "chunked" as the final coding delimits a request body (RFC 9112 §6.3).
            let last = te.rsplit(',').next().unwrap_or("").trim();
            return if last.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(ReadError::Malformed("unsupported transfer-encoding"))
            };
        }
        let mut length = None;
        for (_, value) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| ReadError::Malformed("invalid content-length"))?;
            if length.is_some_and(|prev| prev != n) {
                return Err(ReadError::Malformed("conflicting content-length"));
            }
            length = Some(n);
        }
        Ok(match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

// === impl Reply ===

impl Reply {
    /// A reply with a body and its content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: ReplyBody::Bytes(body.into()),
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply::new(status, "application/json", body)
    }

    /// A werkzeug-style HTML error page, as Odoo renders an `HTTPException`.
    pub fn werkzeug_error(status: u16, description: &str) -> Self {
        let name = reason(status);
        let page = format!(
            "<!doctype html>\n<html lang=en>\n<title>{status} {name}</title>\n\
             <h1>{name}</h1>\n<p>{description}</p>\n"
        );
        Reply::new(status, "text/html; charset=utf-8", page)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body_len(&self) -> u64 {
        match &self.body {
            ReplyBody::Bytes(b) => b.len() as u64,
            ReplyBody::Pattern(n) => *n,
            ReplyBody::File { len, .. } => *len,
        }
    }
}

// === impl Conn ===

impl Conn {
    /// Wraps an accepted stream; `read_timeout` bounds each read once a request has begun.
    pub fn new(stream: TcpStream, peer: SocketAddr, read_timeout: Duration) -> Self {
        Conn {
            stream,
            peer,
            buf: BytesMut::new(),
            read_timeout,
        }
    }

    /// Reads once more into `buf`; every read but an idle keep-alive wait is bounded.
    async fn fill(&mut self, timeout: Option<Duration>) -> Result<(), ReadError> {
        self.buf.reserve(READ_CHUNK);
        let read = self.stream.read_buf(&mut self.buf);
        let n = match timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| ReadError::Timeout)??,
            None => read.await?,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Reads a request head. `idle` bounds the wait for its first byte (`None`: wait forever);
    /// once it has started, each read gets the read timeout, as Odoo's 2 s socket timeout does.
    pub async fn read_head(&mut self, idle: Option<Duration>) -> Result<Head, ReadError> {
        // Memory held by a big previous request is given back before idling.
        if self.buf.is_empty() && self.buf.capacity() > 2 * READ_CHUNK {
            self.buf = BytesMut::new();
        }
        loop {
            if !self.buf.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; 100];
                let mut req = httparse::Request::new(&mut slots);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = Head {
                            method: req.method.unwrap_or("").to_owned(),
                            target: req.path.unwrap_or("").to_owned(),
                            minor_version: req.version.unwrap_or(1),
                            headers: req
                                .headers
                                .iter()
                                .map(|h| {
                                    let value = String::from_utf8_lossy(h.value).into_owned();
                                    (h.name.to_ascii_lowercase(), value)
                                })
                                .collect(),
                        };
                        self.buf.advance(len);
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Err(ReadError::Malformed("request head too large"));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(ReadError::Malformed("unparsable request head")),
                }
            }
            let timeout = if self.buf.is_empty() {
                idle
            } else {
                Some(self.read_timeout)
            };
            self.fill(timeout).await?;
        }
    }

    /// Reads and hashes the body; only the digest is kept.
    pub async fn read_body(&mut self, framing: Framing) -> Result<BodyDigest, ReadError> {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                self.consume(n, &mut hasher).await?;
                len = n;
            }
            Framing::Chunked => loop {
                let size = self.chunk_size().await?;
                if size == 0 {
                    self.skip_trailers().await?;
                    break;
                }
                len = len.saturating_add(size);
                if len > MAX_BODY {
                    return Err(ReadError::TooLarge);
                }
                self.consume(size, &mut hasher).await?;
                self.expect_crlf().await?;
            },
        }
        Ok(BodyDigest {
            len,
            sha256: hasher.finalize().into(),
        })
    }

    async fn consume(&mut self, mut left: u64, hasher: &mut Sha256) -> Result<(), ReadError> {
        while left > 0 {
            if self.buf.is_empty() {
                self.fill(Some(self.read_timeout)).await?;
            }
            let take = left.min(self.buf.len() as u64) as usize;
            hasher.update(&self.buf[..take]);
            self.buf.advance(take);
            left -= take as u64;
        }
        Ok(())
    }

    async fn chunk_size(&mut self) -> Result<u64, ReadError> {
        loop {
            match httparse::parse_chunk_size(&self.buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    self.buf.advance(used);
                    return Ok(size);
                }
                Ok(httparse::Status::Partial) if self.buf.len() > READ_CHUNK => {
                    return Err(ReadError::Malformed("chunk size line too long"));
                }
                Ok(httparse::Status::Partial) => self.fill(Some(self.read_timeout)).await?,
                Err(_) => return Err(ReadError::Malformed("invalid chunk size")),
            }
        }
    }

    async fn expect_crlf(&mut self) -> Result<(), ReadError> {
        while self.buf.len() < 2 {
            self.fill(Some(self.read_timeout)).await?;
        }
        if &self.buf[..2] != b"\r\n" {
            return Err(ReadError::Malformed("chunk not followed by CRLF"));
        }
        self.buf.advance(2);
        Ok(())
    }

    /// Skips trailer fields up to the empty line that ends a chunked body.
    async fn skip_trailers(&mut self) -> Result<(), ReadError> {
        loop {
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(end) => self.buf.advance(end + 2),
                None if self.buf.len() > MAX_HEAD => {
                    return Err(ReadError::Malformed("trailers too large"));
                }
                None => self.fill(Some(self.read_timeout)).await?,
            }
        }
    }

    /// Writes a reply with the standard mock headers; `close` adds `Connection: close`.
    pub async fn write_reply(
        &mut self,
        node: &str,
        version: &str,
        reply: Reply,
        close: bool,
        head_only: bool,
    ) -> io::Result<()> {
        let status = reply.status;
        let len = reply.body_len();
        let mut head = format!("{version} {status} {}\r\n", reason(status));
        head.push_str("Server: mock-odoo\r\n");
        head.push_str(&format!("X-Mock-Node: {node}\r\n"));
        head.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        // 1xx, 204 and 304 replies never carry a body (RFC 9110 §6.4.1). A 304 gets no
        // Content-Length either: werkzeug drops it, and 0 would misstate the stored entity.
        let bodyless = status < 200 || status == 204 || status == 304;
        if !bodyless {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        match reply.body {
            _ if head_only || bodyless => self.stream.write_all(&out).await?,
            ReplyBody::Bytes(body) => {
                // One write for head and body, so small replies leave in one segment.
                out.extend_from_slice(&body);
                self.stream.write_all(&out).await?;
            }
            ReplyBody::Pattern(mut left) => {
                self.stream.write_all(&out).await?;
                while left > 0 {
                    let n = left.min(WRITE_CHUNK as u64) as usize;
                    self.stream.write_all(&PATTERN_CHUNK[..n]).await?;
                    left -= n as u64;
                }
            }
            ReplyBody::File { path, start, len } => {
                // Opened before the head is sent, so a vanished file closes the connection
                // with nothing written rather than with a truncated reply.
                let mut file = tokio::fs::File::open(&path).await?;
                file.seek(SeekFrom::Start(start)).await?;
                self.stream.write_all(&out).await?;
                let sent = tokio::io::copy(&mut file.take(len), &mut self.stream).await?;
                if sent < len {
                    // The file shrank after its size was announced: the only honest end
                    // is to close short of Content-Length.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being served",
                    ));
                }
            }
        }
        self.stream.flush().await
    }
}

/// The reason phrase werkzeug sends (it keeps RFC 2616's names, e.g. for 413).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        413 => "Request Entity Too Large",
        414 => "Request URI Too Long",
        416 => "Requested Range Not Satisfiable",
        _ => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown"),
    }
}

/// Formats a time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only format [`http_date`]
/// writes and the one clients send back; other formats give `None` (header ignored).
pub(crate) fn parse_http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = value.split_ascii_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let number = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let day = number(day).filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year = number(year)?;
    let mut hms = time.split(':');
    let (h, m, s) = (
        number(hms.next()?).filter(|h| *h < 24)?,
        number(hms.next()?).filter(|m| *m < 60)?,
        number(hms.next()?).filter(|s| *s < 61)?,
    );
    if hms.next().is_some() {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Decodes `%XX` escapes (and `+` as a space in query strings, as werkzeug's `url_decode`
/// does); a `%` not followed by two hex digits is kept as is.
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        let decoded = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match decoded {
            Some((hi, lo)) => {
                // Two hex digits make a value below 256.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            None => {
                out.push(if plus_as_space && bytes[i] == b'+' {
                    b' '
                } else {
                    bytes[i]
                });
                i += 1;
            }
        }
    }
    out
}

/// Whether `value` can go into a header line as is: no control characters (so no CR/LF
/// injection through a knob).
pub(crate) fn is_header_safe(value: &str) -> bool {
    !value.chars().any(char::is_control)
}
