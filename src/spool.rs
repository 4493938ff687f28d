//! Temp files that hold bodies too large for the memory buffers.
//!
//! A spool file is unlinked at creation (`tempfile::tempfile_in`), so nothing
//! is left on disk whatever happens to the process. Reads and writes are
//! positional (`pread`/`pwrite`) so one writer and one reader can share the
//! file without sharing an offset, and run on tokio's blocking pool.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::sendfile::Regions;

/// Size of one read from a spool file.
pub const CHUNK: usize = 64 * 1024;

/// Size of one frame of a [`FileRange`]. Where the range is read into memory
/// (spooled request bodies, TLS clients) each read is a hand-off to the
/// blocking pool, so larger reads cost far less CPU per byte (1 MiB X-Accel
/// attachment: 1,100 µs at 64 KiB, 935 at 256 KiB, 686 at 1 MiB), and one
/// read is about the most a download holds in memory. A fresh zeroed buffer
/// per read beat reusing one: large zeroed allocations come from the kernel
/// already zeroed. With sendfile (plain client connections) a frame is a
/// placeholder and nothing is read.
pub const RANGE_CHUNK: usize = 1024 * 1024;

/// An append-only temp file.
#[derive(Debug, Clone)]
pub struct Spool {
    file: Arc<File>,
    len: u64,
}

impl Spool {
    /// Creates an anonymous temp file in `dir` (the system temp dir when `None`).
    pub async fn create(dir: Option<&Path>) -> io::Result<Spool> {
        let dir: Option<PathBuf> = dir.map(Path::to_owned);
        let file = tokio::task::spawn_blocking(move || match dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Spool {
            file: Arc::new(file),
            len: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` at the end.
    pub async fn append(&mut self, data: Bytes) -> io::Result<()> {
        let file = self.file.clone();
        let offset = self.len;
        let n = data.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(io::Error::other)??;
        self.len += n;
        Ok(())
    }

    /// A handle that reads what was written, from any offset.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }
}

/// Opens a file to serve: never through a symlink in its last component,
/// never blocking on a FIFO, and only if the opened file is a regular file
/// (checked on the descriptor, so nothing can be swapped in between). Blocking.
pub fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

/// Reads up to `max` bytes at `offset` on the blocking pool; the caller never
/// asks past what was written.
pub fn read_at(file: Arc<File>, offset: u64, max: usize) -> JoinHandle<io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || {
        let mut buf = BytesMut::zeroed(max);
        let mut filled = 0;
        while filled < max {
            match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file shorter than written",
            ));
        }
        buf.truncate(filled);
        Ok(buf.freeze())
    })
}

/// A byte range of a file, sent as a body in [`RANGE_CHUNK`]-sized reads on the
/// blocking pool: spooled request bodies, large static files, attachments.
#[derive(Debug)]
pub struct FileRange {
    file: Arc<File>,
    pos: u64,
    end: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// Set on plain client connections: frames are placeholders and the
    /// socket sends the file itself (see [`crate::sendfile`]).
    zero_copy: Option<Regions>,
}

impl FileRange {
    /// Bytes `start..end` of `file`; the caller knows they exist.
    pub fn new(file: Arc<File>, start: u64, end: u64) -> FileRange {
        FileRange {
            file,
            pos: start,
            end: end.max(start),
            reading: None,
            zero_copy: None,
        }
    }

    /// Sends this range with sendfile(2) through the connection that owns
    /// `regions` instead of reading it into memory.
    pub fn zero_copy(mut self, regions: Regions) -> FileRange {
        self.zero_copy = Some(regions);
        self
    }
}

impl Body for FileRange {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        if let Some(regions) = &this.zero_copy {
            let len = (this.end - this.pos).min(RANGE_CHUNK as u64) as usize;
            let frame = regions.push(this.file.clone(), this.pos, len);
            this.pos += len as u64;
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        let job = this.reading.get_or_insert_with(|| {
            let max = (this.end - this.pos).min(RANGE_CHUNK as u64) as usize;
            read_at(this.file.clone(), this.pos, max)
        });
        let result = ready!(Pin::new(job).poll(cx));
        this.reading = None;
        let chunk = result.map_err(io::Error::other)??;
        this.pos += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}
