//! Counters a test reads to see what the mock received, plus the runtime failure switch.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// A way for the mock to misbehave instead of replying, set per request with
/// `?mock_fail=<mode>` or for every request with [`Stats::set_fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// Write `this is not http\r\n\r\n` and close.
    Garbage,
    /// Close with `SO_LINGER` 0 so the peer sees a TCP RST.
    Reset,
    /// Close with no reply, as when Odoo's watchdog SIGKILLs a worker.
    Close,
    /// Never reply; hold the connection until the mock shuts down.
    Hang,
}

/// A failure mode name that is none of `garbage`, `reset`, `close`, `hang`.
#[derive(Debug, thiserror::Error)]
#[error("unknown failure mode {0:?} (expected garbage, reset, close or hang)")]
pub struct UnknownFail(pub String);

// === impl Fail ===

impl Fail {
    /// The name used in query strings and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Fail::Garbage => "garbage",
            Fail::Reset => "reset",
            Fail::Close => "close",
            Fail::Hang => "hang",
        }
    }

    fn encode(fail: Option<Fail>) -> u8 {
        match fail {
            None => 0,
            Some(Fail::Garbage) => 1,
            Some(Fail::Reset) => 2,
            Some(Fail::Close) => 3,
            Some(Fail::Hang) => 4,
        }
    }

    fn decode(raw: u8) -> Option<Fail> {
        match raw {
            1 => Some(Fail::Garbage),
            2 => Some(Fail::Reset),
            3 => Some(Fail::Close),
            4 => Some(Fail::Hang),
            _ => None,
        }
    }
}

impl FromStr for Fail {
    type Err = UnknownFail;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "garbage" => Ok(Fail::Garbage),
            "reset" => Ok(Fail::Reset),
            "close" => Ok(Fail::Close),
            "hang" => Ok(Fail::Hang),
            other => Err(UnknownFail(other.to_owned())),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Live counters of one mock node. Control requests (`/__mock/*`) are not counted.
#[derive(Debug)]
pub struct Stats {
    node: String,
    requests: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    read_timeouts: AtomicU64,
    websockets_open: AtomicUsize,
    static_hits: AtomicU64,
    filestore_hits: AtomicU64,
    /// Keyed by `X-Mock-Request-Id`; a mutex is fine, tests send few distinct ids.
    seen: Mutex<HashMap<String, usize>>,
    /// `Option<Fail>` packed by `Fail::encode` so connection tasks read it lock-free.
    fail: AtomicU8,
}

// === impl Stats ===

impl Stats {
    /// Zeroed counters for `node`, failing from the start with `fail` if set.
    pub(crate) fn new(node: &str, fail: Option<Fail>) -> Self {
        Stats {
            node: node.to_owned(),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            read_timeouts: AtomicU64::new(0),
            websockets_open: AtomicUsize::new(0),
            static_hits: AtomicU64::new(0),
            filestore_hits: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
            fail: AtomicU8::new(Fail::encode(fail)),
        }
    }

    /// Requests whose request line parsed.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Accepted TCP connections.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests being processed right now (from parsed head to reply written).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The highest [`Stats::in_flight`] seen since start.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Connections dropped because a read did not complete within `read_timeout`.
    pub fn read_timeouts(&self) -> u64 {
        self.read_timeouts.load(Ordering::SeqCst)
    }

    /// How many requests carried `X-Mock-Request-Id: <request_id>`.
    pub fn seen(&self, request_id: &str) -> usize {
        self.seen_map().get(request_id).copied().unwrap_or(0)
    }

    /// Websockets past the 101 and not yet closed.
    pub fn websockets_open(&self) -> usize {
        self.websockets_open.load(Ordering::SeqCst)
    }

    /// Requests for `/<module>/static/<path>` that reached the node, whatever the answer
    /// (file, 304, 404) and even with no addons path configured: a test of the edge reads
    /// it to see whether a static request fell back to Odoo.
    pub fn static_hits(&self) -> u64 {
        self.static_hits.load(Ordering::SeqCst)
    }

    /// Requests for `/web/filestore/...` that reached the node. A correct edge serves that
    /// location internally and never forwards it, so a test expects 0.
    pub fn filestore_hits(&self) -> u64 {
        self.filestore_hits.load(Ordering::SeqCst)
    }

    /// The failure applied to every request, if any.
    pub fn fail(&self) -> Option<Fail> {
        Fail::decode(self.fail.load(Ordering::SeqCst))
    }

    /// Make every following request fail this way (`None` restores normal replies).
    pub fn set_fail(&self, fail: Option<Fail>) {
        self.fail.store(Fail::encode(fail), Ordering::SeqCst);
    }

    /// The body of `GET /__mock/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.node,
            "requests": self.requests(),
            "connections": self.connections(),
            "in_flight": self.in_flight(),
            "max_in_flight": self.max_in_flight(),
            "read_timeouts": self.read_timeouts(),
            "websockets_open": self.websockets_open(),
            "static_hits": self.static_hits(),
            "filestore_hits": self.filestore_hits(),
            "fail": self.fail().map(Fail::as_str),
            "seen": self.seen_map().clone(),
        })
    }

    fn seen_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // A panic while holding this lock leaves a valid map, so a poisoned lock is still usable.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an accepted connection.
    pub(crate) fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a connection dropped by the read timeout.
    pub(crate) fn count_read_timeout(&self) {
        self.read_timeouts.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a parsed request, and its `X-Mock-Request-Id` if any.
    pub(crate) fn count_request(&self, request_id: Option<&str>) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = request_id {
            *self.seen_map().entry(id.to_owned()).or_insert(0) += 1;
        }
    }

    /// Counts a request for a module's static file.
    pub(crate) fn count_static_hit(&self) {
        self.static_hits.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a request for `/web/filestore/...`.
    pub(crate) fn count_filestore_hit(&self) {
        self.filestore_hits.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks a request in flight until the guard drops, whatever path ends it.
    pub(crate) fn begin_request(&self) -> Gauge<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Gauge(&self.in_flight)
    }

    /// Marks a websocket open until the guard drops.
    pub(crate) fn open_websocket(&self) -> Gauge<'_> {
        self.websockets_open.fetch_add(1, Ordering::SeqCst);
        Gauge(&self.websockets_open)
    }
}

/// Decrements its gauge on drop.
pub(crate) struct Gauge<'a>(&'a AtomicUsize);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
