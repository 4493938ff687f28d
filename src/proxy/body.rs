//! The request body, taken whole from the client before any node is chosen.
//!
//! A prefork Odoo worker gives a client 2 s between reads and serves one
//! connection at a time, so a slow upload must never reach it as a slow
//! upload. The body is read into memory up to `limits.request_buffer`, then
//! spooled to a temp file, and refused with 413 past `limits.max_request_body`
//! before any node is contacted. The result can be sent more than once (a
//! connect failure moves the request to the next node).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::Limits;
use crate::error::ProxyError;
use crate::spool::{FileRange, Spool};

/// A complete request body.
#[derive(Debug, Clone)]
pub enum RequestBody {
    Memory(Bytes),
    Spooled(Spool),
}

impl RequestBody {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Memory(b) => b.len() as u64,
            RequestBody::Spooled(s) => s.len(),
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A fresh body to send upstream; may be called once per attempt.
    pub fn to_upstream(&self) -> UpstreamBody {
        match self {
            RequestBody::Memory(b) => UpstreamBody::Memory(Some(b.clone())),
            RequestBody::Spooled(s) => UpstreamBody::File(FileRange::new(s.file(), 0, s.len())),
        }
    }
}

/// Declared length above the cap: answer 413 without reading anything.
pub fn check_declared_length(headers: &HeaderMap, limits: &Limits) -> Result<(), ProxyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limits.max_request_body => Err(ProxyError::BodyTooLarge {
            limit: limits.max_request_body,
        }),
        _ => Ok(()),
    }
}

/// Reads the whole body, memory first, then a spool file.
pub async fn collect(
    mut body: Incoming,
    limits: &Limits,
    idle: Duration,
) -> Result<RequestBody, ProxyError> {
    let mut memory = BytesMut::new();
    let mut spooled: Option<Spool> = None;
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ProxyError::ClientBodyTimeout(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ProxyError::ClientBody(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers are dropped: Odoo never reads them.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limits.max_request_body {
            return Err(ProxyError::BodyTooLarge {
                limit: limits.max_request_body,
            });
        }
        match &mut spooled {
            Some(spool) => spool.append(data).await.map_err(ProxyError::Spool)?,
            None if memory.len() + data.len() <= limits.request_buffer => {
                memory.extend_from_slice(&data)
            }
            None => {
                let mut spool = Spool::create(limits.spool_dir.as_deref())
                    .await
                    .map_err(ProxyError::Spool)?;
                let head = std::mem::take(&mut memory).freeze();
                spool.append(head).await.map_err(ProxyError::Spool)?;
                spool.append(data).await.map_err(ProxyError::Spool)?;
                spooled = Some(spool);
            }
        }
    }
    Ok(match spooled {
        Some(spool) => RequestBody::Spooled(spool),
        None => RequestBody::Memory(memory.freeze()),
    })
}

/// What the upstream client sends: the buffered bytes, or the spool file in chunks.
#[derive(Debug)]
pub enum UpstreamBody {
    Memory(Option<Bytes>),
    File(FileRange),
}

/// Polls a body held whole in memory: one data frame, then the end.
pub(crate) fn poll_whole(
    body: &mut Option<Bytes>,
) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
    Poll::Ready(
        body.take()
            .filter(|b| !b.is_empty())
            .map(|b| Ok(Frame::data(b))),
    )
}

/// The exact size of a body held whole in memory.
pub(crate) fn whole_size(body: &Option<Bytes>) -> SizeHint {
    SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
}

impl UpstreamBody {
    /// No body at all.
    pub fn empty() -> UpstreamBody {
        UpstreamBody::Memory(None)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            UpstreamBody::Memory(b) => poll_whole(b),
            UpstreamBody::File(f) => Pin::new(f).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Memory(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            UpstreamBody::File(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Memory(b) => whole_size(b),
            UpstreamBody::File(f) => f.size_hint(),
        }
    }
}
