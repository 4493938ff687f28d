//! Validated runtime configuration and [`load`].
//!
//! The file is parsed into the raw mirror in [`file`], then [`validate`] checks
//! every rule and either builds a [`Config`] or returns every problem it found,
//! each naming its key, bad value and line.

pub mod file;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

pub use validate::{DEFAULT_UPSTREAM_RESPONSE, parse};

/// The configuration every other module reads. Built only by [`parse`]/[`load`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain-HTTP listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Every declared Odoo node, in file order, cron nodes included.
    pub nodes: Vec<NodeConfig>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub forwarding: Forwarding,
    pub cookies: CookieFlags,
    pub retries: Retries,
    pub health: Health,
    pub admission: Admission,
    /// Static module assets served from disk.
    pub statics: StaticConfig,
    /// `[x_accel] filestore`: Odoo's `<data_dir>/filestore`, canonical; `None` = not configured.
    pub filestore: Option<PathBuf>,
    /// Tokio worker threads; `None` means one per core.
    pub worker_threads: Option<usize>,
    /// `[admin] address`: the admin listener (`/healthz`, `/readyz`,
    /// `/status`, drain); `None` = off.
    pub admin: Option<SocketAddr>,
    /// `[access_log]`: one line per request.
    pub access_log: AccessLogConfig,
    /// Non-fatal remarks found while validating (printed by `check` and at start).
    pub warnings: Vec<String>,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// `[listeners.tls]`: terminate TLS here.
    pub tls: Option<TlsConfig>,
    /// `redirect_to_https = true` on a plain listener.
    pub redirect: Option<Redirect>,
}

/// `[listeners.tls]`: certificates and what the TLS listener does.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `certificates = [{ cert = "...", key = "..." }, ...]`, in file order;
    /// the first (or the one named by `default_certificate`) answers clients
    /// without a matching SNI name.
    pub certificates: Vec<CertificateFiles>,
    /// Index into `certificates` of the default certificate.
    pub default_certificate: usize,
    /// A client whose SNI name no certificate covers (or that sends none).
    pub unknown_sni: UnknownSni,
    /// A handshake not complete within this is dropped.
    pub handshake_timeout: Duration,
    /// `Strict-Transport-Security` on every HTTPS reply; `None` = off.
    pub hsts: Option<http::HeaderValue>,
    /// Offer HTTP/2 through ALPN.
    pub http2: bool,
    /// The rustls server config built from the files when the config was loaded.
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a TLS listener does with an SNI name none of its certificates covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// Answer with the default certificate (the client will likely warn).
    Default,
    /// Refuse the handshake (rustls sends an `access_denied` alert).
    Refuse,
}

/// A plain listener that sends browsers to HTTPS.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// 301 (default) or 308.
    pub status: http::StatusCode,
    /// HTTPS port in the Location when not 443.
    pub https_port: Option<u16>,
    /// Path prefixes served normally instead (an ACME http-01 challenge).
    pub except: Vec<String>,
}

