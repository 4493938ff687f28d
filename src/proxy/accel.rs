//! X-Accel-Redirect: an Odoo 16+ node with `x_sendfile = True` answers an
//! attachment request with `X-Accel-Redirect: /web/filestore/<db>/<xx>/<sha1>`
//! and `Content-Length: 0`; the edge streams the file from the shared
//! filestore itself, so no Python worker streams bytes.
//!
//! * The value must be exactly `/web/filestore/<db>/<2 or 3 hex>/<40 hex>`,
//!   the hex directory a prefix of the SHA-1: anything else (traversal, an
//!   encoded byte, another prefix) is the node's error, a 502 with a log line.
//!   No symlink is followed below the filestore root; only regular files.
//! * The client's own Range and If-None-Match / If-Modified-Since are applied
//!   here: Odoo's 206 and Content-Range describe a body it never sends.
//! * Odoo's headers are kept (Content-Type, Content-Disposition, ETag,
//!   Last-Modified, Cache-Control, Expires, Set-Cookie, and, unlike nginx,
//!   Content-Security-Policy and X-Content-Type-Options); `X-Sendfile` (a
//!   server path) and every `X-Accel-*` are dropped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use tracing::error;

use super::ReplyBody;
use crate::conditional::{self, Validators};
use crate::error::ProxyError;
use crate::spool::FileRange;

static X_ACCEL_REDIRECT: HeaderName = HeaderName::from_static("x-accel-redirect");
static X_SENDFILE: HeaderName = HeaderName::from_static("x-sendfile");

/// The internal prefix Odoo uses, as in its nginx recipe (`location /web/filestore { internal; }`).
pub const PREFIX: &str = "/web/filestore/";

/// Removes `X-Sendfile` (a server path) and every `X-Accel-*` header.
pub fn strip_internal(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|k| k == X_SENDFILE || k.as_str().starts_with("x-accel-"))
    {
        return;
    }
    headers.remove(&X_SENDFILE);
    let accel: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-accel-"))
        .cloned()
        .collect();
    for name in accel {
        headers.remove(name);
    }
}

/// A client request for the internal location, however it is spelled
/// (percent-encoded, doubled slashes): never forwarded.
pub fn is_internal(raw_path: &str) -> bool {
    if !raw_path.contains("filestore") && !raw_path.contains('%') {
        return false;
    }
    let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
    let mut normal = String::with_capacity(decoded.len());
    for part in decoded.split('/').filter(|p| !p.is_empty()) {
        normal.push('/');
        normal.push_str(part);
    }
    normal == "/web/filestore" || normal.starts_with(PREFIX)
}

/// A node reply the edge turns into a filestore file: a 200 or 206 with
/// `X-Accel-Redirect`.
pub fn wanted<B>(response: &http::Response<B>) -> bool {
    wanted_parts(response.status(), response.headers())
}

/// [`wanted`], on a reply taken apart.
pub fn wanted_parts(status: http::StatusCode, headers: &HeaderMap) -> bool {
    matches!(
        status,
        http::StatusCode::OK | http::StatusCode::PARTIAL_CONTENT
    ) && target(headers).is_some()
}

/// The X-Accel-Redirect value of a node's reply, if it has one.
pub fn target(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(&X_ACCEL_REDIRECT)
}

/// `/web/filestore/<db>/<xx>/<sha1>` → `<db>/<xx>/<sha1>`, or why not.
pub fn parse_target(value: &[u8]) -> Result<PathBuf, &'static str> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8")?;
    let rest = text
        .strip_prefix(PREFIX)
        .ok_or("outside the /web/filestore/ prefix")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [db, dir, sha] = parts[..] else {
        return Err("not <db>/<xx>/<sha1>");
    };
    let db_ok = db.len() <= 63
        && db.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && db
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && db != "."
        && db != "..";
    if !db_ok {
        return Err("not a database name");
    }
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if !(dir.len() == 2 || dir.len() == 3) || !hex(dir) {
        return Err("directory is not 2 or 3 hex digits");
    }
    if sha.len() != 40 || !hex(sha) {
        return Err("file name is not a 40-hex SHA-1");
    }
    if !sha.starts_with(dir) {
        return Err("directory is not the SHA-1's prefix");
    }
    Ok([db, dir, sha].iter().collect())
}

