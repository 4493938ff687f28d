//! Byte tunnel for upgraded connections, built to cost little while idle.
//!
//! An Odoo estate keeps one websocket per open browser tab, mostly idle. A
//! generic copy holds two 8 KiB buffers per tunnel forever; here a tunnel owns
//! no buffer at all while idle: it waits for readiness, reads into a
//! per-thread scratch buffer and writes straight on. Only bytes the other side
//! cannot take at once are copied into a buffer owned by the tunnel, freed as
//! soon as they are written.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::listener::ClientIo;

const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Copies both ways until both sides close, one fails, nothing moves for
/// `idle`, or the edge shuts down.
pub async fn splice(client: Upgraded, upstream: Upgraded, idle: Duration, stop: CancellationToken) {
    // The upstream side is always the plain socket `websocket::handshake` made.
    let (upstream, upstream_pre) = match upstream.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (parts.io.into_inner(), parts.read_buf),
        Err(_) => {
            debug!("tunnel: upstream side is not a plain socket");
            return;
        }
    };
    let copy = async {
        match client.downcast::<TokioIo<ClientIo<TcpStream>>>() {
            Ok(parts) => {
                let client = parts.io.into_inner().into_inner();
                raw(client, parts.read_buf, upstream, upstream_pre, idle).await
            }
            Err(client) => generic(client, upstream, upstream_pre).await,
        }
    };
    let result = tokio::select! {
        r = copy => r,
        _ = stop.cancelled() => {
            debug!("tunnel closed by shutdown");
            Ok(())
        }
    };
    if let Err(e) = result {
        debug!(cause = %e, "tunnel ended with an error");
    }
}

/// For a client side that is not a plain socket (a TLS listener, later).
async fn generic(client: Upgraded, mut upstream: TcpStream, upstream_pre: Bytes) -> io::Result<()> {
    let mut client = TokioIo::new(client);
    client.write_all(&upstream_pre).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 2048, 2048).await?;
    Ok(())
}

/// One direction of the tunnel.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet written, and how far they are written.
    pending: Option<(Bytes, usize)>,
    /// The source sent EOF and the destination's write side is shut.
    done: bool,
}

impl Direction {
    fn with(pre: Bytes) -> Direction {
        Direction {
            pending: (!pre.is_empty()).then_some((pre, 0)),
            done: false,
        }
    }
}

async fn raw(
    client: TcpStream,
    client_pre: Bytes,
    upstream: TcpStream,
    upstream_pre: Bytes,
    idle: Duration,
) -> io::Result<()> {
    let mut up = Direction::with(client_pre);
    let mut down = Direction::with(upstream_pre);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    while !(up.done && down.done) {
        tokio::select! {
            r = step(&client, &upstream, &mut up), if !up.done => {
                if r? { sleep.as_mut().reset(Instant::now() + idle); }
            }
            r = step(&upstream, &client, &mut down), if !down.done => {
                if r? { sleep.as_mut().reset(Instant::now() + idle); }
            }
            _ = &mut sleep => {
                debug!(?idle, "tunnel idle; closing");
                break;
            }
        }
    }
    Ok(())
}

/// Moves what is ready from `src` to `dst`. Returns whether bytes moved.
/// Cancel-safe: all state lives in `dir`, and the only awaits are readiness.
async fn step(src: &TcpStream, dst: &TcpStream, dir: &mut Direction) -> io::Result<bool> {
    if let Some((bytes, written)) = dir.pending.as_mut() {
        dst.writable().await?;
        match dst.try_write(&bytes[*written..]) {
            Ok(n) => {
                *written += n;
                if *written == bytes.len() {
                    dir.pending = None;
                }
                return Ok(n > 0);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    src.readable().await?;
    SCRATCH_BUF.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        match src.try_read(&mut scratch[..]) {
            Ok(0) => {
                // Half-close: pass the EOF on, keep the other direction open.
                let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                dir.done = true;
                Ok(false)
            }
            Ok(n) => {
                match dst.try_write(&scratch[..n]) {
                    Ok(m) if m == n => {}
                    Ok(m) => dir.pending = Some((Bytes::copy_from_slice(&scratch[m..n]), 0)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dir.pending = Some((Bytes::copy_from_slice(&scratch[..n]), 0))
                    }
                    Err(e) => return Err(e),
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    })
}
