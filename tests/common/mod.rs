//! Shared helpers for the edge's integration tests: a cluster of in-process mock
//! Odoo nodes with an edge in front, a small HTTP/1.1 client, raw-socket requests,
//! a websocket client and a reader for the mock's JSON echo; `process` runs
//! the real `odoo-edge run` binary, `tls` makes certificates.
//!
//! Everything listens on 127.0.0.1 with ports chosen by the system, and every
//! wait is bounded: by [`STEP`] unless its doc names another bound.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use odoo_edge::mock_odoo::{self, MockConfig, MockHandle, Mode, Role, Stats};
use odoo_edge::{Config, Running};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;

/// Upper bound for any single step of a test (a request, a handshake, a wait).
pub const STEP: Duration = Duration::from_secs(10);

/// 127.0.0.1 with a port chosen by the system.
pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// === Cluster ===

/// One node of a cluster under test, before it is started.
enum Spec {
    /// An in-process mock Odoo node.
    Mock(MockConfig),
    /// A cron node: a plain listener that only counts connections.
    Cron(String),
    /// A node whose address refuses connections, with its role.
    Refused(String, &'static str),
    /// A node the test serves itself at this address, with its role.
    External(String, SocketAddr, &'static str),
}

/// Builds a cluster: mock nodes first, then an edge configured in front of them.
#[derive(Default)]
pub struct ClusterBuilder {
    specs: Vec<Spec>,
    extra: String,
    /// Applied to the parsed config before the edge starts, for values the file refuses.
    tweak: Option<ConfigTweak>,
}

/// A change made to the parsed config before the edge starts.
type ConfigTweak = Box<dyn FnOnce(&mut Config)>;

/// Mock nodes and an edge in front of them.
pub struct Cluster {
    /// Where the edge listens.
    pub edge: SocketAddr,
    /// The configuration the edge runs with.
    pub config: Config,
    /// The TOML it was parsed from.
    text: String,
    mocks: Vec<(String, MockHandle)>,
    cron: Vec<(String, Arc<AtomicU64>, JoinHandle<()>)>,
    /// Bound but never listening: connecting to them is refused, and no other
    /// socket can take their port while the test runs.
    refused: Vec<(String, TcpSocket)>,
    /// `None` once [`Cluster::stop_edge`] has run.
    running: Option<Running>,
}

impl ClusterBuilder {
    /// An interactive node with the mock's defaults (prefork, 4 workers).
    pub fn interactive(self, name: &str) -> Self {
        self.node(MockConfig::new(name, Role::Interactive))
    }

    /// A gevent node with the mock's defaults (threaded).
    pub fn gevent(self, name: &str) -> Self {
        self.node(MockConfig::new(name, Role::Gevent))
    }

    /// Any mock node; its role in the edge's config follows `cfg.role`.
    pub fn node(mut self, cfg: MockConfig) -> Self {
        self.specs.push(Spec::Mock(cfg));
        self
    }

    /// A cron node: a listener that counts the connections it accepts.
    pub fn cron(mut self, name: &str) -> Self {
        self.specs.push(Spec::Cron(name.to_owned()));
        self
    }

    /// An interactive node whose port refuses every connection.
    pub fn refused(mut self, name: &str) -> Self {
        self.specs
            .push(Spec::Refused(name.to_owned(), "interactive"));
        self
    }

    /// A gevent node whose port refuses every connection.
    pub fn refused_gevent(mut self, name: &str) -> Self {
        self.specs.push(Spec::Refused(name.to_owned(), "gevent"));
        self
    }

    /// A node served by the test itself (a hand-written fake) at `addr`.
    pub fn external(mut self, name: &str, addr: SocketAddr, role: &'static str) -> Self {
        self.specs.push(Spec::External(name.to_owned(), addr, role));
        self
    }

    /// Changes the parsed config before the edge starts: for values below what the
    /// file accepts (such as a websocket idle timeout short enough for a test).
    pub fn tweak(mut self, tweak: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweak = Some(Box::new(tweak));
        self
    }

    /// TOML appended after the listener and the nodes, such as `[limits]` settings.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// Starts the nodes, then the edge (listening on 127.0.0.1:0).
    pub async fn start(self) -> Cluster {
        let mut text = format!("[[listeners]]\naddress = \"{}\"\n", localhost());
        let mut mocks = Vec::new();
        let mut cron = Vec::new();
        let mut refused = Vec::new();
        for spec in self.specs {
            let (name, address, role, workers) = match spec {
                Spec::Mock(cfg) => {
                    let name = cfg.name.clone();
                    let role = cfg.role.as_str();
                    let workers = match cfg.mode {
                        Mode::Prefork { workers } => workers.max(1),
                        Mode::Threaded => 1,
                    };
                    let handle = mock_odoo::bind(localhost(), cfg)
                        .await
                        .expect("mock node must bind");
                    let addr = handle.addr;
                    mocks.push((name.clone(), handle));
                    (name, addr, role, Some(workers))
                }
                Spec::Cron(name) => {
                    let listener = TcpListener::bind(localhost())
                        .await
                        .expect("cron sentinel must bind");
                    let addr = listener.local_addr().expect("cron sentinel address");
                    let count = Arc::new(AtomicU64::new(0));
                    let counter = count.clone();
                    let task = tokio::spawn(async move {
                        while let Ok((_stream, _)) = listener.accept().await {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    cron.push((name.clone(), count, task));
                    (name, addr, "cron", None)
                }
                Spec::Refused(name, role) => {
                    let socket = TcpSocket::new_v4().expect("socket");
                    socket.bind(localhost()).expect("bind without listening");
                    let addr = socket.local_addr().expect("bound address");
                    refused.push((name.clone(), socket));
                    (name, addr, role, Some(4))
                }
                Spec::External(name, addr, role) => (name, addr, role, Some(1)),
            };
            text.push_str(&format!(
                "\n[[nodes]]\nname = \"{name}\"\naddress = \"{address}\"\nrole = \"{role}\"\n"
            ));
            if let (Some(workers), true) = (workers, role == "interactive") {
                text.push_str(&format!("workers = {workers}\n"));
            }
        }
        text.push('\n');
        text.push_str(&self.extra);
        // Probes off the clock unless a test sets them: request and
        // connection counts then stay exact.
        for role in ["interactive", "gevent"] {
            if !self.extra.contains(&format!("[health.{role}]")) {
                text.push_str(&format!("\n[health.{role}]\ninterval = \"1h\"\n"));
            }
        }
        let mut config = odoo_edge::config::parse(&text)
            .unwrap_or_else(|e| panic!("test config must be valid: {e}\n---\n{text}"));
        if let Some(tweak) = self.tweak {
            tweak(&mut config);
        }
        let running = odoo_edge::start(&config).expect("edge must start");
        let edge = running.addrs[0];
        Cluster {
            edge,
            config,
            text,
            mocks,
            cron,
            refused,
            running: Some(running),
        }
    }
}

impl Cluster {
    /// An empty builder.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The demo's shape: `web1` and `web2` (interactive, prefork), `bus` (gevent), `cron`.
    pub fn standard() -> ClusterBuilder {
        Cluster::builder()
            .interactive("web1")
            .interactive("web2")
            .gevent("bus")
            .cron("cron")
    }

    /// The mock node called `name`.
    pub fn node(&self, name: &str) -> &MockHandle {
        self.mocks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h)
            .unwrap_or_else(|| panic!("no mock node named {name}"))
    }

    /// Every mock node, with its name.
    pub fn mocks(&self) -> impl Iterator<Item = (&str, &MockHandle)> {
        self.mocks.iter().map(|(n, h)| (n.as_str(), h))
    }

    /// Connections accepted by all mock nodes together.
    pub fn mock_connections(&self) -> u64 {
        self.mocks.iter().map(|(_, h)| h.stats.connections()).sum()
    }

    /// Connections accepted by all cron nodes together.
    pub fn cron_connections(&self) -> u64 {
        self.cron
            .iter()
            .map(|(_, count, _)| count.load(Ordering::SeqCst))
            .sum()
    }

    /// How many requests carrying `X-Mock-Request-Id: id` all mock nodes saw.
    pub fn seen(&self, id: &str) -> usize {
        self.mocks.iter().map(|(_, h)| h.stats.seen(id)).sum()
    }

    /// The running edge: [`Running::edge`] shows node health and load,
    /// [`Running::reload`] applies a changed config.
    /// The TOML the edge's config was parsed from, to parse again for a reload.
    #[allow(dead_code)]
    pub fn config_text(&self) -> String {
        self.text.clone()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the edge is still running")
    }

    /// Stops mock node `name` as a crash would look to the edge: its listener
    /// closes and every open connection is dropped without a reply. Returns its
    /// address and counters, which stay readable after the node is gone.
    pub async fn kill(&mut self, name: &str) -> Killed {
        let pos = self
            .mocks
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no running mock node named {name}"));
        let (_, handle) = self.mocks.remove(pos);
        let killed = Killed {
            addr: handle.addr,
            stats: handle.stats.clone(),
        };
        timeout(STEP, handle.shutdown())
            .await
            .unwrap_or_else(|_| panic!("mock node {name} must stop in time"));
        killed
    }

    /// Starts `cfg` as a mock node on `addr` (a killed node's address, so the
    /// edge's config still names it); [`Cluster::node`] then finds the new one.
    pub async fn restart(&mut self, cfg: MockConfig, addr: SocketAddr) {
        let name = cfg.name.clone();
        let deadline = Instant::now() + STEP;
        // Bounded by STEP: the old listener may take a moment to close.
        let handle = loop {
            match mock_odoo::bind(addr, cfg.clone()).await {
                Ok(handle) => break handle,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("mock node {name} must bind {addr} again: {e}"),
            }
        };
        self.mocks.push((name, handle));
    }

    /// Stops the edge only, giving open requests `deadline` to finish; the nodes keep running.
    pub async fn stop_edge(&mut self, deadline: Duration) {
        let running = self.running.take().expect("the edge is still running");
        timeout(deadline + STEP, running.shutdown(deadline))
            .await
            .expect("the edge must stop within its deadline");
    }

    /// Stops the edge (if still running), then the nodes, each within [`STEP`].
    pub async fn shutdown(mut self) {
        if self.running.is_some() {
            self.stop_edge(Duration::from_secs(2)).await;
        }
        for (name, mock) in self.mocks {
            timeout(STEP, mock.shutdown())
                .await
                .unwrap_or_else(|_| panic!("mock node {name} must stop in time"));
        }
        for (_, _, task) in self.cron {
            task.abort();
        }
        drop(self.refused);
    }
}

/// A mock node stopped by [`Cluster::kill`].
pub struct Killed {
    /// Where it listened: [`Cluster::restart`] binds it again.
    pub addr: SocketAddr,
    /// Its counters up to the kill.
    pub stats: Arc<Stats>,
}

// === HTTP client ===

/// A complete reply as the client received it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The first value of a header, if it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as the mock's JSON echo.
    pub fn echo(&self) -> Echo {
        Echo::parse(&self.body)
    }

    /// Asserts the edge's own short error page for `status`.
    pub fn assert_error_page(&self, status: u16) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status; body: {}",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("text/html; charset=utf-8"),
            "an edge error page is HTML"
        );
        let text = self.text();
        assert!(
            text.contains(&format!("<h1>{status} ")),
            "the page names its status: {text}"
        );
        assert!(text.len() < 1024, "the page is short: {} bytes", text.len());
        assert!(
            self.header("x-mock-node").is_none(),
            "an edge error page does not come from a node"
        );
    }
}

/// A request about to be sent to the edge.
pub struct Call {
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
}

impl Call {
    /// `method path` to `addr`, with `Host: <addr>`.
    pub fn new(addr: SocketAddr, method: Method, path: &str) -> Call {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().expect("a valid request path");
        request.headers_mut().insert(
            hyper::header::HOST,
            HeaderValue::from_str(&addr.to_string()).expect("an address is a valid Host"),
        );
        Call { addr, request }
    }

