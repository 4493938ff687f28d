//! One request's record, from its head to the last byte of its reply: the
//! request id, then one access log line and the request metrics when it ends.
//!
//! The record is made when the request head arrives and finished when it is
//! dropped: after the reply body is sent, or when the client leaves first
//! (then the status is the reply's, or 499 if no reply was made yet, as in
//! nginx). Either way a request gets exactly one line; so does a head hyper
//! refuses and answers itself (400, 414, 431), with `-` for what it could
//! not read ([`RequestLog::rejected`]).

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Version};
use tokio::time::Instant;

use crate::access_log::{self, Entry};
use crate::metrics::Finished;
use crate::proxy::{ClientInfo, Outcome, Shared};

/// The request id header: taken from a trusted proxy, else made here; sent to
/// Odoo and back to the client.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// nginx's status for a client that left before the reply.
const CLIENT_CLOSED: u16 = 499;

/// A request being answered; logs and counts it when dropped.
pub struct RequestLog {
    shared: Arc<Shared>,
    started: Instant,
    client: SocketAddr,
    method: http::Method,
    uri: http::Uri,
    version: Version,
    /// False for a head hyper refused: method, path and protocol are unknown.
    head_read: bool,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    pub request_id: HeaderValue,
    /// The reply's status, once there is one.
    pub status: Option<u16>,
    /// Filled in by [`crate::proxy::handle`].
    pub outcome: Outcome,
    /// Reply body bytes handed to the connection.
    pub bytes: u64,
}

impl RequestLog {
    /// Starts the record and sets the request's `X-Request-ID`.
    pub fn start<B>(shared: Arc<Shared>, req: &mut Request<B>, client: &ClientInfo) -> RequestLog {
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|id| client.is_trusted() && is_valid(id))
            .cloned()
            .unwrap_or_else(new_id);
        req.headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        shared.metrics.started();
        // Only the access log reads these.
        let logged = |name| {
            shared
                .access_log
                .enabled()
                .then(|| req.headers().get(name).cloned())
                .flatten()
        };
        RequestLog {
            started: Instant::now(),
            client: client.peer,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            head_read: true,
            referer: logged(header::REFERER),
            user_agent: logged(header::USER_AGENT),
            request_id,
            status: None,
            outcome: Outcome::default(),
            bytes: 0,
            shared,
        }
    }
}

impl RequestLog {
    /// A request head hyper refused before the edge saw it, answered by
    /// hyper itself with `status` (400, 414 or 431): logged with `-` for
    /// what could not be read, and counted, like any request.
    pub fn rejected(shared: Arc<Shared>, client: &ClientInfo, status: u16) -> RequestLog {
        shared.metrics.started();
        RequestLog {
            started: Instant::now(),
            client: client.peer,
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            version: Version::HTTP_11,
            head_read: false,
            referer: None,
            user_agent: None,
            request_id: new_id(),
            status: Some(status),
            outcome: Outcome::default(),
            bytes: 0,
            shared,
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let pool = self.outcome.pool;
        self.shared.metrics.finished(&Finished {
            kind: self.outcome.kind,
            pool,
            node: self.outcome.node.as_ref().map(|n| &n.label),
            status,
            duration,
            bytes: self.bytes,
            queue_wait: self.outcome.queue_wait,
        });
        if !self.shared.access_log.enabled() {
            return;
        }
        let node = self.outcome.node.as_ref().map_or("", |n| n.name.as_str());
        // Borrowed unless the header is not UTF-8.
        fn text(v: &Option<HeaderValue>) -> Cow<'_, str> {
            v.as_ref()
                .map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes()))
        }
        let referer = text(&self.referer);
        let user_agent = text(&self.user_agent);
        let (method, target, protocol) = if self.head_read {
            (
                self.method.as_str(),
                self.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                protocol(self.version),
            )
        } else {
            ("-", "-", "-")
        };
        let entry = Entry {
            time: access_log::now(),
            request_id: self.request_id.to_str().unwrap_or("-"),
            client: self.client,
            method,
            path: target,
            protocol,
            status,
            bytes: self.bytes,
            duration: access_log::seconds(duration),
            kind: self.outcome.kind.as_str(),
            node,
            retries: self.outcome.retries,
            queue_wait: access_log::seconds(self.outcome.queue_wait.unwrap_or_default()),
            referer: &referer,
            user_agent: &user_agent,
        };
        self.shared.access_log.write(&entry, &self.shared.metrics);
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// An id a trusted proxy may hand on: 1 to 128 visible characters from the
/// usual id alphabets (UUIDs, hex, base64, nginx's `$request_id`).
fn is_valid(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

/// A new id: 32 hex digits, a per-process random half and a (mixed) counter,
/// so ids never repeat within a process and almost surely not across restarts.
fn new_id() -> HeaderValue {
    static SEED: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&SEED.to_be_bytes());
    // A bijection of the counter (odd multiplier), so ids stay unique but do
    // not read as a run of zeros.
    let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ SEED.rotate_left(32);
    raw[8..].copy_from_slice(&mixed.to_be_bytes());
    // Hex by hand: `format!` was most of a request id's cost.
    let mut text = [0u8; 32];
    match hex::encode_to_slice(raw, &mut text) {
        Ok(()) => HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-")),
        Err(_) => HeaderValue::from_static("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_differ_and_are_valid() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(is_valid(&a), "{a:?}");
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn odd_ids_are_not_passed_on() {
        for bad in ["", "a b", "x\"y", &"a".repeat(129)] {
            assert!(
                !is_valid(&HeaderValue::from_str(bad).expect("value")),
                "{bad:?}"
            );
        }
        assert!(is_valid(&HeaderValue::from_static(
            "5f0e8a2c-3b1d-4c6e-9a7f-2d4b6c8e0a1f"
        )));
    }
}
