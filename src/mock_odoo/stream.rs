//! Odoo's `Stream.get_response` over werkzeug's `send_file` for a file on disk: the headers,
//! the conditional (304) and single-range (206/416) logic, and X-Sendfile/X-Accel-Redirect.
//!
//! Sources: odoo/odoo `odoo/http.py` (`Stream`), werkzeug `send_file`, `make_conditional`,
//! `parse_range_header` and `is_resource_modified`. werkzeug's own orders are kept where a
//! proxy can see them: a `Range` is honoured before `If-None-Match` is looked at, a
//! malformed or multi-part `Range` is a 416 rather than ignored, and only GET and HEAD are
//! conditional.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::http::{Head, Reply, ReplyBody, http_date, parse_http_date};

/// Headers werkzeug's `remove_entity_headers` drops from a 304 (it keeps `Expires`) that a
/// stream reply can carry, plus the X-Sendfile pair that `send_file` pops on a 304.
const DROPPED_ON_304: [&str; 5] = [
    "Content-Type",
    "Content-Range",
    "Last-Modified",
    "X-Sendfile",
    "X-Accel-Redirect",
];

/// werkzeug's `RFC 5987 attr-char` set kept unescaped in `filename*=`.
const ATTR_CHARS: &[u8] = b"!#$&+-.^_`|~";

/// A file Odoo is about to send (`odoo.http.Stream` with `type='path'`).
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// Absolute path; it is the `X-Sendfile` value.
    pub path: PathBuf,
    pub size: u64,
    pub mtime: SystemTime,
    /// Without parameters; `; charset=utf-8` is added as werkzeug does.
    pub mimetype: String,
    pub download_name: String,
    /// Unquoted.
    pub etag: String,
    /// A public stream keeps `public` in Cache-Control; a private one gets `private`.
    pub public: bool,
}

/// The arguments of `Stream.get_response` a route chooses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delivery {
    /// `Content-Disposition: attachment` instead of `inline`.
    pub as_attachment: bool,
    /// `None` is werkzeug's `no-cache`; `Some` adds `max-age` and `Expires`.
    pub max_age: Option<Duration>,
    /// Appends `immutable` to Cache-Control.
    pub immutable: bool,
    pub content_security_policy: Option<&'static str>,
    /// `Some(target)` when x_sendfile applies: no body, `Content-Length: 0`, `X-Sendfile`
    /// and `X-Accel-Redirect: target`.
    pub x_accel_redirect: Option<String>,
}

// === impl Stream ===

impl Stream {
    /// `Stream.from_path`: type from the extension, ETag `<int(mtime)>-<size>-<adler32>` of
    /// the path as given (absolute, as Odoo's `file_path` returns it).
    pub fn from_path(path: PathBuf, meta: &Metadata, public: bool) -> Self {
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let mtime_secs = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let path_str = path.to_string_lossy();
        let etag = format!(
            "{mtime_secs}-{}-{}",
            meta.len(),
            adler32(path_str.as_bytes())
        );
        Stream {
            mimetype: guess_type(&path)
                .unwrap_or("application/octet-stream")
                .to_owned(),
            download_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: meta.len(),
            mtime,
            etag,
            public,
            path,
        }
    }

