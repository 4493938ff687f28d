//! Connections to Odoo nodes: connect, send one request, and keep the
//! connection for another only when the node offers keep-alive.
//!
//! A prefork Odoo answers HTTP/1.0 with `Connection: close`, so most requests
//! open a fresh connection; this module keeps that path short (no resolver
//! call for IP addresses, no address queries, no `shutdown` before `close`).
//! A threaded Odoo keeps connections alive; those are pooled per node.
//!
//! The split between [`SendError::Connect`] and [`SendError::Sent`] is what
//! makes retries safe: a request is known not to have reached the node only
//! when no connection could be made, or when hyper hands the request back
//! unsent from a pooled connection that turned out closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tracing::debug;

use crate::proxy::UpstreamBody;

/// Kept-alive connections pooled per node.
const MAX_IDLE: usize = 16;

/// A pooled connection unused for this long is closed rather than reused: a
/// threaded Odoo holds a thread (and an `ODOO_MAX_HTTP_THREADS` slot) per open
/// connection, so idle ones must not pile up.
const IDLE_FOR: Duration = Duration::from_secs(15);

/// Why a request got no reply head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: the node has seen nothing.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The request was (or may have been) written: the node may have seen it.
    #[error("{0}")]
    Sent(hyper::Error),
}

/// Where a node is and its idle connections.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` as configured.
    address: String,
    /// Parsed once when the address is an IP literal; names are resolved per connect.
    ip: Option<SocketAddr>,
    idle: Mutex<Vec<(SendRequest<UpstreamBody>, Instant)>>,
}

impl Endpoint {
    pub fn new(address: &str) -> Endpoint {
        Endpoint {
            address: address.to_owned(),
            ip: address.parse().ok(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens a TCP connection, within `limit`.
    pub async fn connect(&self, limit: Duration) -> io::Result<TcpStream> {
        let connect = async {
            match self.ip {
                Some(addr) => connect_ip(addr).await,
                None => {
                    let mut last = None;
                    for addr in tokio::net::lookup_host(self.address.as_str()).await? {
                        match connect_ip(addr).await {
                            Ok(stream) => return Ok(stream),
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "name resolves to no address")
                    }))
                }
            }
        };
        match tokio::time::timeout(limit, connect).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )),
        }
    }

    /// Sends one request and returns the reply head; the body streams after,
    /// while the returned [`Driver`] (or the task it hands over to) runs the
    /// connection.
    pub async fn send(
        &self,
        mut request: Request<UpstreamBody>,
        connect_limit: Duration,
    ) -> Result<(Response<Incoming>, Driver), SendError> {
        // A pooled connection first; one that turns out closed hands the
        // request back unsent, and the next one is tried.
        while let Some(mut sender) = self.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(sender, &response);
                    return Ok((response, Driver(None)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        debug!(node = %self.address, "pooled connection closed; request not sent");
                        request = unsent;
                    }
                    None => return Err(SendError::Sent(e.into_error())),
                },
            }
        }
        let stream = self
            .connect(connect_limit)
            .await
            .map_err(SendError::Connect)?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake::<_, UpstreamBody>(TokioIo::new(NodeIo(stream)))
            .await
            .map_err(SendError::Sent)?;
        // The connection is driven from this task while the caller reads a
        // small reply: no task spawned, no cross-task wake-up per request.
        let mut driver = Driver(Some(conn));
        let response = driver
            .drive(sender.send_request(request))
            .await
            .map_err(SendError::Sent)?;
        self.checkin(sender, &response);
        Ok((response, driver))
    }

    /// An idle connection that can take a request now, if any. Closed ones are
    /// dropped; busy ones (still sending a previous reply) stay.
    fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.is_empty() {
            return None;
        }
        let now = Instant::now();
        // Dropping a sender whose connection is idle closes that connection.
        idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < IDLE_FOR);
        let ready = idle.iter().position(|(s, _)| s.is_ready())?;
        Some(idle.swap_remove(ready).0)
    }

    /// Keeps the connection for another request if the node offered keep-alive.
    fn checkin(&self, sender: SendRequest<UpstreamBody>, response: &Response<Incoming>) {
        let close = response.version() != Version::HTTP_11
            || response
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if close || sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }
}

type Conn = http1::Connection<TokioIo<NodeIo>, UpstreamBody>;

/// A node connection not yet handed to a task of its own.
///
/// [`Driver::drive`] runs it alongside the caller's future. Dropped while the
/// connection still has work (a reply body still streaming, a kept-alive
/// connection), it spawns a task that finishes it.
pub struct Driver(Option<Conn>);

impl Driver {
    /// Runs `fut` while driving the connection, which is dropped once it ends.
    pub async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            self.poll_conn(cx);
            let out = ready!(fut.as_mut().poll(cx));
            // The reply may have just ended: let the connection close now
            // rather than in a task spawned for that alone.
            self.poll_conn(cx);
            Poll::Ready(out)
        })
        .await
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.0.as_mut()
            && let Poll::Ready(result) = Pin::new(conn).poll(cx)
        {
            if let Err(e) = result {
                debug!(cause = %e, "node connection ended with an error");
            }
            self.0 = None;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(cause = %e, "node connection ended with an error");
                }
            });
        }
    }
}

async fn connect_ip(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.connect(addr).await
}

/// The socket to a node. Closing skips `shutdown(2)`: hyper calls it before
/// dropping a finished connection, and a prefork Odoo closes its side anyway,
/// so it is one system call per request for nothing.
struct NodeIo(TcpStream);

impl AsyncRead for NodeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