/// Serves the file a node pointed to, with the node's headers and the client's
/// conditions. `upstream` are the node's reply headers, already filtered for
/// the client (hop-by-hop removed, cookie flags set).
pub async fn serve(
    filestore: Option<&Path>,
    node: &str,
    mut upstream: HeaderMap,
    method: &Method,
    request: &HeaderMap,
) -> Result<Response<ReplyBody>, ProxyError> {
    let bad = |detail: String| ProxyError::BadGateway {
        node: node.to_owned(),
        detail,
    };
    let Some(value) = target(&upstream).cloned() else {
        return Err(bad("no X-Accel-Redirect".into()));
    };
    let shown = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let Some(root) = filestore else {
        error!(node, target = %shown, "X-Accel-Redirect from a node, but [x_accel] filestore is not configured");
        return Err(bad("X-Accel-Redirect without a configured filestore".into()));
    };
    let relative = parse_target(value.as_bytes()).map_err(|reason| {
        error!(node, target = %shown, reason, "X-Accel-Redirect refused");
        bad(format!("X-Accel-Redirect refused: {reason}"))
    })?;
    let path = root.join(&relative);
    let root = root.to_owned();
    let opened = tokio::task::spawn_blocking(move || open_inside(&root, &relative))
        .await
        .map_err(|e| bad(format!("filestore task: {e}")))?;
    let (file, len, mtime) = match opened {
        Ok(found) => found,
        Err(e) => {
            error!(node, path = %path.display(), cause = %e, "X-Accel-Redirect file not served");
            return Err(ProxyError::AccelMissing {
                node: node.to_owned(),
            });
        }
    };

    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
    ] {
        upstream.remove(name);
    }
    strip_internal(&mut upstream);
    upstream.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let etag = upstream
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let last_modified = upstream
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let modified = last_modified
        .as_deref()
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .or(Some(mtime));
    let validators = Validators {
        len,
        etag: etag.as_deref(),
        modified,
        last_modified: last_modified.as_deref(),
    };

    let mut response = Response::new(ReplyBody::empty());
    *response.headers_mut() = upstream;
    if conditional::not_modified(request, &validators) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    let ask = conditional::range(request, &validators);
    let Some(range) = conditional::apply_range(&mut response, ask, len) else {
        return Ok(response);
    };
    if method != Method::HEAD {
        *response.body_mut() =
            ReplyBody::File(FileRange::new(Arc::new(file), range.start, range.end));
    }
    Ok(response)
}

/// Opens `root/relative` with no symlink below `root`; only a regular file.
fn open_inside(root: &Path, relative: &Path) -> io::Result<(File, u64, SystemTime)> {
    let mut at = root.to_path_buf();
    for part in relative.components() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at)?;
        if meta.file_type().is_symlink() {
            return Err(io::Error::other("symlink in the filestore path"));
        }
    }
    let file = File::open(&at)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((
        file,
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";

    #[test]
    fn filestore_paths_are_accepted_in_both_layouts() {
        let ok = parse_target(format!("/web/filestore/prod-db_1/3f/{SHA}").as_bytes())
            .expect("2-hex layout");
        assert_eq!(ok, std::path::Path::new("prod-db_1/3f").join(SHA));
        assert!(parse_target(format!("/web/filestore/odoo/3f7/{SHA}").as_bytes()).is_ok());
    }

    #[test]
    fn internal_headers_are_stripped() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-sendfile",
            "/srv/odoo/filestore/x".parse().expect("value"),
        );
        h.insert("x-accel-buffering", "no".parse().expect("value"));
        h.insert("content-type", "text/plain".parse().expect("value"));
        super::strip_internal(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn the_internal_location_is_recognised_however_spelled() {
        use super::is_internal;
        for p in [
            "/web/filestore",
            "/web/filestore/",
            "/web/filestore/odoo/3f/x",
            "/web//filestore/x",
            "/web/%66ilestore/x",
            "//web/filestore",
            "/web%2ffilestore/x",
        ] {
            assert!(is_internal(p), "{p}");
        }
        for p in [
            "/web/content/1",
            "/web/filestorex",
            "/filestore",
            "/web/static/filestore.js",
        ] {
            assert!(!is_internal(p), "{p}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            format!("/web/filestore/odoo/3f/{SHA}/"),
            format!("/web/filestore/../3f/{SHA}"),
            "/web/filestore/odoo/../../etc/passwd".to_owned(),
            format!("/web/filestore/odoo/3f/../{SHA}"),
            format!("/web/filestore/odoo/ab/{SHA}"),
            format!("/web/filestore/odoo/3F/{}", SHA.to_uppercase()),
            format!("/web/filestore/odoo/3f/{}", &SHA[..39]),
            format!("/web/filestore/odoo/3f/{SHA}%00"),
            format!("/web/filestore/odoo%2f..%2f/3f/{SHA}"),
            format!("/web/filestore//odoo/3f/{SHA}"),
            format!("/web/content/odoo/3f/{SHA}"),
            "/etc/passwd".to_owned(),
            format!("web/filestore/odoo/3f/{SHA}"),
            format!("/web/filestore/.hidden/3f/{SHA}"),
            format!("/web/filestore/odoo/3f/{SHA}\\..\\x"),
        ] {
            assert!(
                parse_target(bad.as_bytes()).is_err(),
                "{bad} must be refused"
            );
        }
    }
}