    /// The reply for `head`: 200, 206, 304 or 416, with Odoo's headers.
    pub fn get_response(&self, head: &Head, delivery: &Delivery) -> Reply {
        let mut headers = vec![
            ("Content-Type", content_type(&self.mimetype)),
            (
                "Content-Disposition",
                content_disposition(delivery.as_attachment, &self.download_name),
            ),
            ("Last-Modified", http_date(self.mtime)),
            ("ETag", format!("\"{}\"", self.etag)),
            ("Cache-Control", self.cache_control(delivery)),
        ];
        let max_age = self.max_age(delivery);
        if let Some(max_age) = max_age {
            headers.push(("Expires", http_date(SystemTime::now() + max_age)));
        }
        if let Some(target) = &delivery.x_accel_redirect {
            headers.push(("X-Sendfile", self.path.to_string_lossy().into_owned()));
            headers.push(("X-Accel-Redirect", target.clone()));
        }
        headers.push(("X-Content-Type-Options", "nosniff".to_owned()));
        if let Some(csp) = delivery.content_security_policy {
            headers.push(("Content-Security-Policy", csp.to_owned()));
        }

        // Under X-Sendfile the body is left to the proxy and Odoo forces Content-Length: 0,
        // also on a 206 whose Content-Range describes bytes it never sends.
        let body = |start: u64, len: u64| match delivery.x_accel_redirect {
            Some(_) => ReplyBody::Bytes(Vec::new()),
            None => ReplyBody::File {
                path: self.path.clone(),
                start,
                len,
            },
        };
        let mut status = 200;
        let mut reply_body = body(0, self.size);
        if matches!(head.method.as_str(), "GET" | "HEAD") {
            match self.requested_range(head) {
                Some(Some((start, end))) => {
                    status = 206;
                    headers.push(("Accept-Ranges", "bytes".to_owned()));
                    let last = end - 1;
                    let range = format!("bytes {start}-{last}/{}", self.size);
                    headers.push(("Content-Range", range));
                    reply_body = body(start, end - start);
                }
                Some(None) => return range_not_satisfiable(self.size),
                None if !self.is_modified(head) => {
                    status = 304;
                    headers.retain(|(name, _)| !DROPPED_ON_304.contains(name));
                    reply_body = ReplyBody::Bytes(Vec::new());
                }
                None => {}
            }
        }
        Reply {
            status,
            headers,
            body: reply_body,
        }
    }

    fn max_age(&self, delivery: &Delivery) -> Option<Duration> {
        /// Odoo's `STATIC_CACHE_LONG`, used whenever the stream is immutable.
        const STATIC_CACHE_LONG: Duration = Duration::from_secs(31_536_000);
        if delivery.immutable {
            Some(STATIC_CACHE_LONG)
        } else {
            delivery.max_age
        }
    }

    /// werkzeug's directives, then Odoo's public/private swap and `immutable`.
    fn cache_control(&self, delivery: &Delivery) -> String {
        let mut directives: Vec<String> = match self.max_age(delivery) {
            Some(age) if !age.is_zero() => {
                vec!["public".into(), format!("max-age={}", age.as_secs())]
            }
            Some(_) => vec!["no-cache".into(), "max-age=0".into()],
            None => vec!["no-cache".into()],
        };
        if !self.public {
            directives.retain(|d| d != "public");
            directives.push("private".into());
        }
        if delivery.immutable {
            directives.push("immutable".into());
        }
        directives.join(", ")
    }

    /// `None`: no range to apply (absent, empty file, or `If-Range` says the client's copy
    /// is stale); `Some(None)`: unsatisfiable; `Some(Some((start, end)))`: end exclusive.
    fn requested_range(&self, head: &Head) -> Option<Option<(u64, u64)>> {
        let range = head.header("range")?;
        if self.size == 0 {
            return None;
        }
        if let Some(if_range) = head.header("if-range")
            && !self.if_range_matches(if_range)
        {
            return None;
        }
        Some(byte_range(range, self.size))
    }

    fn if_range_matches(&self, value: &str) -> bool {
        match parse_http_date(value) {
            Some(date) => secs(self.mtime) <= secs(date),
            None => unquote_etag(value) == self.etag,
        }
    }

    /// `is_resource_modified`: `If-Modified-Since` first, overridden by `If-None-Match`
    /// (weak comparison) when that is present.
    fn is_modified(&self, head: &Head) -> bool {
        let mut unmodified = head
            .header("if-modified-since")
            .and_then(parse_http_date)
            .is_some_and(|since| secs(self.mtime) <= secs(since));
        if let Some(tags) = head.header_joined("if-none-match")
            && !tags.trim().is_empty()
        {
            unmodified = tags
                .split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || unquote_etag(tag) == self.etag);
        }
        !unmodified
    }
}

/// The 416 werkzeug raises, with `Content-Range: bytes */<size>`.
fn range_not_satisfiable(size: u64) -> Reply {
    Reply::werkzeug_error(416, "The server cannot provide the requested range.")
        .with_header("Content-Range", format!("bytes */{size}"))
}

