//! `/<module>/static/<path>` from the addons paths, as Odoo's `Request._serve_static`.
//!
//! The file comes from the first addons path that has `<module>/static/<path>` as a regular
//! file (Odoo's `file_path` and nginx's `try_files` order). A module counts as present when
//! some addons path has a `<module>/static/` directory; manifests are not read.
//!
//! Differences from Odoo a proxy could notice: Odoo only takes this route when the file
//! exists (otherwise the request goes to normal routing, whose 404 page differs); the mock
//! answers the `_serve_static` texts directly. Debug-assets mode (`max-age=0`) is not played.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::Node;
use super::http::{Head, Reply, percent_decode};
use super::stream::{Delivery, Stream};

/// Odoo's `STATIC_CACHE`: one week.
const STATIC_CACHE: Duration = Duration::from_secs(604_800);

/// The CSP `Application.set_csp` adds to images only.
const IMAGE_CSP: &str = "default-src 'none'";

/// Why a static request is a 404, with Odoo's texts.
#[derive(Debug, PartialEq, Eq)]
enum NotFound {
    Module,
    File,
}

/// Serves `head` if its path has the static form; `None` leaves it to the other routes
/// (also when no addons path is configured, so such nodes keep echoing).
pub(crate) fn serve(node: &Node, head: &Head) -> Option<Reply> {
    let (module, resource) = split(head.path())?;
    node.stats.count_static_hit();
    if node.cfg.addons_paths.is_empty() {
        return None;
    }
    Some(match find(&node.cfg.addons_paths, &module, &resource) {
        Ok((path, meta)) => {
            let stream = Stream::from_path(path, &meta, true);
            let delivery = Delivery {
                max_age: Some(STATIC_CACHE),
                content_security_policy: stream.mimetype.starts_with("image/").then_some(IMAGE_CSP),
                ..Delivery::default()
            };
            stream.get_response(head, &delivery)
        }
        Err(NotFound::Module) => {
            Reply::werkzeug_error(404, &format!("Module \"{module}\" not found."))
        }
        Err(NotFound::File) => Reply::werkzeug_error(
            404,
            &format!("File \"{resource}\" not found in module {module}."),
        ),
    })
}

/// `/<module>/static/<resource>` after percent-decoding (werkzeug decodes the path before
/// Odoo splits it), with a non-empty module and resource.
fn split(raw_path: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(percent_decode(raw_path, false)).ok()?;
    let mut parts = decoded.strip_prefix('/')?.splitn(3, '/');
    let (module, static_dir, resource) = (parts.next()?, parts.next()?, parts.next()?);
    (!module.is_empty() && static_dir == "static" && !resource.is_empty())
        .then(|| (module.to_owned(), resource.to_owned()))
}

/// A path segment that stays where it is joined: not empty, `.` or `..`, no backslash or
/// NUL (so no traversal, absolute path or Windows separator).
fn is_plain_segment(segment: &str) -> bool {
    !matches!(segment, "" | "." | "..") && !segment.contains(['\\', '\0'])
}

/// The first addons path holding the file. Traversal is refused before touching the disk,
/// and a symlink is followed only if the file it reaches stays inside the module's
/// `static/` directory.
fn find(
    addons_paths: &[PathBuf],
    module: &str,
    resource: &str,
) -> Result<(PathBuf, std::fs::Metadata), NotFound> {
    if !is_plain_segment(module) {
        return Err(NotFound::Module);
    }
    let plain = resource.split('/').all(is_plain_segment);
    let mut module_found = false;
    for root in addons_paths {
        let static_dir = root.join(module).join("static");
        if !static_dir.is_dir() {
            continue;
        }
        module_found = true;
        if !plain {
            continue;
        }
        let candidate = static_dir.join(resource);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && stays_inside(&candidate, &static_dir) => {
                return Ok((candidate, meta));
            }
            Ok(_) => debug!(path = %candidate.display(), "not a regular file inside static/"),
            Err(_) => {}
        }
    }
    if module_found {
        Err(NotFound::File)
    } else {
        Err(NotFound::Module)
    }
}

fn stays_inside(file: &Path, dir: &Path) -> bool {
    match (file.canonicalize(), dir.canonicalize()) {
        (Ok(file), Ok(dir)) => file.starts_with(dir),
        _ => false,
    }
}