/// What an Odoo node does; decides which requests it may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Prefork HTTP workers: web UI, RPC, reports.
    Interactive,
    /// The evented (gevent) process: `/websocket` and `/longpolling`.
    Gevent,
    /// `http_enable = False`: scheduled jobs only, never any request.
    Cron,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Interactive => "interactive",
            Role::Gevent => "gevent",
            Role::Cron => "cron",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[nodes]]` entry.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// `host:port` exactly as written (a name is resolved at connect time).
    pub address: String,
    pub role: Role,
    /// Odoo HTTP workers on the node (`workers =` in odoo.conf); 0 when not given.
    pub workers: u32,
    /// `drain = true`: no new requests or tunnels; those in flight finish.
    pub drain: bool,
    /// The role's `[health.<role>]` probe with this node's `[nodes.health]`
    /// overrides applied (unused for cron nodes, which are never probed).
    pub probe: Probe,
}

/// `[health]`: active probes, and what happens when no node passes them.
#[derive(Debug, Clone)]
pub struct Health {
    /// `[health.interactive]`, defaults: `GET /web/health`.
    pub interactive: Probe,
    /// `[health.gevent]`, defaults: `GET /websocket/health`.
    pub gevent: Probe,
    pub when_all_down: WhenAllDown,
    /// Contents of `maintenance_page`, read when the config is loaded.
    pub maintenance_page: Option<bytes::Bytes>,
    /// `Retry-After` on the 503 of a pool with no healthy node.
    pub retry_after: Duration,
}

/// One node's active check: `GET path` every `interval`, healthy when the
/// status is `status` within `timeout`; `rise` consecutive passes bring a
/// node in, `fall` consecutive failures (probes or live traffic) take it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Path and query, such as `/web/health?db_server_status=1`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub status: u16,
    pub rise: u32,
    pub fall: u32,
}

/// What a pool does when none of its nodes is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Route to every node anyway (best effort): a broken probe cannot take
    /// the site down. The default.
    Open,
    /// Answer 503 with `Retry-After` and the maintenance page.
    Closed,
}

/// `[admission]`: the edge-side queue for requests that find every worker busy.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Requests that may wait at once; more get a 503 at once. 0: no queue.
    pub queue_length: usize,
    /// Longest wait for a free worker before a 503.
    pub queue_timeout: Duration,
    /// `Retry-After` on those 503s.
    pub retry_after: Duration,
}

/// `[timeouts]`, all resolved to their defaults.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From the first byte of a request head to its end.
    pub client_header: Duration,
    /// Longest pause between two reads of a request body.
    pub client_body: Duration,
    /// Idle time allowed between two requests on a kept-alive connection.
    pub client_keepalive: Duration,
    /// Longest a write to the client may stall.
    pub client_send: Duration,
    pub upstream_connect: Duration,
    /// From the request sent to the reply head, and between two reads of the reply body.
    pub upstream_response: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub websocket_idle: Duration,
    /// At SIGTERM/SIGINT, how long requests in flight may take to finish
    /// before their connections are dropped.
    pub shutdown: Duration,
}

/// `[limits]`, in bytes.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: u64,
    /// Request body bytes kept in memory before spooling to a temp file.
    pub request_buffer: usize,
    /// Reply bytes kept in memory for a slow client before spooling.
    pub response_buffer: usize,
    /// Past this much spooled reply, the edge stops reading from Odoo until the client catches up.
    pub max_response_spool: u64,
    pub max_header_bytes: usize,
    /// Client connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Where spool files go (they are unlinked at creation); `None` is the system temp dir.
    pub spool_dir: Option<PathBuf>,
}

/// `[static]`: `/<module>/static/<path>` from the addons paths.
#[derive(Debug, Clone)]
pub struct StaticConfig {
    /// Canonical addons paths, in Odoo's addons_path order; empty = off.
    pub addons_paths: Vec<PathBuf>,
    pub cache_control: http::HeaderValue,
    /// Follow symlinks that stay inside their addons path (never outside).
    pub follow_symlinks: bool,
    /// Text files at least this large are compressed (gzip, br) for clients that accept it.
    pub compress_min_size: usize,
    /// Files and their compressed forms kept in memory, in bytes.
    pub memory_cache: usize,
}

/// `[forwarding]`
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Peers whose X-Forwarded-* headers are believed and extended.
    pub trusted_proxies: Vec<IpNet>,
}

/// `[cookies]`: what the `session_id` cookie gets on HTTPS.
#[derive(Debug, Clone)]
pub struct CookieFlags {
    pub secure: bool,
    /// `Lax`, `Strict` or `None`; `None` here means leave SameSite alone.
    pub same_site: Option<&'static str>,
}

/// `[access_log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    /// A file (appended to, reopened on reload), or `-` for standard output.
    pub path: PathBuf,
}

impl Default for AccessLogConfig {
    fn default() -> AccessLogConfig {
        AccessLogConfig {
            format: AccessLogFormat::Json,
            path: PathBuf::from("-"),
        }
    }
}

/// `access_log.format`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's `combined`, then the edge's fields as `key=value`.
    Combined,
    Off,
}

/// `[retries]`
#[derive(Debug, Clone)]
pub struct Retries {
    /// Methods that may be replayed on another node after a node may have seen them.
    pub methods: Vec<Method>,
    /// How many replays at most for one request.
    pub max_replays: u32,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's own message already carries line, column and a caret snippet.
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One rule the file breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path such as `nodes[1].address`.
    pub key: String,
    /// The offending value as a TOML literal (strings quoted), when there is one.
    pub value: Option<String>,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

impl Config {
    /// Nodes of one role, in file order.
    pub fn nodes_with_role(&self, role: Role) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(move |n| n.role == role)
    }
}
