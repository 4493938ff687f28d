//! Zero-copy file replies on plain TCP connections, as nginx's `sendfile on`.
//!
//! hyper writes a response body from the `Bytes` it is handed, so a file would
//! have to be read into memory and copied back into the kernel to reach the
//! socket. On a plain connection the edge hands hyper placeholders instead: a
//! frame is a slice of [`PLACEHOLDER`], a static array that is never sent, and
//! the file region it stands for is queued on the connection's [`Regions`].
//! When the client socket is asked to write bytes that lie inside the
//! placeholder, [`poll_send`] sends the front region with sendfile(2): pages go
//! from the page cache to the socket without passing through user space.
//!
//! This holds because hyper writes frames in order and advances a slice by
//! exactly what a write reports, so a slice's offset in the placeholder is its
//! offset in the front region. A placeholder slice that no queued region
//! covers fails the connection: placeholder bytes never reach the wire. TLS
//! connections (which must encrypt in user space) never get placeholders.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::spool::RANGE_CHUNK;

/// What hyper is handed in place of file bytes; one frame is at most this long.
pub static PLACEHOLDER: [u8; RANGE_CHUNK] = [0; RANGE_CHUNK];

/// Most bytes the fallback (for files sendfile(2) refuses) copies per write.
const FALLBACK_CHUNK: usize = 64 * 1024;

/// The file regions a connection's pending placeholder frames stand for, in order.
#[derive(Debug, Clone, Default)]
pub struct Regions(Arc<Mutex<VecDeque<Region>>>);

#[derive(Debug)]
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl Regions {
    /// Queues `len` bytes of `file` at `offset` (at most [`RANGE_CHUNK`]) and
    /// returns the placeholder frame that stands for them.
    pub fn push(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(PLACEHOLDER.len());
        self.lock().push_back(Region { file, offset, len });
        Bytes::from_static(&PLACEHOLDER[..len])
    }

    /// Regions queued and not fully sent.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Region>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where `buf` starts inside [`PLACEHOLDER`], when it is a placeholder slice.
pub fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).wrapping_sub(base);
    (!buf.is_empty() && at < PLACEHOLDER.len()).then_some(at)
}

/// Sends the file bytes that the placeholder slice at `at`, `len` long, stands for.
pub fn poll_send(
    regions: &Regions,
    stream: &TcpStream,
    cx: &mut Context<'_>,
    at: usize,
    len: usize,
) -> Poll<io::Result<usize>> {
    let mut queue = regions.lock();
    let Some(front) = queue.front() else {
        return Poll::Ready(Err(io::Error::other(
            "placeholder bytes with no file region",
        )));
    };
    if at + len > front.len {
        return Poll::Ready(Err(io::Error::other(
            "placeholder bytes outside their file region",
        )));
    }
    let offset = front.offset + at as u64;
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            send_file(stream, &front.file, offset, len)
        });
        match sent {
            Ok(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than the reply promised",
                )));
            }
            Ok(n) => {
                if at + n == front.len {
                    queue.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Writes the bytes that precede a placeholder (a reply head) flagged
/// `MSG_MORE`, so the kernel sends them in one segment with the file's first
/// bytes, as nginx's `tcp_nopush`.
pub fn poll_send_head(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: a zeroed msghdr is valid; it points at `bufs`, which
            // outlives the call and whose IoSlice layout is iovec's.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
            #[cfg(target_os = "linux")]
            let flags = libc::MSG_MORE;
            #[cfg(not(target_os = "linux"))]
            let flags = 0;
            // SAFETY: `msg` and what it points at are valid for the call.
            let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, flags) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// One non-blocking sendfile(2), or a bounded read and write where the file
/// system does not support it.
fn send_file(stream: &TcpStream, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: both descriptors are open for the duration of the call and
        // `off` is a valid, exclusively borrowed offset.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(err),
        }
    }
    copy_out(stream, file, offset, len)
}

/// Reads part of the region and writes it; what the socket does not take is
/// read again on the next call.
fn copy_out(stream: &TcpStream, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut buf = vec![0; len.min(FALLBACK_CHUNK)];
    let read = file.read_at(&mut buf, offset)?;
    if read == 0 {
        return Ok(0);
    }
    // SAFETY: `buf[..read]` is initialised and outlives the call.
    let n = unsafe { libc::write(stream.as_raw_fd(), buf.as_ptr().cast(), read) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_placeholder_slices_are_recognised() {
        assert_eq!(placeholder_offset(&PLACEHOLDER[..10]), Some(0));
        assert_eq!(placeholder_offset(&PLACEHOLDER[100..200]), Some(100));
        assert_eq!(
            placeholder_offset(&PLACEHOLDER[RANGE_CHUNK - 1..]),
            Some(RANGE_CHUNK - 1)
        );
        assert_eq!(placeholder_offset(&PLACEHOLDER[5..5]), None);
        let other = vec![0u8; 16];
        assert_eq!(placeholder_offset(&other), None);
        assert_eq!(placeholder_offset(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn a_pushed_region_is_a_placeholder_frame() {
        let regions = Regions::default();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let frame = regions.push(file, 7, 100);
        assert_eq!(frame.len(), 100);
        assert_eq!(placeholder_offset(&frame), Some(0));
        assert_eq!(regions.pending(), 1);
    }
}
