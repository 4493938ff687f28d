//! Static module assets, `/<module>/static/<path>`, served from the addons
//! paths on disk the way Odoo serves them, so no Python worker spends time on
//! bytes (nginx: `location ~ ^/[^/]+/static/.+$ { try_files ... @odoo; }`).
//!
//! * **Lookup.** The first addons path (Odoo's addons_path order) that holds
//!   `<module>/static/<path>` as a regular file wins; when none does, the
//!   request goes to Odoo unchanged ([`Lookup::Missing`]).
//! * **Safety.** The path is decoded once and refused (a plain 404, the reason
//!   in the log) if a segment is `.` or `..`, empty, holds a `/` or `\` once
//!   decoded, a NUL or control byte, or is not UTF-8. Symlinks are refused
//!   unless `follow_symlinks` is on, and then only if they stay inside their
//!   addons path. Only regular files are served: no directories, no FIFOs.
//! * **Memory.** Odoo's statics are a small, hot, read-mostly set, so files up
//!   to [`CACHE_FILE_MAX`] are kept in memory with their gzip and brotli forms,
//!   each compressed once; a cached entry is re-checked on disk at most once a
//!   second. Larger files are streamed from disk in chunks.
//! * **HTTP.** Odoo's headers (Cache-Control, ETag, Last-Modified, nosniff,
//!   CSP on images), 304 for If-None-Match / If-Modified-Since, one byte range
//!   (206, 416), HEAD, and `Vary: Accept-Encoding` on compressible types.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use tracing::{debug, warn};

use crate::conditional::{self, Validators};
use crate::config::StaticConfig;
use crate::proxy::ReplyBody;
use crate::spool::{self, FileRange};

/// Files up to this size are kept in memory (with their compressed forms).
pub const CACHE_FILE_MAX: u64 = 1024 * 1024;

/// Cache misses loaded (read and compressed) at the same time.
const MAX_LOADS: usize = 4;

/// How long a cached file is trusted before its size and mtime are re-read.
const RECHECK: Duration = Duration::from_secs(1);

/// The static file service, built once from `[static]`.
pub struct StaticFiles {
    config: StaticConfig,
    cache: Mutex<Cache>,
    /// Files read and compressed at once: each load may hold a whole file and
    /// its compressors, so a burst of cache misses must not run unbounded.
    loads: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Arc<Entry>>,
    bytes: usize,
}

/// What a static-shaped request found.
pub enum Lookup {
    /// Not a `/<module>/static/<path>` request at all.
    NotStatic,
    /// No addons path has it: Odoo serves or 404s it.
    Missing,
    /// Refused (traversal, symlink out, not a regular file): a plain 404.
    Refused(&'static str),
    /// Serve this.
    Found(Arc<Entry>),
}

/// One file, as served.
pub struct Entry {
    /// The addons path it was found under, for re-checks.
    root: PathBuf,
    /// The file (resolved, when symlinks are followed).
    path: PathBuf,
    len: u64,
    modified: SystemTime,
    content_type: HeaderValue,
    etag: String,
    last_modified: HeaderValue,
    /// The bytes, for files up to [`CACHE_FILE_MAX`].
    data: Option<Bytes>,
    gzip: Option<Bytes>,
    br: Option<Bytes>,
    checked: Mutex<Instant>,
}

impl StaticFiles {
    /// `None` when no addons path is configured.
    pub fn new(config: &StaticConfig) -> Option<StaticFiles> {
        (!config.addons_paths.is_empty()).then(|| StaticFiles {
            config: config.clone(),
            cache: Mutex::new(Cache::default()),
            loads: tokio::sync::Semaphore::new(MAX_LOADS),
        })
    }

    /// Finds the file for a request path (as received, still percent-encoded).
    pub async fn lookup(self: &Arc<Self>, raw_path: &str) -> Lookup {
        let (module, rest) = match split_static_path(raw_path) {
            None => return Lookup::NotStatic,
            Some(Err(reason)) => return Lookup::Refused(reason),
            Some(Ok(parts)) => parts,
        };
        let key = format!("{module}/{}", rest.join("/"));
        if let Some(entry) = self.cached(&key) {
            return Lookup::Found(entry);
        }
        let Ok(_permit) = self.loads.acquire().await else {
            return Lookup::Refused("static loader closed");
        };
        // Another request may have loaded it while this one waited.
        if let Some(entry) = self.cached(&key) {
            return Lookup::Found(entry);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.load(&key, &module, &rest))
            .await
            .unwrap_or(Lookup::Refused("static lookup task failed"))
    }

