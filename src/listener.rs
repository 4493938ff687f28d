//! Client side: bind, accept, serve HTTP/1.1 with upgrades, and the
//! per-connection timeouts hyper does not give us.
//!
//! hyper's own header-read timer also runs while a kept-alive connection sits
//! idle, so one value cannot serve as both nginx's `client_header_timeout`
//! and `keepalive_timeout`. [`ClientIo`] wraps the socket instead: while no
//! request is being served it allows `client_keepalive` of silence, then
//! `client_header` from the first byte of a head to its end; a write that
//! stalls longer than `client_send` fails. While a request is in flight (the
//! node may take 20 minutes on a report) it imposes nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::task::AtomicWaker;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ListenerConfig, Redirect, Timeouts};
use crate::metrics::Kind;
use crate::proxy::{self, ClientInfo, Current, ReplyBody};
use crate::request_log::{RequestLog, X_REQUEST_ID};
use crate::sendfile::{self, Regions};

/// A listener address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("{what} = {address:?}: cannot listen: {source}")]
pub struct BindError {
    /// The config key, such as `listeners[0].address`.
    pub what: String,
    pub address: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Binds every listener, or says which one failed.
pub fn bind(listeners: &[ListenerConfig]) -> Result<Vec<TcpListener>, BindError> {
    listeners
        .iter()
        .enumerate()
        .map(|(index, l)| {
            bind_one(l.address).map_err(|source| BindError {
                what: format!("listeners[{index}].address"),
                address: l.address,
                source,
            })
        })
        .collect()
}

/// Binds the admin listener, or says it failed.
pub fn bind_admin(address: SocketAddr) -> Result<TcpListener, BindError> {
    bind_one(address).map_err(|source| BindError {
        what: "admin.address".into(),
        address,
        source,
    })
}

fn bind_one(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// What a listener does besides plain HTTP/1.1: terminate TLS, or send
/// browsers to HTTPS.
#[derive(Clone, Default)]
pub struct Mode {
    pub tls: Option<Tls>,
    pub redirect: Option<Arc<Redirect>>,
}

/// A TLS listener's settings; the certificates can be swapped while running.
#[derive(Clone)]
pub struct Tls {
    /// New handshakes take the current value; open connections keep theirs.
    pub server: Arc<ArcSwap<rustls::ServerConfig>>,
    pub handshake_timeout: Duration,
    /// `Strict-Transport-Security`, added to replies that lack one.
    pub hsts: Option<HeaderValue>,
}

impl Mode {
    /// The mode a listener's config asks for.
    pub fn new(config: &ListenerConfig) -> Mode {
        Mode {
            tls: config.tls.as_ref().map(|tls| Tls {
                server: Arc::new(ArcSwap::new(tls.server.clone())),
                handshake_timeout: tls.handshake_timeout,
                hsts: tls.hsts.clone(),
            }),
            redirect: config.redirect.clone().map(Arc::new),
        }
    }
}

/// Accepts connections until the graceful stop, serving each on its own
/// task registered with the edge's lifecycle.
pub async fn serve(listener: TcpListener, current: Current, mode: Mode) {
    // Only what outlives a reload is kept: holding the edge itself would keep
    // its generation (pools, removed nodes, static cache) alive for good.
    let (lifecycle, max_connections) = {
        let edge = current.load();
        (edge.lifecycle.clone(), edge.limits.max_connections)
    };
    let shutdown = lifecycle.graceful.clone();
    // Past the cap, connections wait in the kernel's listen backlog instead of
    // each taking memory here.
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; kept for completeness
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let current = current.clone();
        let mode = mode.clone();
        lifecycle.tasks.spawn(async move {
            let conn = Conn {
                peer,
                local,
                current,
                mode,
            };
            match conn.mode.tls.clone() {
                None => conn.serve(stream, Protocol::Http1).await,
                // Boxed: a plain connection's task is then not sized for
                // rustls' state and the HTTP/2 connection it never uses.
                Some(tls) => Box::pin(conn.serve_tls(stream, tls)).await,
            }
            drop(slot);
        });
    }
    info!(address = %local, "listener closed");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// One accepted client connection.
struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
    /// Each request takes the edge current when it starts.
    current: Current,
    mode: Mode,
}

impl Conn {
    /// The TLS handshake, bounded in time and cut short by shutdown; then
    /// HTTP/2 or HTTP/1.1 as ALPN chose.
    async fn serve_tls(self, stream: TcpStream, tls: Tls) {
        let peer = self.peer;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.load_full());
        let shared = self.current.load().shared.clone();
        let graceful = shared.lifecycle.graceful.clone();
        let handshake = tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream));
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => {
                    shared.metrics.tls_handshake("ok");
                    stream
                }
                Ok(Err(e)) => {
                    shared.metrics.tls_handshake("failed");
                    // A client that hangs up mid-handshake (probes, scanners,
                    // benchmarks) is routine; anything else is worth a line.
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::BrokenPipe
                    ) {
                        debug!(%peer, cause = %e, "client left during the TLS handshake");
                    } else {
                        info!(%peer, cause = %e, "TLS handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    shared.metrics.tls_handshake("timeout");
                    info!(%peer, after = ?tls.handshake_timeout, "TLS handshake not complete in time");
                    return;
                }
            },
            _ = graceful.cancelled() => return,
        };
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        self.serve(stream, protocol).await;
    }

    async fn serve<S: ClientSocket>(self, stream: S, protocol: Protocol) {
        let Conn {
            peer,
            local,
            current,
            mode,
        } = self;
        // Connection-wide settings come from the edge current when it opened.
        let edge = current.load_full();
        let graceful = edge.lifecycle.graceful.clone();
        let hard = edge.lifecycle.hard.clone();
        let state = Arc::new(ConnState::default());
        // Zero-copy file replies only where the edge writes to the socket itself.
        let regions = stream.tcp().map(|_| Regions::default());
        let io = ClientIo::new(stream, &edge.timeouts, state.clone(), regions.clone());
        let max_buf = edge.limits.max_header_bytes.max(8192);
        let hsts = mode.tls.as_ref().and_then(|t| t.hsts.clone());
        let client = ClientInfo::new(peer, local, mode.tls.is_some(), &edge.forwarding);
        let redirect = mode.redirect;
        drop(edge);
        // For the log line of a head hyper refuses before the service sees it.
        let (log_current, log_client) = (current.clone(), client.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            let edge = current.load_full();
            let guard = ActiveGuard::new(state.clone());
            // Trust as the edge serving this request says, not as it was
            // when the connection opened.
            let client = client.with_forwarding(&edge.forwarding);
            let regions = regions.clone();
            let hsts = hsts.clone();
            let redirect = redirect.clone();
            async move {
                host_from_authority(&mut req);
                // Logged once, when dropped: after the reply, or when the client leaves.
                let mut log = RequestLog::start(edge.shared.clone(), &mut req, &client);
                let mut response = match redirect.as_deref() {
                    Some(r)
                        if !r
                            .except
                            .iter()
                            .any(|p| req.uri().path().starts_with(p.as_str())) =>
                    {
                        log.outcome.kind = Kind::Redirect;
                        to_https(&req, r)
                    }
                    _ => proxy::handle(&edge, req, &client, &mut log.outcome).await,
                };
                log.status = Some(response.status().as_u16());
                response
                    .headers_mut()
                    .insert(X_REQUEST_ID.clone(), log.request_id.clone());
                let mut response = response.map(|body| match (body, &regions) {
                    (ReplyBody::File(range), Some(regions)) => {
                        ReplyBody::File(range.zero_copy(regions.clone()))
                    }
                    (body, _) => body,
                });
                if let Some(hsts) = hsts {
                    response
                        .headers_mut()
                        .entry(header::STRICT_TRANSPORT_SECURITY)
                        .or_insert(hsts);
                }
                Ok::<_, std::convert::Infallible>(response.map(|body| GuardedBody {
                    body,
                    guard,
                    log,
                }))
            }
        });
        let result = match protocol {
            Protocol::Http1 => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .keep_alive(true)
                    .max_buf_size(max_buf)
                    .header_read_timeout(None);
                let conn = builder
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                tokio::pin!(conn);
                let stop = |c: Pin<&mut _>| {
                    hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(c)
                };
                until_stopped(conn, stop, &graceful, &hard, peer).await
            }
            Protocol::Http2 => {
                // hyper's HTTP/2 defaults keep their flood protections (rapid
                // reset, pending-accept and error-reset stream limits); the
                // header list is held to the HTTP/1.1 head limit.
                let mut builder =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .max_concurrent_streams(MAX_STREAMS)
                    .max_header_list_size(u32::try_from(max_buf).unwrap_or(u32::MAX));
                let conn = builder.serve_connection(TokioIo::new(io), service);
                tokio::pin!(conn);
                let stop =
                    |c: Pin<&mut _>| hyper::server::conn::http2::Connection::graceful_shutdown(c);
                until_stopped(conn, stop, &graceful, &hard, peer).await
            }
        };
        if let Err(e) = result {
            if let Some(status) = refused_head_status(&e) {
                // hyper answered it itself; it gets its log line all the same.
                let shared = log_current.load().shared.clone();
                drop(RequestLog::rejected(shared, &log_client, status));
            }
            debug!(%peer, cause = %e, "client connection ended with an error");
        }
    }
}

