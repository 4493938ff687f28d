//! Attachments from the filestore on `/web/content/<id>`, with Odoo 16+'s X-Sendfile /
//! X-Accel-Redirect, and the `/web/filestore/...` route that only a misconfigured proxy
//! lets through.
//!
//! # Fixture convention
//! With a filestore root `F` (Odoo's `<data_dir>/filestore`) and database `db`,
//! `/web/content/<id>[/<filename>]` serves the attachment whose `store_fname` is
//! `<id[:2]>/<id>`, i.e. the file `F/db/<id[:2]>/<id>`, or the legacy `F/db/<id[:3]>/<id>`
//! when only that exists. `<id>` must be 40 lowercase hex digits; in Odoo it is the SHA-1
//! of the content, but the mock never checks (see [`store_attachment`]). Anything else under
//! `/web/content/` is a 404. The attachment is private: `no-cache, private`, unless
//! `unique` is given, which plays a public bundle-like attachment:
//! `public, max-age=31536000, immutable`.
//!
//! Query knobs: `mimetype=<type>` (default `application/octet-stream`), `download=1`
//! (`attachment`), `unique=<any>`, `mock_cookie=1` (a `Set-Cookie: session_id=...`), and
//! under x_sendfile `mock_accel=<value>` (percent-decoded) to send exactly that
//! `X-Accel-Redirect`, so a test can hand the edge a traversal or a malformed target.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{debug, error};

use super::Node;
use super::http::{Head, Reply, is_header_safe, percent_decode};
use super::stream::{Delivery, Stream};

/// The CSP `Stream.get_response` sets by default (forced on `/web/content` in 17+).
const CONTENT_CSP: &str = "default-src 'none'";

/// werkzeug's `NotFound` description, what Odoo answers for a missing attachment.
const NOT_FOUND_TEXT: &str = "The requested URL was not found on the server. If you entered \
                              the URL manually please check your spelling and try again.";

/// `/web/filestore/<anything>`: Odoo's route logs `BAD_X_SENDFILE_ERROR` when x_sendfile
/// is on, and always answers 404. Counted so a test can assert the edge never forwards it.
pub(crate) fn misrouted(node: &Node, head: &Head) -> Option<Reply> {
    if !head.path().starts_with("/web/filestore/") {
        return None;
    }
    node.stats.count_filestore_hit();
    if node.cfg.x_sendfile {
        let alias = node
            .cfg
            .filestore
            .as_deref()
            .map_or_else(|| "<data_dir>/filestore".into(), Path::to_string_lossy);
        error!(
            path = head.path(),
            "Odoo is running with --x-sendfile but is receiving /web/filestore requests: \
             this should have been served by the proxy \
             (location /web/filestore {{ internal; alias {alias}; }})"
        );
    } else {
        debug!(
            path = head.path(),
            "/web/filestore request without x_sendfile"
        );
    }
    Some(Reply::werkzeug_error(404, NOT_FOUND_TEXT))
}

/// `/web/content/<id>[/<filename>]` when the node has a filestore; `None` otherwise, so
/// nodes without one keep echoing those paths.
pub(crate) fn content(node: &Node, head: &Head) -> Option<Reply> {
    let root = node.cfg.filestore.as_deref()?;
    let rest = head.path().strip_prefix("/web/content/")?;
    let (id, filename) = rest.split_once('/').unwrap_or((rest, ""));
    let Some((path, meta, store_fname)) = find(root, &node.cfg.db_name, id) else {
        return Some(Reply::werkzeug_error(404, NOT_FOUND_TEXT));
    };

    let mut stream = Stream::from_path(path, &meta, false);
    stream.etag = id.to_owned();
    stream.mimetype = head
        .query_decoded("mimetype")
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    stream.download_name = match String::from_utf8(percent_decode(filename, false)) {
        Ok(name) if !name.is_empty() => name,
        _ => id.to_owned(),
    };
    let unique = head.query_param("unique").is_some_and(|u| !u.is_empty());
    stream.public = unique;

    let x_accel_redirect = if node.cfg.x_sendfile {
        Some(
            head.query_decoded("mock_accel")
                .unwrap_or_else(|| format!("/web/filestore/{}/{store_fname}", node.cfg.db_name)),
        )
    } else {
        None
    };
    let unsafe_knob = [Some(&stream.mimetype), x_accel_redirect.as_ref()]
        .into_iter()
        .flatten()
        .chain(std::iter::once(&stream.download_name))
        .any(|v| !is_header_safe(v));
    if unsafe_knob {
        return Some(Reply::werkzeug_error(
            400,
            "mimetype, mock_accel and the filename must not contain control characters.",
        ));
    }

    let delivery = Delivery {
        as_attachment: matches!(head.query_param("download"), Some("1" | "true" | "True")),
        max_age: None,
        immutable: unique,
        content_security_policy: Some(CONTENT_CSP),
        x_accel_redirect,
    };
    Some(stream.get_response(head, &delivery))
}

/// The attachment file and its `store_fname` (`<xx>/<id>`, or the legacy `<xxx>/<id>`).
fn find(root: &Path, db: &str, id: &str) -> Option<(PathBuf, std::fs::Metadata, String)> {
    let is_sha = id.len() == 40 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_sha {
        return None;
    }
    [2, 3].into_iter().find_map(|prefix| {
        let store_fname = format!("{}/{id}", &id[..prefix]);
        let path = root.join(db).join(&store_fname);
        let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
        Some((path, meta, store_fname))
    })
}

/// Writes `content` into the filestore at `<filestore_root>/<db>/<id[:2]>/<id>` and returns
/// the id to request as `/web/content/<id>`. The id is the first 40 hex digits of the
/// content's SHA-256: Odoo uses SHA-1, but only the shape of the name is visible to a proxy.
pub fn store_attachment(filestore_root: &Path, db: &str, content: &[u8]) -> io::Result<String> {
    let id = hex::encode(&Sha256::digest(content)[..20]);
    let dir = filestore_root.join(db).join(&id[..2]);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(&id), content)?;
    Ok(id)
}