    /// A cached entry still matching the file on disk (checked at most once a second).
    fn cached(&self, key: &str) -> Option<Arc<Entry>> {
        let entry = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .get(key)
            .cloned()?;
        let mut checked = entry.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.elapsed() < RECHECK {
            return Some(entry.clone());
        }
        // A stat on the request path once a second per hot file is cheap.
        match std::fs::metadata(&entry.path) {
            Ok(meta) if meta.len() == entry.len && meta.modified().ok() == Some(entry.modified) => {
                *checked = Instant::now();
                Some(entry.clone())
            }
            _ => None,
        }
    }

    /// Looks the file up in every addons path, in order. Blocking.
    fn load(&self, key: &str, module: &str, rest: &[String]) -> Lookup {
        for root in &self.config.addons_paths {
            let mut candidate = root.join(module);
            candidate.push("static");
            for segment in rest {
                candidate.push(segment);
            }
            let path = match self.checked_path(root, &candidate) {
                Ok(Some(path)) => path,
                Ok(None) => continue,
                Err(reason) => {
                    debug!(path = %candidate.display(), reason, "static file refused");
                    return Lookup::Refused(reason);
                }
            };
            let (file, meta) = match spool::open_regular(&path) {
                Ok(opened) => opened,
                Err(e) => {
                    warn!(path = %candidate.display(), cause = %e, "static file refused");
                    return Lookup::Refused("not a regular file");
                }
            };
            return match self.entry(root, &path, file, &meta) {
                Ok(entry) => {
                    let entry = Arc::new(entry);
                    self.remember(key, &entry);
                    Lookup::Found(entry)
                }
                Err(e) => {
                    warn!(path = %candidate.display(), cause = %e, "static file unreadable");
                    Lookup::Refused("unreadable")
                }
            };
        }
        Lookup::Missing
    }

    /// The path to open if the file exists under `root` by an allowed way:
    /// `Ok(None)` when it does not exist, `Err` when the way there is refused.
    fn checked_path(&self, root: &Path, candidate: &Path) -> Result<Option<PathBuf>, &'static str> {
        checked_path(root, candidate, self.config.follow_symlinks)
    }
}

/// The path to open if `candidate` exists under `root` by an allowed way:
/// `Ok(None)` when it does not exist, `Err` when the way there is refused.
fn checked_path(
    root: &Path,
    candidate: &Path,
    follow_symlinks: bool,
) -> Result<Option<PathBuf>, &'static str> {
    let missing = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound
            || matches!(
                e.raw_os_error(),
                Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG)
            )
    };
    if follow_symlinks {
        let real = match std::fs::canonicalize(candidate) {
            Ok(real) => real,
            Err(e) if missing(&e) => return Ok(None),
            Err(_) => return Err("cannot resolve"),
        };
        if !real.starts_with(root) {
            return Err("symlink leads outside its addons path");
        }
        return Ok(Some(real));
    }
    // No symlink anywhere below the addons path.
    let Ok(relative) = candidate.strip_prefix(root) else {
        return Err("outside its addons path");
    };
    let mut at = root.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err("symlink (follow_symlinks is off)");
            }
            Ok(_) => {}
            Err(e) if missing(&e) => return Ok(None),
            Err(_) => return Err("cannot stat"),
        }
    }
    Ok(Some(at))
}