/// Serves a connection to its end: asked to finish its requests at the
/// graceful stop, dropped at the hard one.
async fn until_stopped<C, E>(
    mut conn: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    graceful: &CancellationToken,
    hard: &CancellationToken,
    peer: SocketAddr,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::select! {
        r = conn.as_mut() => r,
        _ = graceful.cancelled() => {
            graceful_shutdown(conn.as_mut());
            tokio::select! {
                r = conn => r,
                _ = hard.cancelled() => {
                    debug!(%peer, "connection dropped at the shutdown deadline");
                    Ok(())
                }
            }
        }
    }
}

/// The status hyper answered a request head it could not parse with (see
/// hyper's `Server::on_error`); `None` when it sent nothing.
fn refused_head_status(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        // The one public clue that tells 414 (the URI) from 431 (the head).
        let uri = e.to_string().to_ascii_lowercase().contains("uri");
        Some(if uri { 414 } else { 431 })
    } else if e.is_parse() && !e.is_parse_version_h2() && !e.is_parse_status() {
        Some(400)
    } else {
        None
    }
}

/// Concurrent HTTP/2 streams per client connection (nginx: 128).
const MAX_STREAMS: u32 = 128;

/// HTTP/2 carries the host in `:authority`; an HTTP/1.1 node needs `Host`.
fn host_from_authority(req: &mut Request<Incoming>) {
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, host);
    }
}

