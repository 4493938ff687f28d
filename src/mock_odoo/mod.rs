//! A stand-in for an Odoo HTTP node, faithful to what a reverse proxy can observe.
//!
//! Used in-process by the proxy's tests and `demo` command, and as the `mock-odoo` binary.
//!
//! # Layout
//! * this file: configuration ([`MockConfig`]), [`spawn`]/[`bind`], and the accept loops that
//!   reproduce Odoo's two server models (prefork workers or one task per connection).
//! * `http`: reading a request and writing a reply on the raw socket (httparse).
//! * `routes`: health, echo, control endpoints and the `mock_*` knobs for one request.
//! * `static_files`: `/<module>/static/<path>` from the addons paths.
//! * `filestore`: `/web/content/<id>` from the filestore, with X-Sendfile/X-Accel-Redirect,
//!   and the misrouted `/web/filestore/...`; its docs state the fixture convention.
//! * `stream`: Odoo's `Stream.get_response` (werkzeug `send_file`): file headers, 304, 206.
//! * `websocket`: Odoo's handshake checks and an echo session.
//! * `stats`: counters tests read, and the runtime [`Fail`] switch.
//!
//! # Request knobs (query string)
//! `mock_sleep=<ms>`, `mock_status=<code>`, `mock_size=<bytes>` (body of [`PATTERN`] bytes),
//! `mock_fail=garbage|reset|close|hang|none`, `mock_cookie=1`. On `/web/content/<id>` with a
//! filestore: `mimetype`, `download`, `unique`, `mock_cookie`, `mock_accel` (see
//! `filestore`); `mock_status` and `mock_size` do not apply there. Control endpoints:
//! `GET /__mock/stats` and `GET /__mock/fail?mode=<mode|none>`.

mod filestore;
mod http;
mod routes;
mod static_files;
mod stats;
mod stream;
mod websocket;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument as _, debug, debug_span, info_span, warn};

pub use filestore::store_attachment;
pub use http::PATTERN;
pub use stats::{Fail, Stats, UnknownFail};

use http::{Conn, ReadError};
use routes::Next;

/// Which Odoo process the mock plays. Cron nodes have no HTTP port, so there is no cron role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP port (8069): prefork workers or the threaded server.
    Interactive,
    /// The evented gevent process (8072) that serves websockets in prefork deployments.
    Gevent,
}

/// How the node serves connections, after Odoo's `workers` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `workers = N`: N workers each accept one connection, serve one HTTP/1.0 request and
    /// close; further connections wait in the kernel backlog.
    Prefork {
        /// Number of workers; 0 is treated as 1.
        workers: usize,
    },
    /// `workers = 0` (or the gevent process): every connection served at once, keep-alive.
    Threaded,
}

/// A role name that is neither `interactive` nor `gevent`.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (expected interactive or gevent)")]
pub struct UnknownRole(pub String);

/// Configuration of one mock node.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Reported as `node` in every echo and in `X-Mock-Node`.
    pub name: String,
    /// Which Odoo process this node plays.
    pub role: Role,
    /// Prefork or threaded serving.
    pub mode: Mode,
    /// Added before every reply except `/__mock/*`.
    pub latency: Duration,
    /// Bound on each socket read once a request has started (Odoo's 2 s socket timeout). In
    /// prefork mode it also bounds the wait for the first byte.
    pub read_timeout: Duration,
    /// A request delayed longer than this is closed with no reply after this long, as the
    /// watchdog's SIGKILL does. `None` disables it.
    pub limit_time_real: Option<Duration>,
    /// Answer of `/web/health?db_server_status`.
    pub db_up: bool,
    /// Failure applied to every request from the start (see [`Stats::set_fail`]).
    pub fail: Option<Fail>,
    /// Odoo's `addons_path`, in order: `/<module>/static/<path>` is served from the first
    /// one holding the file. Empty: static paths are echoed like any other request.
    pub addons_paths: Vec<PathBuf>,
    /// Odoo 16+'s `x_sendfile`: `/web/content/<id>` answers with `X-Sendfile` and
    /// `X-Accel-Redirect` and no body. Needs [`MockConfig::filestore`].
    pub x_sendfile: bool,
    /// The filestore root, Odoo's `<data_dir>/filestore`; attachments live under
    /// `<filestore>/<db_name>/`. `None`: `/web/content/...` is echoed.
    pub filestore: Option<PathBuf>,
    /// The database name, i.e. the filestore subdirectory and the second segment of
    /// `X-Accel-Redirect: /web/filestore/<db>/...`.
    pub db_name: String,
}

