//! Byte tunnel for upgraded connections, built to cost little while idle, and
//! closing its websocket cleanly when the edge stops.
//!
//! An Odoo estate keeps one websocket per open browser tab, mostly idle. A
//! generic copy holds two 8 KiB buffers per tunnel forever; here a tunnel owns
//! no buffer at all while idle: it waits for readiness, reads into a
//! per-thread scratch buffer and writes straight on, all within one poll.
//! Only bytes the other side cannot take at once are copied into a buffer
//! owned by the tunnel, freed as soon as they are written. The same loop
//! serves a plain client socket, a TLS one, and any other upgraded stream.
//!
//! # Shutdown
//!
//! Each direction follows the websocket frames it carries ([`frames`]: a
//! few integers per direction). At the graceful stop:
//!
//! 1. A direction in the middle of a frame forwards up to the frame's end,
//!    and nothing after it.
//! 2. Between frames, it stops forwarding and sends its destination a close
//!    frame with 1001 (Going Away): unmasked to the client, masked to the
//!    node (RFC 6455 §5.3). A destination that already got a close frame
//!    through the tunnel gets none; one whose stream is not a frame sequence
//!    gets none either.
//! 3. What either side sends from then on is read and dropped, watching for
//!    its own close frame (the reply) or its end of stream.
//! 4. Once both sides have answered, or after [`CLOSE_LIMIT`] (a frame that
//!    never ends, a peer that never answers), or at the hard stop, both
//!    sockets are closed.
//!
//! So a tunnel outlives the graceful stop by [`CLOSE_LIMIT`] at most: idle
//! websockets never hold the process up until the shutdown deadline.

mod frames;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::frames::Frames;
use crate::listener::ClientIo;

const SCRATCH: usize = 16 * 1024;

/// Longest a tunnel takes to close after the graceful stop: to finish the
/// frames in flight, send the closes and read the replies.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(2);

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Copies both ways until both sides close, one fails, nothing moves for
/// `idle`, or the edge stops: at `graceful` the websocket is closed as the
/// module docs say, at `hard` the sockets are dropped.
pub async fn splice(
    client: Upgraded,
    upstream: Upgraded,
    idle: Duration,
    graceful: CancellationToken,
    hard: CancellationToken,
) {
    // The upstream side is always the plain socket `websocket::handshake` made.
    let (upstream, upstream_pre) = match upstream.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (parts.io.into_inner(), parts.read_buf),
        Err(_) => {
            debug!("tunnel: upstream side is not a plain socket");
            return;
        }
    };
    let stop = (&graceful, &hard);
    // The client socket without `ClientIo`: its timeouts are for requests,
    // and a tunnel has its own (`idle`). Only the plain tunnel is kept inline:
    // this task lives as long as the websocket and is sized for its largest
    // arm, and a TLS stream held inline (rustls' connection state) would
    // almost double every plain idle websocket's memory (9.9 KiB, not 6.5).
    // TLS and other streams pay for one box each instead.
    let result = match client.downcast::<TokioIo<ClientIo<TcpStream>>>() {
        Ok(parts) => {
            let client = parts.io.into_inner().into_inner();
            let tunnel = Tunnel::new(client, parts.read_buf, upstream, upstream_pre);
            tunnel.run(idle, stop).await
        }
        Err(client) => match client.downcast::<TokioIo<ClientIo<TlsStream<TcpStream>>>>() {
            Ok(parts) => {
                let client = parts.io.into_inner().into_inner();
                let tunnel = Tunnel::new(client, parts.read_buf, upstream, upstream_pre);
                Box::pin(tunnel.run(idle, stop)).await
            }
            Err(client) => {
                let client = TokioIo::new(client);
                let tunnel = Tunnel::new(client, Bytes::new(), upstream, upstream_pre);
                Box::pin(tunnel.run(idle, stop)).await
            }
        },
    };
    if let Err(e) = result {
        debug!(cause = %e, "tunnel ended with an error");
    }
}