impl StaticFiles {
    /// Reads a file into an entry (bytes and compressed forms if small enough).
    fn entry(
        &self,
        root: &Path,
        path: &Path,
        mut file: File,
        meta: &Metadata,
    ) -> io::Result<Entry> {
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let compressible = is_compressible(&mime);
        // werkzeug (so Odoo) adds the charset to text types.
        let content_type = if compressible {
            format!("{}; charset=utf-8", mime.essence_str())
        } else {
            mime.essence_str().to_owned()
        };
        let content_type = HeaderValue::from_str(&content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
        let mtime = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut entry = Entry {
            root: root.to_owned(),
            path: path.to_owned(),
            len: meta.len(),
            modified,
            content_type,
            etag: format!("\"{mtime:x}-{:x}\"", meta.len()),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified))
                .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
            data: None,
            gzip: None,
            br: None,
            checked: Mutex::new(Instant::now()),
        };
        if meta.len() <= CACHE_FILE_MAX {
            let mut data = Vec::with_capacity(meta.len() as usize);
            file.read_to_end(&mut data)?;
            if data.len() as u64 != meta.len() {
                return Err(io::Error::other("file changed while read"));
            }
            if compressible && data.len() >= self.config.compress_min_size {
                entry.gzip = precompressed(path, "gz").or_else(|| gzip(&data).ok());
                entry.br = precompressed(path, "br").or_else(|| brotli(&data).ok());
            }
            entry.data = Some(data.into());
        }
        Ok(entry)
    }

    fn remember(&self, key: &str, entry: &Arc<Entry>) {
        let size = entry.memory();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.bytes + size > self.config.memory_cache {
            // A static set that outgrows the cache: start over rather than
            // track recency; the hot files come back at once.
            debug!("static cache full; clearing it");
            cache.entries.clear();
            cache.bytes = 0;
        }
        if size <= self.config.memory_cache {
            if let Some(old) = cache.entries.insert(key.to_owned(), entry.clone()) {
                cache.bytes -= old.memory();
            }
            cache.bytes += size;
        }
    }

    /// The response for a found file.
    pub async fn respond(
        &self,
        entry: &Entry,
        method: &Method,
        headers: &HeaderMap,
    ) -> Response<ReplyBody> {
        let mut response = Response::new(ReplyBody::empty());
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, entry.content_type.clone());
        h.insert(header::CACHE_CONTROL, self.config.cache_control.clone());
        h.insert(header::LAST_MODIFIED, entry.last_modified.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if entry.content_type.as_bytes().starts_with(b"image/") {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'"),
            );
        }
        if entry.gzip.is_some() || entry.br.is_some() {
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }

        let encoding = if headers.contains_key(header::RANGE) {
            None // ranges are served from the identity form
        } else {
            choose_encoding(headers, entry)
        };
        let etag = match encoding {
            Some((name, _)) => format!("{}-{name}\"", entry.etag.trim_end_matches('"')),
            None => entry.etag.clone(),
        };
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        let validators = entry.validators();
        if conditional::not_modified(headers, &validators) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        if let Some((name, bytes)) = encoding {
            let h = response.headers_mut();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            if method != Method::HEAD {
                *response.body_mut() = ReplyBody::full(bytes.clone());
            }
            return response;
        }

        let Some(range) = conditional::apply_range(
            &mut response,
            conditional::range(headers, &validators),
            entry.len,
        ) else {
            return response;
        };
        if method == Method::HEAD {
            return response;
        }
        *response.body_mut() = match &entry.data {
            Some(data) => ReplyBody::full(data.slice(range.start as usize..range.end as usize)),
            None => match self.reopen(entry).await {
                Ok(file) => ReplyBody::File(FileRange::new(Arc::new(file), range.start, range.end)),
                Err(e) => {
                    warn!(path = %entry.path.display(), cause = %e, "static file not served");
                    return crate::proxy::error_response(StatusCode::NOT_FOUND);
                }
            },
        };
        response
    }
}