    /// Sets (replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_str(value).expect("a valid header value");
        self.request.headers_mut().insert(name, value);
        self
    }

    /// Sets the body; hyper sends it with its Content-Length.
    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        *self.request.body_mut() = Full::new(body.into());
        self
    }

    /// Sends the request on a fresh connection and reads the whole reply.
    pub async fn send(self) -> Reply {
        timeout(STEP, send_request(self.addr, self.request))
            .await
            .expect("the edge must reply in time")
    }
}

async fn send_request(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let mut conn = KeptAlive::connect(addr).await;
    conn.send(Call { addr, request }).await
}

/// One client connection that carries several requests in turn.
pub struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl KeptAlive {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> KeptAlive {
        let stream = TcpStream::connect(addr).await.expect("connect to the edge");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        let driver = tokio::spawn(async move {
            // The edge may close after a reply; that is not a test failure by itself.
            let _ = conn.await;
        });
        KeptAlive { sender, driver }
    }

    /// Sends `call` on this connection and reads the whole reply, within [`STEP`].
    pub async fn send(&mut self, call: Call) -> Reply {
        timeout(STEP, async {
            self.sender
                .ready()
                .await
                .expect("the connection must still be open");
            let response = self
                .sender
                .send_request(call.request)
                .await
                .expect("the edge must send a reply head");
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .expect("the reply body must arrive whole")
                .to_bytes();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
        .await
        .expect("the edge must reply in time")
    }

    /// Whether the edge has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    Call::new(addr, Method::GET, path).send().await
}

/// `POST path` with `body` on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Reply {
    Call::new(addr, Method::POST, path).body(body).send().await
}

// === raw sockets ===

/// Sends `bytes` as they are and reads until the edge closes the connection.
/// Hand-written requests should say `Connection: close`.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the edge");
    stream.write_all(bytes).await.expect("write the request");
    read_to_close(&mut stream).await
}

