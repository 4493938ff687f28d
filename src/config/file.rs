//! Raw serde mirror of the TOML file: every key optional, unknown keys rejected.
//!
//! Nothing here is validated beyond its TOML type; `validate.rs` turns this into
//! [`super::Config`]. Values that validation may reject are `Spanned`, so that
//! a problem can name the line it comes from.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

/// A duration written as a string such as `"30s"` or `"20m"`.
pub type FileDuration = Spanned<humantime_serde::Serde<Duration>>;

/// A size written as a string such as `"128MiB"` or `"64KiB"`.
pub type FileSize = Spanned<ByteSize>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listeners: Vec<FileListener>,
    #[serde(default)]
    pub nodes: Vec<FileNode>,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub forwarding: FileForwarding,
    #[serde(default)]
    pub cookies: FileCookies,
    #[serde(default)]
    pub retries: FileRetries,
    #[serde(default)]
    pub health: FileHealth,
    #[serde(default)]
    pub admission: FileAdmission,
    #[serde(default)]
    pub runtime: FileRuntime,
    #[serde(default, rename = "static")]
    pub statics: FileStatic,
    #[serde(default)]
    pub x_accel: FileXAccel,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub access_log: FileAccessLog,
}

/// `[[listeners]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: Spanned<String>,
    /// `[listeners.tls]`: serve HTTPS here.
    pub tls: Option<Spanned<FileTls>>,
    /// Send every request (but `redirect_except`) to HTTPS.
    pub redirect_to_https: Option<Spanned<bool>>,
    pub redirect_status: Option<Spanned<i64>>,
    pub https_port: Option<Spanned<i64>>,
    pub redirect_except: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[listeners.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub certificates: Spanned<Vec<FileCertificate>>,
    pub default_certificate: Option<Spanned<i64>>,
    pub unknown_sni: Option<Spanned<String>>,
    pub handshake_timeout: Option<FileDuration>,
    pub hsts: Option<Spanned<String>>,
    pub http2: Option<bool>,
}

/// One entry of `certificates`: `{ cert = "...", key = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[[nodes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub role: Spanned<String>,
    pub workers: Option<Spanned<i64>>,
    pub drain: Option<bool>,
    /// `[nodes.health]`: this node's overrides of its role's probe, key by key.
    pub health: Option<Spanned<FileProbe>>,
}

/// `[timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub client_header: Option<FileDuration>,
    pub client_body: Option<FileDuration>,
    pub client_keepalive: Option<FileDuration>,
    pub client_send: Option<FileDuration>,
    pub upstream_connect: Option<FileDuration>,
    pub upstream_response: Option<FileDuration>,
    pub websocket_idle: Option<FileDuration>,
    pub shutdown: Option<FileDuration>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_request_body: Option<FileSize>,
    pub request_buffer: Option<FileSize>,
    pub response_buffer: Option<FileSize>,
    pub max_response_spool: Option<FileSize>,
    pub max_header_bytes: Option<FileSize>,
    pub max_connections: Option<Spanned<i64>>,
    pub spool_dir: Option<Spanned<String>>,
}

/// `[forwarding]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileForwarding {
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

/// `[cookies]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCookies {
    pub session_secure: Option<bool>,
    pub session_samesite: Option<Spanned<String>>,
}

/// `[retries]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetries {
    pub methods: Option<Vec<Spanned<String>>>,
    pub max_replays: Option<Spanned<i64>>,
}

/// `[health]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub when_all_down: Option<Spanned<String>>,
    pub maintenance_page: Option<Spanned<String>>,
    pub retry_after: Option<FileDuration>,
    #[serde(default)]
    pub interactive: FileProbe,
    #[serde(default)]
    pub gevent: FileProbe,
}

/// `[health.interactive]`, `[health.gevent]` and `[nodes.health]`: each key
/// absent means "as the level above" (the role's table, then the default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProbe {
    pub path: Option<Spanned<String>>,
    pub interval: Option<FileDuration>,
    pub timeout: Option<FileDuration>,
    pub status: Option<Spanned<i64>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

/// `[admission]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmission {
    pub queue_length: Option<Spanned<i64>>,
    pub queue_timeout: Option<FileDuration>,
    pub retry_after: Option<FileDuration>,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    pub worker_threads: Option<Spanned<i64>>,
}

/// `[static]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStatic {
    #[serde(default)]
    pub addons_paths: Vec<Spanned<String>>,
    pub cache_control: Option<Spanned<String>>,
    pub follow_symlinks: Option<bool>,
    pub compress_min_size: Option<FileSize>,
    pub memory_cache: Option<FileSize>,
}

/// `[x_accel]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileXAccel {
    pub filestore: Option<Spanned<String>>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: Option<Spanned<String>>,
    pub allow_remote: Option<bool>,
}

/// `[access_log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    pub format: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
}