impl StaticFiles {
    /// Opens a large (uncached) file again for one reply, with the same checks
    /// as the first time, and only if it is still the file the entry describes.
    async fn reopen(&self, entry: &Entry) -> io::Result<File> {
        let (root, path) = (entry.root.clone(), entry.path.clone());
        let (len, modified) = (entry.len, entry.modified);
        let follow = self.config.follow_symlinks;
        tokio::task::spawn_blocking(move || {
            match checked_path(&root, &path, follow) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(io::Error::from(io::ErrorKind::NotFound)),
                Err(reason) => return Err(io::Error::other(reason)),
            }
            let (file, meta) = spool::open_regular(&path)?;
            if meta.len() != len || meta.modified().ok() != Some(modified) {
                return Err(io::Error::other("changed since it was looked up"));
            }
            Ok(file)
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl Entry {
    fn validators(&self) -> Validators<'_> {
        Validators {
            len: self.len,
            etag: Some(&self.etag),
            modified: Some(self.modified),
            last_modified: self.last_modified.to_str().ok(),
        }
    }

    /// Bytes this entry keeps in memory.
    fn memory(&self) -> usize {
        [&self.data, &self.gzip, &self.br]
            .iter()
            .map(|b| b.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
            + 256
    }
}

/// Splits `/<module>/static/<path>` (percent-encoded, as received) into the
/// module and the decoded path segments. `None`: not a static path at all;
/// `Some(Err)`: static-shaped but unsafe.
pub fn split_static_path(raw: &str) -> Option<Result<(String, Vec<String>), &'static str>> {
    let mut parts = raw.strip_prefix('/')?.splitn(3, '/');
    let (module, marker, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if decode(marker).ok()? != "static" || module.is_empty() {
        return None;
    }
    let module = match decode(module) {
        Ok(m) if m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => m,
        Ok(_) => return Some(Err("module name is not a Python identifier")),
        Err(reason) => return Some(Err(reason)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        match decode(segment) {
            Ok(s) if s.is_empty() => return Some(Err("empty path segment")),
            Ok(s) if s == "." || s == ".." => return Some(Err("dot segment")),
            Ok(s) => segments.push(s),
            Err(reason) => return Some(Err(reason)),
        }
    }
    Some(Ok((module, segments)))
}

/// Decodes one segment once; refuses what could change its meaning.
fn decode(segment: &str) -> Result<String, &'static str> {
    let bytes: Vec<u8> = percent_decode_str(segment).collect();
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    if text.contains(['/', '\\']) {
        return Err("slash or backslash inside a segment");
    }
    if text.chars().any(|c| c.is_control()) {
        return Err("control character");
    }
    Ok(text)
}

fn is_compressible(mime: &mime_guess::Mime) -> bool {
    // Odoo's docs: gzip_types text/css text/scss text/plain text/xml
    // application/xml application/json application/javascript; plus SVG.
    matches!(mime.type_().as_str(), "text")
        || matches!(
            mime.essence_str(),
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "image/svg+xml"
                | "application/x-javascript"
        )
}

/// A `.gz` / `.br` sibling shipped next to the file, if there is one (a regular file).
fn precompressed(path: &Path, ext: &str) -> Option<Bytes> {
    let mut name = path.file_name()?.to_owned();
    name.push(".");
    name.push(ext);
    let sibling = path.with_file_name(name);
    let meta = std::fs::symlink_metadata(&sibling).ok()?;
    if !meta.is_file() || meta.len() > CACHE_FILE_MAX {
        return None;
    }
    std::fs::read(sibling).ok().map(Bytes::from)
}

fn gzip(data: &[u8]) -> io::Result<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data)?;
    Ok(encoder.finish()?.into())
}

fn brotli(data: &[u8]) -> io::Result<Bytes> {
    let mut out = Vec::new();
    {
        // Quality 5, 1 MiB window: most of quality 11's gain at a small
        // fraction of its time and memory; done once per file.
        let mut writer = brotli::CompressorWriter::new(&mut out, 64 * 1024, 5, 20);
        writer.write_all(data)?;
    }
    Ok(out.into())
}

/// The best encoding the client accepts that the entry has: br, then gzip.
fn choose_encoding<'a>(headers: &HeaderMap, entry: &'a Entry) -> Option<(&'static str, &'a Bytes)> {
    let accept = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    let accepts = |name: &str| {
        accept.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case(name) && !refused
        })
    };
    if let Some(br) = entry.br.as_ref().filter(|_| accepts("br")) {
        return Some(("br", br));
    }
    if let Some(gz) = entry.gzip.as_ref().filter(|_| accepts("gzip")) {
        return Some(("gzip", gz));
    }
    None
}

#[cfg(test)]
mod tests;