/// Reads until the peer closes, within [`STEP`].
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = timeout(STEP, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match read {
        Err(_) => panic!("the edge did not close the connection in time; got so far: {text:?}"),
        Ok(Err(e)) => panic!("reading from the edge failed ({e}); got so far: {text:?}"),
        Ok(Ok(())) => text,
    }
}

/// Reads exactly one reply (framed by Content-Length or chunked encoding) from a
/// connection that may stay open, within [`STEP`]. `buf` keeps what arrived after it.
pub async fn read_one_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> RawReply {
    timeout(STEP, async {
        // Bounded by STEP; every round reads at least one byte or fails.
        loop {
            if let Some((reply, used)) = RawReply::parse_framed(buf) {
                buf.drain(..used);
                return reply;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await.expect("read from the edge");
            assert!(
                n > 0,
                "the edge closed before a complete reply: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a complete reply in time")
}

/// A reply parsed from raw text.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Names lowercased, in received order.
    pub headers: Vec<(String, String)>,
    /// After chunked decoding if the reply was chunked; otherwise everything after the head.
    pub body: Vec<u8>,
}

/// Parsed headers as owned (lower-cased name, value) pairs.
fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

impl RawReply {
    /// Parses the first reply in `raw`; the body is everything after the head.
    pub fn parse(raw: &str) -> RawReply {
        let bytes = raw.as_bytes();
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut slots);
        let head_len = match res.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("not a complete reply head ({other:?}): {raw:?}"),
        };
        let headers = owned_headers(res.headers);
        let status = res.code.expect("a status code");
        let rest = &bytes[head_len..];
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        RawReply {
            status,
            headers,
            body,
        }
    }

    /// Parses one reply from the front of `bytes` if it is complete; returns it
    /// with the number of bytes it took. Only Content-Length framing and chunked
    /// encoding are understood (a reply without either has an empty body).
    pub fn parse_framed(bytes: &[u8]) -> Option<(RawReply, usize)> {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut slots);
        let head_len = match res.parse(bytes).expect("a valid reply head") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return None,
        };
        let headers = owned_headers(res.headers);
        let status = res.code.expect("a status code");
        let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let rest = &bytes[head_len..];
        let (body, used) = if find("transfer-encoding").is_some() {
            let end = rest.windows(5).position(|w| w == b"0\r\n\r\n")? + 5;
            (dechunk(&rest[..end]), end)
        } else {
            let len: usize =
                find("content-length").map_or(0, |v| v.parse().expect("numeric content-length"));
            if rest.len() < len {
                return None;
            }
            (rest[..len].to_vec(), len)
        };
        let reply = RawReply {
            status,
            headers,
            body,
        };
        Some((reply, head_len + used))
    }

    /// The first value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as the mock's JSON echo.
    pub fn echo(&self) -> Echo {
        Echo::parse(&self.body)
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // Bounded by the input: every round consumes at least a size line.
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&rest[..line_end]).expect("ASCII chunk size");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        let chunk = rest.get(..size).expect("a whole chunk");
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).expect("a chunk ends with CRLF");
    }
}