/// A running mock node. Dropping it, or [`MockHandle::shutdown`], stops it.
#[derive(Debug)]
pub struct MockHandle {
    /// The address the node listens on.
    pub addr: SocketAddr,
    /// Live counters of the node.
    pub stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    /// Yields `None` once every task has dropped its sender, i.e. has finished.
    done: mpsc::Receiver<()>,
}

/// State shared by all tasks of one node.
pub(crate) struct Node {
    pub(crate) cfg: MockConfig,
    pub(crate) stats: Arc<Stats>,
    /// Becomes `true` (or is dropped) when the handle shuts the node down.
    pub(crate) shutdown: watch::Receiver<bool>,
}

// === impl Role ===

impl Role {
    /// `"interactive"` or `"gevent"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Interactive => "interactive",
            Role::Gevent => "gevent",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interactive" => Ok(Role::Interactive),
            "gevent" => Ok(Role::Gevent),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Mode ===

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Prefork { workers } => write!(f, "prefork, {workers} workers"),
            Mode::Threaded => f.write_str("threaded"),
        }
    }
}

// === impl MockConfig ===

impl MockConfig {
    /// A node with Odoo's defaults for its role: interactive nodes are prefork with 4
    /// workers (the deployment a proxy fronts), gevent nodes are evented (threaded); no
    /// latency, 2 s read timeout, no `limit_time_real`, DB up, no failure.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        MockConfig {
            name: name.into(),
            role,
            mode: match role {
                Role::Interactive => Mode::Prefork { workers: 4 },
                Role::Gevent => Mode::Threaded,
            },
            latency: Duration::ZERO,
            read_timeout: Duration::from_secs(2),
            limit_time_real: None,
            db_up: true,
            fail: None,
            addons_paths: Vec::new(),
            x_sendfile: false,
            filestore: None,
            db_name: "odoo".to_owned(),
        }
    }

    /// Sets the serving mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the latency added before every reply.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the per-read timeout.
    pub fn with_read_timeout(mut self, read_timeout: Duration) -> Self {
        self.read_timeout = read_timeout;
        self
    }

    /// Sets (or with `None` disables) the watchdog limit.
    pub fn with_limit_time_real(mut self, limit: Option<Duration>) -> Self {
        self.limit_time_real = limit;
        self
    }

    /// Sets whether the database answers `/web/health?db_server_status`.
    pub fn with_db_up(mut self, db_up: bool) -> Self {
        self.db_up = db_up;
        self
    }

    /// Sets the failure applied to every request from the start.
    pub fn with_fail(mut self, fail: Option<Fail>) -> Self {
        self.fail = fail;
        self
    }

    /// Sets the addons paths, in Odoo's `addons_path` order (the first holding a file wins).
    pub fn with_addons_paths<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.addons_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Serves `/web/content/<id>` from this filestore root (Odoo's `<data_dir>/filestore`)
    /// by sending the bytes itself, as Odoo does without `x_sendfile`.
    pub fn with_filestore(mut self, filestore_root: impl Into<PathBuf>) -> Self {
        self.filestore = Some(filestore_root.into());
        self
    }

    /// Turns `x_sendfile` on with this filestore root: `/web/content/<id>` replies carry
    /// `X-Sendfile` and `X-Accel-Redirect` and `Content-Length: 0`.
    pub fn with_x_sendfile(mut self, filestore_root: impl Into<PathBuf>) -> Self {
        self.x_sendfile = true;
        self.filestore = Some(filestore_root.into());
        self
    }

    /// Sets the database name (default `odoo`).
    pub fn with_db(mut self, db_name: impl Into<String>) -> Self {
        self.db_name = db_name.into();
        self
    }

    /// Makes the paths absolute, as Odoo does with `addons_path` and `data_dir`: the
    /// `X-Sendfile` value and the static ETag are computed from absolute paths.
    fn absolutize(mut self) -> Self {
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        self.addons_paths = self.addons_paths.into_iter().map(absolute).collect();
        self.filestore = self.filestore.map(absolute);
        self
    }
}

// === impl MockHandle ===

