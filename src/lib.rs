//! odoo-edge: an HTTP edge proxy that knows the shape of an Odoo cluster.
//!
//! It replaces the nginx in front of Odoo. The cluster is declared as nodes
//! with roles: **interactive** nodes (prefork HTTP workers) get the web UI,
//! RPC and reports in round robin; **gevent** nodes get the long-lived
//! `/websocket` (and `/longpolling`) connections; **cron** nodes
//! (`http_enable = False`) are declared so the edge knows the topology, and are
//! never sent anything.
//!
//! # Request flow
//!
//! ```text
//! client ─► listener (TLS + ALPN, or plain; a redirect listener answers 301;
//!           ClientIo: idle/head/send timeouts; hyper HTTP/1.1 or HTTP/2)
//!        ─► request_log::RequestLog  X-Request-ID; at the end: metrics, access log
//!        ─► proxy::handle            with the Edge current when the request came
//!             ├─ static_files           GET/HEAD /<module>/static/<path> from the addons paths
//!             │                           (missing → on to Odoo; unsafe → 404)
//!             ├─ router::route(path) ─► Bus | Interactive
//!             ├─ websocket upgrade? ─► proxy::websocket ─► 101 ─► proxy::tunnel (splice)
//!             ├─ proxy::body::collect   whole body: memory, then spool file; 413 over the cap
//!             ├─ proxy::headers         X-Forwarded-*, hop-by-hop
//!             ├─ pool::Pool::acquire    a free worker on a healthy node (fewest in flight),
//!             │                           else wait in the FIFO queue; refused → next node;
//!             │                           replay only GET/HEAD
//!             ├─ upstream::Endpoint     connect (or reuse a kept-alive connection), send
//!             ├─ proxy::accel           X-Accel-Redirect reply → stream the filestore file itself
//!             └─ proxy::reply           drain the node at its pace, feed the client at its own
//! ```
//!
//! Odoo's prefork workers serve one connection at a time and give a client 2 s
//! between reads, so the edge takes the whole request before it picks a node,
//! and takes the whole reply off the node as fast as it comes, buffering for a
//! slow client (memory, then a temp file), the way nginx's proxy buffering does.
//!
//! # Layout
//!
//! * `config`: the TOML file (`file`), its rules (`validate`), the runtime [`Config`].
//! * `listener`: bind, accept, TLS handshakes, serve connections (HTTP/1.1,
//!   HTTP/2 over TLS), HSTS, the HTTPS redirect; client-side timeouts.
//! * `tls`: certificates from PEM, the SNI resolver, rustls settings, checks.
//! * `router`: path → route; pure.
//! * `proxy`: the request phases; `body`, `headers`, `reply`, `accel`, `websocket`, `tunnel`.
//! * `pool`: nodes by role; admission control (workers per node, one FIFO
//!   queue), membership (up, draining).
//! * `health`: active probes and passive failure counting; rise and fall.
//! * `reload`: SIGHUP: a new generation of the edge from the changed file,
//!   swapped in atomically; kept nodes carry over, removed ones drain.
//! * `admin`: the admin API (`/healthz`, `/readyz`, `/status`, `/metrics`, drain).
//! * `metrics`: the Prometheus families, recorded as requests end, cluster
//!   gauges read at scrape time.
//! * `request_log`: one request's record (request id, route kind, node,
//!   retries, queue wait, bytes); when it ends, its metrics and its line in
//!   the `access_log` (JSON or combined, written by a thread of its own).
//! * `systemd`: readiness, reload and stop notifications (`Type=notify`).
//! * `upstream`: connections to a node; keep-alive only when the node offers it.
//! * `spool`: unlinked temp files for large bodies, and file-range bodies.
//! * `sendfile`: file-range bodies on plain client connections go out with
//!   sendfile(2): hyper is handed placeholder frames and `ClientIo` sends the
//!   file region each stands for.
//! * `static_files`: module assets from disk, cached in memory with gzip/br forms.
//! * `conditional`: If-None-Match / If-Modified-Since / Range on files the edge serves.
//! * `error`: [`error::ProxyError`] and its one mapping to a status.
//! * `shutdown`: graceful then hard stop (`[timeouts] shutdown`), and the
//!   tasks to wait for; websockets are closed with 1001.
//! * `mock_odoo`: a faithful stand-in for Odoo, used by tests, benches and the demo.
//! * `demo`: `odoo-edge demo`, the edge in front of built-in mock nodes.

pub mod access_log;
pub mod admin;
pub mod conditional;
pub mod config;
pub mod demo;
pub mod error;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod mock_odoo;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod request_log;
pub mod router;
pub mod sendfile;
pub mod shutdown;
pub mod spool;
pub mod static_files;
pub mod systemd;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

pub use config::Config;
pub use listener::BindError;
use proxy::Edge;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("access_log.path = {path:?}: cannot be opened: {source}")]
    AccessLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running edge: its bound addresses and the means to stop it.