// === byte-exact replies ===

/// A reply read to the connection's close, body as bytes (de-chunked).
pub struct BytesReply {
    pub status: u16,
    /// Names lowercased, in received order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl BytesReply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` with `Connection: close` and extra header lines
/// (each ending in CRLF), and reads the reply to the close, within 10 s.
pub async fn fetch(addr: SocketAddr, method: &str, path: &str, extra: &str) -> BytesReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the edge");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: erp.example.com\r\nConnection: close\r\n{extra}\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("reply in time")
        .expect("read reply");
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "bad reply head ({other:?}): {:?}",
            String::from_utf8_lossy(&raw)
        ),
    };
    let headers = owned_headers(parsed.headers);
    let status = parsed.code.expect("status");
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let rest = &raw[head_len..];
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    BytesReply {
        status,
        headers,
        body,
    }
}

// === the mock's echo ===

/// The JSON a mock node answers to an ordinary request.
#[derive(Debug, Clone)]
pub struct Echo(pub serde_json::Value);

impl Echo {
    /// Parses an echo body.
    pub fn parse(body: &[u8]) -> Echo {
        Echo(serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "body must be the mock's JSON echo ({e}): {}",
                String::from_utf8_lossy(body)
            )
        }))
    }

    /// The node that answered.
    pub fn node(&self) -> &str {
        self.0["node"].as_str().expect("echo names its node")
    }

    /// Every value the node received for a header (name in lowercase).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.0["headers"]
            .as_array()
            .expect("echo lists headers")
            .iter()
            .filter(|pair| pair[0].as_str() == Some(name))
            .map(|pair| pair[1].as_str().expect("header value is text"))
            .collect()
    }

    /// The one value of a header; panics if it came more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "{name} reached the node {} times",
            all.len()
        );
        all.first().copied()
    }

    /// Every header name the node received.
    pub fn header_names(&self) -> Vec<&str> {
        self.0["headers"]
            .as_array()
            .expect("echo lists headers")
            .iter()
            .map(|pair| pair[0].as_str().expect("header name is text"))
            .collect()
    }

    pub fn method(&self) -> &str {
        self.0["method"].as_str().expect("echo has a method")
    }

    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().expect("echo has body_len")
    }

    pub fn body_sha256(&self) -> &str {
        self.0["body_sha256"]
            .as_str()
            .expect("echo has body_sha256")
    }

    /// What Odoo with `proxy_mode = True` would believe: remote_addr, scheme, host.
    pub fn odoo(&self) -> &serde_json::Value {
        &self.0["odoo"]
    }
}