impl MockHandle {
    /// Makes every following request fail this way; `None` restores normal replies.
    pub fn set_fail(&self, fail: Option<Fail>) {
        self.stats.set_fail(fail);
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, closes every connection (websockets with 1001) and waits for all tasks.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        while self.done.recv().await.is_some() {}
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Serves a mock node on an already bound listener.
pub async fn spawn(listener: TcpListener, cfg: MockConfig) -> MockHandle {
    // A listening socket always has a local address; failure would mean a closed fd.
    let addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    let cfg = cfg.absolutize();
    let stats = Arc::new(Stats::new(&cfg.name, cfg.fail));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive, done) = mpsc::channel(1);
    let span = info_span!("mock_odoo", node = %cfg.name);
    let node = Arc::new(Node {
        cfg,
        stats: stats.clone(),
        shutdown: shutdown_rx,
    });
    match node.cfg.mode {
        Mode::Prefork { workers } => {
            let listener = Arc::new(listener);
            for worker in 0..workers.max(1) {
                let task = run_worker(node.clone(), listener.clone(), alive.clone());
                tokio::spawn(task.instrument(debug_span!(parent: &span, "worker", worker)));
            }
        }
        Mode::Threaded => {
            tokio::spawn(run_threaded(node, listener, alive).instrument(span));
        }
    }
    MockHandle {
        addr,
        stats,
        shutdown: shutdown_tx,
        done,
    }
}

/// Binds `addr` with Odoo's backlog (`8 * workers` in prefork mode, 1024 otherwise), then
/// [`spawn`]s the node.
pub async fn bind(addr: SocketAddr, cfg: MockConfig) -> std::io::Result<MockHandle> {
    use socket2::{Domain, Protocol, Socket, Type};

    let backlog = match cfg.mode {
        Mode::Prefork { workers } => 8 * workers.max(1),
        Mode::Threaded => 1024,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    let listener = TcpListener::from_std(socket.into())?;
    Ok(spawn(listener, cfg).await)
}

/// One prefork worker: accept one connection, serve it, close, repeat. While it is busy it
/// does not accept, so waiting connections stay in the kernel backlog as with Odoo.
async fn run_worker(node: Arc<Node>, listener: Arc<TcpListener>, _alive: mpsc::Sender<()>) {
    let mut shutdown = node.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::select! {
                    // Biased so a websocket sees the shutdown first and can send its 1001.
                    biased;
                    () = serve_connection(&node, stream, peer) => {}
                    () = stopped(&mut shutdown) => return,
                }
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

/// The threaded server: one task per connection, no limit.
async fn run_threaded(node: Arc<Node>, listener: TcpListener, alive: mpsc::Sender<()>) {
    let mut shutdown = node.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let node = node.clone();
                let alive = alive.clone();
                let mut shutdown = shutdown.clone();
                let task = async move {
                    let _alive = alive;
                    tokio::select! {
                        biased;
                        () = serve_connection(&node, stream, peer) => {}
                        () = stopped(&mut shutdown) => {}
                    }
                };
                tokio::spawn(task.in_current_span());
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

/// Resolves once the handle asks the node to stop (or is gone). The watch guard is dropped
/// inside, so callers may hold the result across awaits.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accept errors such as EMFILE are transient; pause so the loop does not spin.
async fn accept_failed(err: std::io::Error) {
    warn!(cause = %err, "failed to accept");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves requests on one connection until it closes; prefork serves exactly one.
async fn serve_connection(node: &Node, stream: TcpStream, peer: SocketAddr) {
    node.stats.count_connection();
    // Replies are written in one piece; Nagle would only add delay to the last segment.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream, peer, node.cfg.read_timeout);
    let prefork = matches!(node.cfg.mode, Mode::Prefork { .. });
    // Odoo's prefork socket timeout also covers the first byte; threaded idles freely.
    let idle = prefork.then_some(node.cfg.read_timeout);
    async {
        loop {
            let head = match conn.read_head(idle).await {
                Ok(head) => head,
                Err(ReadError::Timeout) => {
                    node.stats.count_read_timeout();
                    debug!("read timeout in request head, closing");
                    return;
                }
                Err(err @ ReadError::Malformed(_)) => {
                    let reply = routes::bad_request(&err);
                    let version = routes::version(node);
                    let _ = conn
                        .write_reply(&node.cfg.name, version, reply, true, false)
                        .await;
                    return;
                }
                Err(ReadError::Closed | ReadError::TooLarge | ReadError::Io(_)) => return,
            };
            if routes::serve(node, &mut conn, head).await == Next::Close || prefork {
                return;
            }
        }
    }
    .instrument(debug_span!("conn", %peer))
    .await;
}
