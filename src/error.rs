//! Request-path errors and the one place that maps them to an HTTP status.

use std::time::Duration;

use http::StatusCode;

/// Why the edge answered a request itself instead of relaying Odoo's reply.
///
/// Small and unboxed: these are built on the hot path. The detail goes to the
/// log; the client only sees [`ProxyError::status`] and a short page.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The declared or received body is above `limits.max_request_body`.
    #[error("request body above the {limit} byte limit")]
    BodyTooLarge { limit: u64 },
    /// The request itself is unusable (an HTTP/1.1 request without Host).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client stopped sending its body, or sent a broken one.
    #[error("client body: {0}")]
    ClientBody(String),
    /// The client paused longer than `timeouts.client_body` while sending its body.
    #[error("client body stalled for {0:?}")]
    ClientBodyTimeout(Duration),
    /// Every candidate node refused the connection or could not be reached.
    #[error("no node of the {pool} pool could be reached: {last}")]
    NoUpstream { pool: &'static str, last: String },
    /// The node sent something that is not HTTP, reset the connection, or
    /// closed it before a complete reply head.
    #[error("node {node}: {detail}")]
    BadGateway { node: String, detail: String },
    /// The node gave no reply head within `timeouts.upstream_response`.
    #[error("node {node}: no reply within {after:?}")]
    UpstreamTimeout { node: String, after: Duration },
    /// A node's X-Accel-Redirect names a file the filestore does not have.
    #[error("node {node}: X-Accel-Redirect file not in the filestore")]
    AccelMissing { node: String },
    /// A client asked for the internal `/web/filestore/` location itself.
    #[error("client request for the internal /web/filestore/ location")]
    Internal,
    /// No node of the pool is up (`when_all_down = "closed"`) or every node drains.
    #[error("no node of the {pool} pool is available")]
    Unavailable { pool: &'static str },
    /// Every worker busy: the admission queue was full or the wait too long.
    #[error("{pool} pool: {detail}")]
    Overloaded {
        pool: &'static str,
        detail: &'static str,
    },
    /// Spooling to a temp file failed (disk full, spool dir gone).
    #[error("spool file: {0}")]
    Spool(#[source] std::io::Error),
}

impl ProxyError {
    /// The status the client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoUpstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::AccelMissing { .. } | ProxyError::Internal => StatusCode::NOT_FOUND,
            ProxyError::Unavailable { .. } | ProxyError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