/// The redirect a plain listener answers with: same host, same path and query.
fn to_https(req: &Request<Incoming>, redirect: &Redirect) -> Response<ReplyBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let Some(host) = host else {
        return proxy::error_response(StatusCode::BAD_REQUEST);
    };
    let port = match redirect.https_port {
        Some(port) if port != 443 => format!(":{port}"),
        _ => String::new(),
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{}{port}{target}", host.host());
    let Ok(value) = HeaderValue::from_str(&location) else {
        return proxy::error_response(StatusCode::BAD_REQUEST);
    };
    let mut response = Response::new(ReplyBody::empty());
    *response.status_mut() = redirect.status;
    response.headers_mut().insert(header::LOCATION, value);
    response
}

// === impl ConnState ===

/// What the socket wrapper needs to know about the requests on its connection.
#[derive(Default)]
struct ConnState {
    /// Requests whose response body has not been fully sent yet.
    active: AtomicUsize,
    /// Request heads parsed so far: tells the reader a head it saw begin is done.
    heads: AtomicUsize,
    /// When the last response finished; `None` before the first.
    idle_since: Mutex<Option<Instant>>,
    /// The reader, woken when the connection turns idle so its timer starts.
    reader: AtomicWaker,
    /// The reader is waiting with no timer armed (a request was in flight).
    reader_unarmed: AtomicBool,
}

/// Marks a request in flight for as long as its response body lives.
struct ActiveGuard(Arc<ConnState>);

impl ActiveGuard {
    fn new(state: Arc<ConnState>) -> ActiveGuard {
        state.heads.fetch_add(1, Ordering::AcqRel);
        state.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(state)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Ok(mut since) = self.0.idle_since.lock() {
            *since = Some(Instant::now());
        }
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        // Only a reader left waiting without a timer needs a wake-up; waking it
        // on every request would poll the connection task once more each time.
        if self.0.reader_unarmed.swap(false, Ordering::SeqCst) {
            self.0.reader.wake();
        }
    }
}

/// A response body that keeps its request counted as active until it is
/// sent, and counts the bytes its request's log line reports.
struct GuardedBody<B> {
    body: B,
    guard: ActiveGuard,
    log: RequestLog,
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let _ = &self.guard;
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.log.bytes += bytes::Buf::remaining(data) as u64;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// === impl ClientIo ===

/// A client connection's byte stream: the TCP socket, or TLS over it.
pub trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket itself when the edge writes to it directly (not TLS):
    /// file replies then go out with sendfile(2).
    fn tcp(&self) -> Option<&TcpStream>;
}

impl ClientSocket for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ClientSocket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

/// The client socket, with the between-requests timeouts described at the top.
pub struct ClientIo<S = TcpStream> {
    inner: S,
    state: Arc<ConnState>,
    keepalive: Duration,
    header: Duration,
    send: Duration,
    accepted: Instant,
    /// First byte of a head that is not complete yet, and the head count then.
    head_started: Option<(Instant, usize)>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// File regions behind placeholder bytes hyper is asked to write; only
    /// on plain TCP.
    regions: Option<Regions>,
}

