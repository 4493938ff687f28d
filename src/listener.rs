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

use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use crate::config::{ListenerConfig, Timeouts};
use crate::proxy::{self, ClientInfo, Edge, ReplyBody};
use crate::sendfile::{self, Regions};

/// A listener address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listeners[{index}].address = {address:?}: cannot listen: {source}")]
pub struct BindError {
    pub index: usize,
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
                index,
                address: l.address,
                source,
            })
        })
        .collect()
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

/// Accepts connections until the graceful stop, serving each on its own
/// task registered with the edge's lifecycle.
pub async fn serve(listener: TcpListener, edge: Arc<Edge>) {
    let shutdown = edge.lifecycle.graceful.clone();
    // Past the cap, connections wait in the kernel's listen backlog instead of
    // each taking memory here.
    let slots = Arc::new(tokio::sync::Semaphore::new(edge.limits.max_connections));
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
        let edge = edge.clone();
        edge.lifecycle.tasks.clone().spawn(async move {
            serve_connection(stream, peer, local, edge).await;
            drop(slot);
        });
    }
    info!(address = %local, "listener closed");
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, local: SocketAddr, edge: Arc<Edge>) {
    let graceful = edge.lifecycle.graceful.clone();
    let hard = edge.lifecycle.hard.clone();
    let state = Arc::new(ConnState::default());
    let regions = Regions::default();
    let io = ClientIo::new(stream, &edge.timeouts, state.clone(), regions.clone());
    let max_buf = edge.limits.max_header_bytes.max(8192);
    let client = ClientInfo::new(peer, local, false, &edge.forwarding);
    let service = service_fn(move |req: Request<Incoming>| {
        let edge = edge.clone();
        let guard = ActiveGuard::new(state.clone());
        let client = client.clone();
        let regions = regions.clone();
        async move {
            let response = proxy::handle(&edge, req, &client).await;
            let response = response.map(|body| match body {
                ReplyBody::File(range) => ReplyBody::File(range.zero_copy(regions)),
                body => body,
            });
            Ok::<_, std::convert::Infallible>(response.map(|body| GuardedBody { body, guard }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(max_buf)
        .header_read_timeout(None);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn => r,
                _ = hard.cancelled() => {
                    debug!(%peer, "connection dropped at the shutdown deadline");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, cause = %e, "client connection ended with an error");
    }
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

/// A response body that keeps its request counted as active until it is sent.
struct GuardedBody<B> {
    body: B,
    guard: ActiveGuard,
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let _ = &self.guard;
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// === impl ClientIo ===

/// The client socket, with the between-requests timeouts described at the top.
pub struct ClientIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    keepalive: Duration,
    header: Duration,
    send: Duration,
    accepted: Instant,
    /// First byte of a head that is not complete yet, and the head count then.
    head_started: Option<(Instant, usize)>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// File regions behind placeholder bytes hyper is asked to write.
    regions: Regions,
}

impl ClientIo {
    fn new(
        inner: TcpStream,
        timeouts: &Timeouts,
        state: Arc<ConnState>,
        regions: Regions,
    ) -> ClientIo {
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
    pub fn into_inner(self) -> TcpStream {
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

impl ClientIo {
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

impl AsyncRead for ClientIo {
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

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = match sendfile::placeholder_offset(data) {
            Some(at) => sendfile::poll_send(&self.regions, &self.inner, cx, at, data.len()),
            None => Pin::new(&mut self.inner).poll_write(cx, data),
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
        let polled = match placeholder {
            Some((0, at)) => sendfile::poll_send(&self.regions, &self.inner, cx, at, bufs[0].len()),
            Some((k, _)) => sendfile::poll_send_head(&self.inner, cx, &bufs[..k]),
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        };
        self.bound_stall(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