// === impl Tunnel ===

/// Both sockets and both directions.
struct Tunnel<C, U> {
    client: C,
    upstream: U,
    /// Client to node.
    up: Direction,
    /// Node to client.
    down: Direction,
}

/// What one round of polling both directions did.
enum Step {
    /// Bytes moved (or a state changed): poll again.
    Moved,
    /// Both directions are over.
    Done,
}

impl<C, U> Tunnel<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    /// `client_pre` and `upstream_pre` are bytes each side sent after the
    /// handshake that HTTP parsing already read.
    fn new(client: C, client_pre: Bytes, upstream: U, upstream_pre: Bytes) -> Self {
        Tunnel {
            client,
            upstream,
            up: Direction::new(client_pre, true),
            down: Direction::new(upstream_pre, false),
        }
    }

    async fn run(
        mut self,
        idle: Duration,
        (graceful, hard): (&CancellationToken, &CancellationToken),
    ) -> io::Result<()> {
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        let stopped = graceful.cancelled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                step = poll_fn(|cx| self.poll_step(cx)) => match step? {
                    Step::Moved => sleep.as_mut().reset(Instant::now() + idle),
                    Step::Done => return Ok(()),
                },
                _ = &mut sleep => {
                    debug!(?idle, "tunnel idle; closing");
                    return Ok(());
                }
                _ = &mut stopped => break,
            }
        }
        debug!("tunnel closing for shutdown");
        // Boxed: the closing state is only ever needed once, and kept inline
        // it would make every idle tunnel's task larger.
        Box::pin(self.close(hard)).await
    }

    /// The graceful stop, as the module docs describe it.
    async fn close(&mut self, hard: &CancellationToken) -> io::Result<()> {
        self.up.stop();
        self.down.stop();
        let close = async {
            // Bounded by CLOSE_LIMIT below; each round moves bytes or ends.
            while let Step::Moved = poll_fn(|cx| self.poll_step(cx)).await? {}
            // Best effort: a TLS client gets its close_notify.
            let _ = self.client.shutdown().await;
            let _ = self.upstream.shutdown().await;
            Ok(())
        };
        tokio::select! {
            closed = tokio::time::timeout(CLOSE_LIMIT, close) => closed.unwrap_or_else(|_| {
                debug!(limit = ?CLOSE_LIMIT, "tunnel not closed cleanly in time; dropping it");
                Ok(())
            }),
            _ = hard.cancelled() => Ok(()),
        }
    }

    /// Polls both directions once each.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Step>> {
        let up = self
            .up
            .poll_step(cx, &mut self.client, &mut self.upstream)?;
        let down = self
            .down
            .poll_step(cx, &mut self.upstream, &mut self.client)?;
        if self.up.is_done() && self.down.is_done() {
            Poll::Ready(Ok(Step::Done))
        } else if up.is_ready() || down.is_ready() {
            Poll::Ready(Ok(Step::Moved))
        } else {
            Poll::Pending
        }
    }
}

// === impl Direction ===

/// One direction of the tunnel.
struct Direction {
    /// Bytes read but not yet written, and how far they are written.
    pending: Option<(Bytes, usize)>,
    /// Bytes were written that the destination may hold back until flushed (TLS).
    unflushed: bool,
    /// Where the source stands in its frames.
    frames: Frames,
    /// The source sent EOF.
    eof: bool,
    /// The destination's write side is shut: the source's EOF was passed on.
    shut: bool,
    /// Toward the node: frames the edge sends must be masked.
    to_node: bool,
    stop: Stop,
}

/// How far the graceful stop has got in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Forwarding.
    Open,
    /// Forwarding to the end of the frame in flight.
    Finishing,
    /// The close is queued; what the source sends is dropped.
    Closing,
}