/// Lowercase hex SHA-256, as the echo reports it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

// === websockets ===

/// A websocket client over a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a websocket through the edge at `path`, with the `Origin` Odoo requires.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> (Ws, WsResponse) {
    ws_connect_with(addr, path, &[]).await
}

/// Like [`ws_connect`], with some handshake headers set (replaced) as a browser would.
pub async fn ws_connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (Ws, WsResponse) {
    let stream = TcpStream::connect(addr).await.expect("connect to the edge");
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a valid websocket request");
    let origin = HeaderValue::from_str(&format!("http://{addr}")).expect("a valid Origin");
    request.headers_mut().insert("Origin", origin);
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).expect("a valid header value");
        request.headers_mut().insert(*name, value);
    }
    timeout(STEP, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("websocket handshake in time")
        .expect("websocket handshake must succeed")
}

/// Sends `text` and returns the node's JSON answer (`{"node", "echo"}`).
pub async fn ws_echo(ws: &mut Ws, text: &str) -> serde_json::Value {
    ws.send(Message::text(text))
        .await
        .expect("send a text frame");
    timeout(STEP, async {
        // Bounded by STEP; control frames (pings) are skipped.
        loop {
            let message = ws
                .next()
                .await
                .expect("the tunnel must stay open")
                .expect("a valid frame");
            if let Message::Text(reply) = message {
                return serde_json::from_str(reply.as_str()).expect("the echo is JSON");
            }
        }
    })
    .await
    .expect("an echo in time")
}

// === waiting ===

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