impl<S: ClientSocket> ClientIo<S> {
    fn new(
        inner: S,
        timeouts: &Timeouts,
        state: Arc<ConnState>,
        regions: Option<Regions>,
    ) -> ClientIo<S> {
        let now = Instant::now();
        ClientIo {
            inner,
            state,
            keepalive: timeouts.client_keepalive,
            header: timeouts.client_header,
            send: timeouts.client_send,
            accepted: now,
            head_started: None,
            read_timer: Box::pin(tokio::time::sleep_until(now + timeouts.client_header)),
            write_timer: None,
            regions,
        }
    }

    /// The socket itself, for tunnels that bypass HTTP after an upgrade.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// When a read that is still waiting must give up; `None` while a request is served.
    fn read_deadline(&mut self) -> Option<Instant> {
        if self.state.active.load(Ordering::SeqCst) > 0 {
            self.head_started = None;
            return None;
        }
        match self.head_started {
            // That head was parsed and served since: the connection is idle again.
            Some((_, heads)) if heads != self.state.heads.load(Ordering::Acquire) => {
                self.head_started = None;
            }
            Some((start, _)) => return Some(start + self.header),
            None => {}
        }
        let idle_since = self.state.idle_since.lock().ok().and_then(|s| *s);
        Some(match idle_since {
            // A fresh connection must send its first head in `client_header`.
            None => self.accepted + self.header.min(self.keepalive),
            Some(since) => since + self.keepalive,
        })
    }
}

impl<S> ClientIo<S> {
    /// Fails a write that has been pending longer than `client_send`.
    fn bound_stall(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if polled.is_ready() {
            self.write_timer = None;
            return polled;
        }
        let send = self.send;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<S: ClientSocket> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.state.active.load(Ordering::Acquire) == 0 {
                    let heads = this.state.heads.load(Ordering::Acquire);
                    if this.head_started.is_none_or(|(_, h)| h != heads) {
                        this.head_started = Some((Instant::now(), heads));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.state.reader.register(cx.waker());
                // Raised before `active` is read (both SeqCst), so a request that
                // ends in between always sees it and wakes this reader.
                this.state.reader_unarmed.store(true, Ordering::SeqCst);
                let Some(deadline) = this.read_deadline() else {
                    return Poll::Pending;
                };
                // A timer is armed: no wake-up is needed when a request ends
                // (a new request can only start after this reader reads a head).
                this.state.reader_unarmed.store(false, Ordering::SeqCst);
                // Deadlines mostly move later (each request pushes the idle
                // start on). Re-arming the timer each time costs a trip through
                // tokio's timer wheel per request, so a later deadline is only
                // taken up when the armed one fires.
                if deadline < this.read_timer.deadline() || this.read_timer.is_elapsed() {
                    this.read_timer.as_mut().reset(deadline);
                }
                loop {
                    match this.read_timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if Instant::now() >= deadline => {
                            return Poll::Ready(Err(timed_out("client idle or slow head")));
                        }
                        // The armed deadline was an earlier one: re-arm and wait on.
                        Poll::Ready(()) => this.read_timer.as_mut().reset(deadline),
                    }
                }
            }
        }
    }
}

impl<S: ClientSocket> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = match (
            sendfile::placeholder_offset(data),
            this.inner.tcp(),
            &this.regions,
        ) {
            (Some(at), Some(tcp), Some(regions)) => {
                sendfile::poll_send(regions, tcp, cx, at, data.len())
            }
            (Some(_), _, _) => Poll::Ready(Err(io::Error::other(
                "file placeholder on a TLS connection",
            ))),
            (None, _, _) => Pin::new(&mut this.inner).poll_write(cx, data),
        };
        self.bound_stall(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Bytes before the first placeholder go out as they are; a placeholder
        // at the front goes out as the file it stands for.
        let bufs = match bufs.iter().position(|b| !b.is_empty()) {
            Some(first) => &bufs[first..],
            None => &[],
        };
        let placeholder = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| sendfile::placeholder_offset(b).map(|at| (i, at)));
        let this = &mut *self;
        let polled = match (placeholder, this.inner.tcp(), &this.regions) {
            (None, _, _) => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            (Some((0, at)), Some(tcp), Some(regions)) => {
                sendfile::poll_send(regions, tcp, cx, at, bufs[0].len())
            }
            (Some((k, _)), Some(tcp), Some(_)) => sendfile::poll_send_head(tcp, cx, &bufs[..k]),
            (Some(_), _, _) => Poll::Ready(Err(io::Error::other(
                "file placeholder on a TLS connection",
            ))),
        };
        self.bound_stall(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
