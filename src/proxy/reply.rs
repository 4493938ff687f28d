//! The reply body: read from Odoo as fast as Odoo sends it, handed to the
//! client as fast as the client takes it.
//!
//! Like nginx's proxy buffering: a pump task drains the node's reply into a
//! memory queue (up to `limits.response_buffer`), then into a spool file (up
//! to `limits.max_response_spool`), while the client's side of the body reads
//! from the queue, then from the file. So a slow client never holds an Odoo
//! worker, and the client still gets bytes as soon as they arrive. Once the
//! pump starts spooling, every later chunk goes through the file too, which
//! keeps the order without any bookkeeping across the two stores.
//!
//! Small replies that are complete as soon as their head arrives skip the pump
//! altogether (see [`ReplyBody::from_upstream`]).

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::body;
use crate::config::Limits;
use crate::pool::Lease;
use crate::spool::{self, FileRange, Spool};

/// Replies declared this small are read whole before the client gets the head.
pub const INLINE_MAX: u64 = 64 * 1024;

/// Body of every response the edge sends to a client.
#[derive(Debug)]
pub enum ReplyBody {
    /// Complete in memory (error pages, small replies).
    Full(Option<Bytes>),
    /// Fed by a pump task.
    Pumped(PumpReader),
    /// Read from a file on disk (a large static file).
    File(FileRange),
}

impl ReplyBody {
    /// An empty body.
    pub fn empty() -> ReplyBody {
        ReplyBody::Full(None)
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> ReplyBody {
        ReplyBody::Full(Some(bytes.into()))
    }

    /// Takes over a node's reply body.
    ///
    /// A reply whose declared length is at most [`INLINE_MAX`] is read whole
    /// here, before the client gets the head: the node sends it in a burst, no
    /// task is spawned, and a node that breaks off mid-body still gets the
    /// client a clean 502 (the `Err`). Otherwise what is already readable is
    /// taken at once, and a pump task goes on reading from the node while the
    /// client reads from the buffer.
    ///
    /// `lease` is the node's worker: held until the node's reply has been
    /// read off it, here or by the pump.
    pub async fn from_upstream(
        mut body: Incoming,
        limits: &Limits,
        idle: Duration,
        lease: Lease,
    ) -> Result<ReplyBody, String> {
        if body.is_end_stream() {
            return Ok(ReplyBody::Full(None));
        }
        let inline_max = INLINE_MAX.min(limits.response_buffer as u64);
        if body.size_hint().exact().is_some_and(|n| n <= inline_max) {
            return match tokio::time::timeout(idle, body.collect()).await {
                Ok(Ok(collected)) => Ok(ReplyBody::Full(Some(collected.to_bytes()))),
                Ok(Err(e)) => Err(format!("reading the reply body: {e}")),
                Err(_) => Err(format!("reply body not complete within {idle:?}")),
            };
        }
        let mut head = VecDeque::new();
        let mut bytes = 0usize;
        loop {
            if body.is_end_stream() {
                return Ok(ReplyBody::Full(concat(head)));
            }
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        bytes += data.len();
                        head.push_back(data);
                    }
                    if bytes > limits.response_buffer {
                        break;
                    }
                }
                Some(None) => return Ok(ReplyBody::Full(concat(head))),
                // hyper reports a body error once: report it now, while the
                // client can still get a clean 502 instead of a cut reply.
                Some(Some(Err(e))) => return Err(format!("reading the reply body: {e}")),
                // Nothing ready yet: the pump waits for it.
                None => break,
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mem_bytes: bytes,
                mem: head,
                ..State::default()
            }),
            room: Notify::new(),
            gone: Notify::new(),
        });
        tokio::spawn(pump(
            body,
            lease,
            shared.clone(),
            PumpLimits {
                memory: limits.response_buffer,
                spool: limits.max_response_spool,
                spool_dir: limits.spool_dir.clone(),
                idle,
            },
        ));
        Ok(ReplyBody::Pumped(PumpReader {
            shared,
            reading: None,
        }))
    }
}

fn concat(mut chunks: VecDeque<Bytes>) -> Option<Bytes> {
    match chunks.len() {
        0 => None,
        1 => chunks.pop_front(),
        _ => {
            let mut all = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                all.extend_from_slice(&c);
            }
            Some(all.into())
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ReplyBody::Full(b) => body::poll_whole(b),
            ReplyBody::Pumped(reader) => reader.poll_frame(cx),
            ReplyBody::File(f) => Pin::new(f).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            ReplyBody::Pumped(_) => false,
            ReplyBody::File(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(b) => body::whole_size(b),
            ReplyBody::Pumped(_) => SizeHint::default(),
            ReplyBody::File(f) => f.size_hint(),
        }
    }
}

// === pump ===

struct PumpLimits {
    memory: usize,
    spool: u64,
    spool_dir: Option<std::path::PathBuf>,
    idle: Duration,
}

#[derive(Default)]
struct State {
    mem: VecDeque<Bytes>,
    mem_bytes: usize,
    /// Set once the pump starts spooling; from then on all data goes there.
    spool: Option<Arc<File>>,
    spool_written: u64,
    /// How far the reader has read the spool file.
    spool_read: u64,
    finished: bool,
    failed: Option<String>,
    reader_waker: Option<Waker>,
    reader_gone: bool,
    /// Spooling failed once (disk full, spool dir gone): memory only from now on.
    spool_failed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The reader took something: the pump may have room again.
    room: Notify,
    /// The reader is gone: the pump stops even while it waits on the node.
    gone: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the
        // state stays consistent field by field, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_reader(state: &mut State) {
        if let Some(w) = state.reader_waker.take() {
            w.wake();
        }
    }
}