impl Direction {
    fn new(pre: Bytes, to_node: bool) -> Direction {
        let mut frames = Frames::default();
        frames.feed(&pre);
        Direction {
            pending: (!pre.is_empty()).then_some((pre, 0)),
            unflushed: false,
            frames,
            eof: false,
            shut: false,
            to_node,
            stop: Stop::Open,
        }
    }

    /// The graceful stop: finish the frame in flight, then close.
    fn stop(&mut self) {
        if !self.eof {
            self.stop = Stop::Finishing;
        }
    }

    /// Nothing more will move this way.
    fn is_done(&self) -> bool {
        let answered = self.eof || self.frames.close_seen() || self.frames.lost();
        self.shut
            || (self.stop == Stop::Closing && self.pending.is_none() && !self.unflushed && answered)
    }

    /// Moves what is ready from `src` to `dst`. `Ready` means something
    /// changed and the direction should be polled again; `Pending` that it
    /// waits for a wake-up registered with `cx`, or is done.
    fn poll_step<S, D>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
    ) -> Poll<io::Result<()>>
    where
        S: AsyncRead + Unpin,
        D: AsyncWrite + Unpin,
    {
        if let Some((bytes, written)) = self.pending.as_mut() {
            let n = ready!(Pin::new(&mut *dst).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == bytes.len() {
                self.pending = None;
            }
            self.unflushed = true;
            return Poll::Ready(Ok(()));
        }
        if self.unflushed {
            ready!(Pin::new(&mut *dst).poll_flush(cx))?;
            self.unflushed = false;
        }
        if self.eof {
            if !self.shut && self.stop != Stop::Closing {
                // Half-close: pass the EOF on, keep the other direction open.
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.shut = true;
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
        match self.stop {
            Stop::Finishing if self.frames.at_boundary() || self.frames.lost() => {
                self.close();
                return Poll::Ready(Ok(()));
            }
            // The source has answered: nothing more to read.
            Stop::Closing if self.frames.close_seen() || self.frames.lost() => {
                return Poll::Pending;
            }
            _ => {}
        }
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut *src).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            let read = &scratch[..n];
            if n == 0 {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            match self.stop {
                Stop::Open => {
                    self.frames.feed(read);
                    self.forward(cx, dst, read)?;
                }
                Stop::Finishing => {
                    let end = self.frames.advance_to_frame_end(read);
                    self.forward(cx, dst, &read[..end])?;
                    if self.frames.at_boundary() || self.frames.lost() {
                        self.close();
                        self.frames.feed(&read[end..]);
                    }
                }
                Stop::Closing => self.frames.feed(read),
            }
            Poll::Ready(Ok(()))
        })
    }

    /// Writes `bytes` to `dst` now if it takes them; keeps the rest.
    fn forward<D: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut D,
        bytes: &[u8],
    ) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let written = match Pin::new(dst).poll_write(cx, bytes) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => 0,
        };
        self.unflushed |= written > 0;
        if written < bytes.len() {
            self.queue(Bytes::copy_from_slice(&bytes[written..]));
        }
        Ok(())
    }

    /// Queues `bytes` after whatever is pending.
    fn queue(&mut self, bytes: Bytes) {
        self.pending = Some(match self.pending.take() {
            None => (bytes, 0),
            Some((old, written)) => {
                let mut joined = Vec::with_capacity(old.len() - written + bytes.len());
                joined.extend_from_slice(&old[written..]);
                joined.extend_from_slice(&bytes);
                (Bytes::from(joined), 0)
            }
        });
    }

    /// Between frames at the stop: queue our close unless the destination
    /// already has one (or the stream lost its framing), and stop forwarding.
    fn close(&mut self) {
        self.stop = Stop::Closing;
        if self.frames.at_boundary() && !self.frames.close_seen() {
            self.queue(if self.to_node {
                frames::close_to_node()
            } else {
                frames::close_to_client()
            });
        }
    }
}

#[cfg(test)]
mod tests;