/// werkzeug's `parse_range_header` + `Range.range_for_length`: exactly one `bytes` range,
/// as `(start, end exclusive)`; `None` means 416. `-N` is the last N bytes, but more than
/// the whole file is a 416 in werkzeug, not the whole file.
pub(crate) fn byte_range(value: &str, length: u64) -> Option<(u64, u64)> {
    // Digits only, as werkzeug's `_plain_int`; Python has no overflow, so a huge number
    // saturates rather than failing.
    fn plain_int(s: &str) -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    }
    let (units, spec) = value.split_once('=')?;
    if !units.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let item = spec.trim();
    let (start, end) = match item.strip_prefix('-') {
        Some(suffix) => {
            let n = plain_int(suffix)?;
            // `-0` parses as begin 0 in werkzeug: the whole file.
            (if n == 0 { 0 } else { length.checked_sub(n)? }, length)
        }
        None => {
            let (begin, end) = item.split_once('-')?;
            let begin = plain_int(begin)?;
            let end = match end.trim() {
                "" => length,
                end => plain_int(end)?.saturating_add(1),
            };
            (begin, end)
        }
    };
    (start < end && start < length).then_some((start, end.min(length)))
}

/// zlib's Adler-32, as Python's `zlib.adler32` (unsigned).
pub(crate) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % MOD;
        b = (b + a) % MOD;
    }
    (b << 16) | a
}

/// Python's `mimetypes.guess_type` for the extensions a module's `static/` holds, with the
/// overrides Odoo registers in `odoo/http.py` (js, woff, eot, ttf, webp, svg).
pub(crate) fn guess_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "txt" => "text/plain",
        "xml" => "text/xml",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" | "jpe" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/vnd.microsoft.icon",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "avif" => "image/avif",
        "tif" | "tiff" => "image/tiff",
        "woff" => "application/font-woff",
        "woff2" => "font/woff2",
        "ttf" => "application/x-font-ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "wav" => "audio/x-wav",
        _ => return None,
    })
}

/// werkzeug's `get_content_type`: text, a few application types and `+xml` get a charset.
pub(crate) fn content_type(mimetype: &str) -> String {
    const CHARSET_TYPES: [&str; 6] = [
        "application/ecmascript",
        "application/javascript",
        "application/sql",
        "application/xml",
        "application/xml-dtd",
        "application/xml-external-parsed-entity",
    ];
    if mimetype.starts_with("text/")
        || CHARSET_TYPES.contains(&mimetype)
        || mimetype.ends_with("+xml")
    {
        format!("{mimetype}; charset=utf-8")
    } else {
        mimetype.to_owned()
    }
}

/// `inline|attachment; filename=...` as werkzeug's `send_file` writes it: a bare token when
/// possible, else quoted; a non-ASCII name gets an ASCII `filename` (non-ASCII characters
/// dropped; werkzeug first NFKD-normalises, so `é` would keep its `e`) plus `filename*`.
pub(crate) fn content_disposition(as_attachment: bool, name: &str) -> String {
    let kind = if as_attachment {
        "attachment"
    } else {
        "inline"
    };
    if name.is_ascii() {
        return format!("{kind}; filename={}", quote_header_value(name));
    }
    let simple: String = name.chars().filter(char::is_ascii).collect();
    let mut quoted = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || ATTR_CHARS.contains(&byte) {
            quoted.push(char::from(byte));
        } else {
            quoted.push_str(&format!("%{byte:02X}"));
        }
    }
    format!(
        "{kind}; filename={}; filename*=UTF-8''{quoted}",
        quote_header_value(&simple)
    )
}

/// werkzeug's `quote_header_value`: a token as is, anything else in quotes.
fn quote_header_value(value: &str) -> String {
    const TOKEN_PUNCT: &[u8] = b"!#$%&'*+-.^_`|~";
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TOKEN_PUNCT.contains(&b));
    if token {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// An entity tag without `W/` and quotes.
fn unquote_etag(tag: &str) -> &str {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag)
}

/// Whole seconds since the epoch: HTTP dates have no sub-second part, so werkzeug compares
/// `Last-Modified` with microseconds dropped.
fn secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