async fn pump(mut body: Incoming, lease: Lease, shared: Arc<Shared>, limits: PumpLimits) {
    // Released whichever way the pump ends: the node is done with the request.
    let _lease = lease;
    let mut spool: Option<Spool> = None;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(limits.idle, body.frame()) => next,
            _ = shared.gone.notified() => {
                debug!("client went away; closing the node connection");
                return;
            }
        };
        let frame = match next {
            Err(_) => return fail(&shared, format!("node sent nothing for {:?}", limits.idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return fail(&shared, format!("reading the reply: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are dropped
        };
        if data.is_empty() {
            continue;
        }
        loop {
            let room = shared.room.notified();
            match place(&shared, &data, &limits) {
                Place::Gone => {
                    debug!("client went away; closing the node connection");
                    return;
                }
                Place::Stored => break,
                Place::Unspooled => spool = None,
                Place::Spool => match append(&shared, &mut spool, &limits, data.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        // Not fatal: back-pressure on memory still works.
                        warn!(cause = %e, "cannot spool a reply; holding it in memory instead");
                        shared.lock().spool_failed = true;
                    }
                },
                Place::Wait => room.await,
            }
        }
    }
    let mut st = shared.lock();
    st.finished = true;
    Shared::wake_reader(&mut st);
}

/// Where the next chunk goes.
enum Place {
    /// The reader is gone: stop.
    Gone,
    /// Queued in memory.
    Stored,
    /// The reader caught up with the spool file, which was dropped: place again.
    Unspooled,
    /// Goes to the spool file.
    Spool,
    /// No room anywhere until the reader takes something.
    Wait,
}

/// Memory while nothing is spooled and there is room; then the spool file
/// while its unread part is under the cap (a chunk always fits an empty one);
/// with spooling off, failed or full, memory again once the reader has drained
/// it. Once the reader has read everything spooled, the file is dropped and
/// memory is used again, so a file holds at most what a slow client lags by.
fn place(shared: &Shared, data: &Bytes, limits: &PumpLimits) -> Place {
    let mut st = shared.lock();
    if st.reader_gone {
        return Place::Gone;
    }
    // `spool_read` is credited only when a read completes, so equality also
    // means no read of the file is in flight.
    if st.spool.is_some() && st.spool_read == st.spool_written {
        st.spool = None;
        st.spool_read = 0;
        st.spool_written = 0;
        return Place::Unspooled;
    }
    let spooling = st.spool.is_some();
    if !spooling && st.mem_bytes + data.len() <= limits.memory {
        st.mem_bytes += data.len();
        st.mem.push_back(data.clone());
        Shared::wake_reader(&mut st);
        return Place::Stored;
    }
    let backlog = st.spool_written - st.spool_read;
    if !st.spool_failed
        && limits.spool > 0
        && (backlog == 0 || backlog + data.len() as u64 <= limits.spool)
    {
        return Place::Spool;
    }
    if !spooling && st.mem_bytes == 0 {
        st.mem_bytes += data.len();
        st.mem.push_back(data.clone());
        Shared::wake_reader(&mut st);
        return Place::Stored;
    }
    Place::Wait
}

async fn append(
    shared: &Shared,
    spool: &mut Option<Spool>,
    limits: &PumpLimits,
    data: Bytes,
) -> io::Result<()> {
    if spool.is_none() {
        *spool = Some(Spool::create(limits.spool_dir.as_deref()).await?);
    }
    let Some(s) = spool.as_mut() else {
        unreachable!("created above")
    };
    s.append(data).await?;
    let mut st = shared.lock();
    st.spool.get_or_insert_with(|| s.file());
    st.spool_written = s.len();
    Shared::wake_reader(&mut st);
    Ok(())
}

fn fail(shared: &Shared, why: String) {
    debug!(cause = %why, "reply body cut");
    let mut st = shared.lock();
    st.failed = Some(why);
    Shared::wake_reader(&mut st);
}

// === impl PumpReader ===

/// The client's side of a pumped body.
pub struct PumpReader {
    shared: Arc<Shared>,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl std::fmt::Debug for PumpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PumpReader")
    }
}

impl PumpReader {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(job) = self.reading.as_mut() {
            let result = match Pin::new(job).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            self.reading = None;
            let chunk = result.map_err(io::Error::other)??;
            self.shared.lock().spool_read += chunk.len() as u64;
            self.shared.room.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let mut st = self.shared.lock();
        if let Some(b) = st.mem.pop_front() {
            st.mem_bytes -= b.len();
            drop(st);
            self.shared.room.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(file) = st.spool.clone()
            && st.spool_read < st.spool_written
        {
            let max = (st.spool_written - st.spool_read).min(spool::CHUNK as u64) as usize;
            let offset = st.spool_read;
            drop(st);
            self.reading = Some(spool::read_at(file, offset, max));
            return self.poll_frame(cx);
        }
        if let Some(why) = &st.failed {
            return Poll::Ready(Some(Err(io::Error::other(why.clone()))));
        }
        if st.finished {
            return Poll::Ready(None);
        }
        st.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for PumpReader {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.room.notify_one();
        self.shared.gone.notify_one();
    }
}