pub struct Running {
    /// Local addresses, in `listeners` order (useful with port 0).
    pub addrs: Vec<SocketAddr>,
    /// The admin API's local address, when configured.
    pub admin: Option<SocketAddr>,
    lifecycle: shutdown::Lifecycle,
    /// The edge requests are served with; a reload swaps it.
    edge: proxy::Current,
    /// Each listener's configured address and mode, for certificate reloads
    /// (and to tell which listener changes need a restart).
    listeners: Vec<(SocketAddr, listener::Mode)>,
    /// One reload at a time.
    reloader: Mutex<reload::Reloader>,
}

/// Binds every listener and starts serving. Fails, with the listener named,
/// if any address cannot be bound; nothing is served then.
pub fn start(config: &Config) -> Result<Running, StartError> {
    let listeners = listener::bind(&config.listeners)?;
    let lifecycle = shutdown::Lifecycle::default();
    let metrics = metrics::Metrics::new();
    let access_log =
        access_log::AccessLog::new(&config.access_log, &metrics).map_err(|source| {
            StartError::AccessLog {
                path: config.access_log.path.clone(),
                source,
            }
        })?;
    let shared = Arc::new(proxy::Shared {
        lifecycle: lifecycle.clone(),
        metrics,
        access_log,
    });
    let edge: proxy::Current = Arc::new(ArcSwap::from_pointee(Edge::new(config, shared)));
    let first = edge.load_full();
    log_topology(config);
    let mut addrs = Vec::new();
    let mut modes = Vec::new();
    for (l, l_config) in listeners.into_iter().zip(&config.listeners) {
        let mode = listener::Mode::new(l_config);
        modes.push((l_config.address, mode.clone()));
        let addr = l
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        info!(address = %addr, "listening");
        addrs.push(addr);
        lifecycle
            .tasks
            .spawn(listener::serve(l, edge.clone(), mode));
    }
    let probes = health::spawn(
        &first.topology,
        config.timeouts.upstream_connect,
        &lifecycle,
    );
    let admin = match config.admin {
        Some(address) => {
            let l = listener::bind_admin(address)?;
            let addr = l.local_addr().unwrap_or(address);
            info!(address = %addr, "admin API listening");
            lifecycle.tasks.spawn(admin::serve(l, edge.clone()));
            Some(addr)
        }
        None => None,
    };
    Ok(Running {
        addrs,
        admin,
        lifecycle,
        edge,
        listeners: modes,
        reloader: Mutex::new(reload::Reloader::new(config, probes)),
    })
}

impl Running {
    /// Applies a changed, validated config (see [`mod@reload`]): a new generation
    /// of the edge is built and swapped in; requests already running finish
    /// with the one they started with; kept nodes carry their health, idle
    /// connections and busy workers over; removed nodes are drained; probes
    /// move to the new topology; certificates are swapped; the access log is
    /// reopened. Counted as a successful reload. Returns what it changed and
    /// what needs a restart, one line each (each also logged).
    pub fn reload(&self, config: &Config) -> Vec<String> {
        let mut reloader = self.reloader.lock().unwrap_or_else(PoisonError::into_inner);
        reloader.apply(&self.edge, &self.lifecycle, &self.listeners, config)
    }

    /// A reload whose file could not be used (`error` says why): logged and
    /// counted; the running configuration stays.
    pub fn reload_refused(&self, error: &str) {
        self.edge.load().shared.metrics.reload(false);
        error!(cause = %error, "reload refused; the running configuration stays");
    }

    /// The edge as it serves requests now (after the last reload).
    pub fn edge(&self) -> Arc<Edge> {
        self.edge.load_full()
    }

    /// Tasks alive now: listeners, probes, client connections, tunnels.
    pub fn tasks(&self) -> usize {
        self.lifecycle.tasks.len()
    }

    /// Stops accepting (new connections are refused), lets open requests
    /// finish for up to `deadline`, closes websockets at once with a close
    /// frame 1001 (Going Away) to the client and a masked one to the node
    /// (after the frames in flight; see `proxy::tunnel`), drops whatever is
    /// left at the deadline, waits (up to [`access_log::DRAIN_LIMIT`]) for
    /// the access log lines still queued to be written, then returns. With
    /// only websockets open it returns within `proxy::tunnel::CLOSE_LIMIT`
    /// (plus the log's drain), whatever the deadline.
    pub async fn shutdown(self, deadline: Duration) {
        self.lifecycle.stop(deadline).await;
        // The lines of the last requests reach the log before the process
        // exits, unless the writer is stuck (a hung disk, an unread pipe).
        let shared = self.edge.load().shared.clone();
        let drain = move || shared.access_log.drain(access_log::DRAIN_LIMIT);
        if !tokio::task::spawn_blocking(drain).await.unwrap_or(false) {
            warn!(limit = ?access_log::DRAIN_LIMIT, "access log lines still queued at exit; dropped");
        }
    }
}

/// Serves until `stop` resolves, then shuts down gracefully, giving requests
/// in flight up to `[timeouts] shutdown` to finish.
pub async fn run(
    config: &Config,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(config)?;
    stop.await;
    info!("shutting down");
    running.shutdown(config.timeouts.shutdown).await;
    Ok(())
}

fn log_topology(config: &Config) {
    for node in &config.nodes {
        info!(node = %node.name, address = %node.address, role = %node.role, workers = node.workers, "node");
    }
    for warning in &config.warnings {
        warn!("{warning}");
    }
}
