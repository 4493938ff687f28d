//! The edge's Prometheus metrics, served by the admin API at `/metrics` in
//! the OpenMetrics text format (prometheus-client).
//!
//! Counters and histograms are recorded as requests finish (one place, the
//! listener's [`crate::listener`] response wrapper, the same record as the
//! access log); gauges that describe the cluster (node health, requests in
//! flight per node, queue depth) are read from the pools at scrape time, so
//! a reload that adds or removes nodes shows at the next scrape.
//!
//! Every family is named `odoo_edge_*`:
//!
//! | family | labels |
//! |---|---|
//! | `requests_total` | `kind` (proxy, static, accel, websocket, redirect), `pool`, `node`, `status` (1xx…5xx) |
//! | `request_duration_seconds` (histogram) | `kind`, `pool` |
//! | `requests_in_flight` | |
//! | `queue_wait_seconds` (histogram) | `pool` |
//! | `queue_depth` | `pool` |
//! | `node_up`, `node_draining`, `node_in_flight`, `node_workers` | `node`, `role` |
//! | `websockets_active`, `websockets_total` | `node` |
//! | `disk_bytes_total` (static and filestore bytes) | `kind` |
//! | `sent_bytes_total` | `kind` |
//! | `retries_total` | `pool`, `reason` (refused, replay) |
//! | `tls_handshakes_total` | `result` (ok, failed, timeout) |
//! | `reloads_total` | `result` (ok, rejected) |
//! | `last_reload_success_timestamp_seconds` | |
//! | `access_log_dropped_total` | |

use std::fmt::{self, Write as _};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pool::Topology;

/// What a request was, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    /// Proxied to an Odoo node.
    #[default]
    Proxy,
    /// A module asset served from the addons paths.
    Static,
    /// A node's X-Accel-Redirect reply, served from the filestore.
    Accel,
    /// A websocket handshake (the tunnel itself is counted in `websockets_*`).
    Websocket,
    /// The plain listener's redirect to HTTPS.
    Redirect,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Proxy => "proxy",
            Kind::Static => "static",
            Kind::Accel => "accel",
            Kind::Websocket => "websocket",
            Kind::Redirect => "redirect",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    pool: &'static str,
    node: NodeName,
    status: &'static str,
}

/// A node's name as a label value, shared with the node ([`crate::pool::Node::label`]);
/// empty for a request no node answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct NodeName(Option<Arc<str>>);

impl EncodeLabelValue for NodeName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(self.0.as_deref().unwrap_or(""))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindPool {
    kind: &'static str,
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeRole {
    node: String,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Retry {
    pool: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s, doubling: RPC calls to long reports.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of the edge; one per process, kept across reloads.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<KindPool, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    queue_wait: Family<PoolLabel, Histogram, fn() -> Histogram>,
    queue_depth: Family<PoolLabel, Gauge>,
    node_up: Family<NodeRole, Gauge>,
    node_draining: Family<NodeRole, Gauge>,
    node_in_flight: Family<NodeRole, Gauge>,
    node_workers: Family<NodeRole, Gauge>,
    websockets_active: Family<NodeLabel, Gauge>,
    websockets_total: Family<NodeLabel, Counter>,
    disk_bytes: Family<KindLabel, Counter>,
    sent_bytes: Family<KindLabel, Counter>,
    retries: Family<Retry, Counter>,
    tls_handshakes: Family<Outcome, Counter>,
    reloads: Family<Outcome, Counter>,
    last_reload: Gauge<f64, AtomicU64>,
    access_log_dropped: Counter,
    /// One scrape at a time: [`Metrics::render`] clears and refills the
    /// node gauges, and two scrapes interleaved would add a node's count
    /// twice (or show none).
    rendering: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// One finished request, as the metrics see it.
pub struct Finished<'a> {
    pub kind: Kind,
    pub pool: &'static str,
    /// [`crate::pool::Node::label`] of the node that answered, if one did.
    pub node: Option<&'a Arc<str>>,
    pub status: u16,
    pub duration: Duration,
    pub bytes: u64,
    /// Time spent waiting for a worker, when the request went to a pool.
    pub queue_wait: Option<Duration>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("odoo_edge");
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            queue_wait: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            node_up: Family::default(),
            node_draining: Family::default(),
            node_in_flight: Family::default(),
            node_workers: Family::default(),
            websockets_active: Family::default(),
            websockets_total: Family::default(),
            disk_bytes: Family::default(),
            sent_bytes: Family::default(),
            retries: Family::default(),
            tls_handshakes: Family::default(),
            reloads: Family::default(),
            last_reload: Gauge::default(),
            access_log_dropped: Counter::default(),
            rendering: Mutex::new(()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by route kind, pool, node and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from the request head to the last byte of the reply",
            m.duration.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests being answered now",
            m.in_flight.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time requests waited at the edge for a free Odoo worker",
            m.queue_wait.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting for a free Odoo worker now",
            m.queue_depth.clone(),
        );
        r.register(
            "node_up",
            "1 when the node passes its health checks",
            m.node_up.clone(),
        );
        r.register(
            "node_draining",
            "1 when the node takes no new requests",
            m.node_draining.clone(),
        );
        r.register(
            "node_in_flight",
            "Requests the edge has in flight to the node now",
            m.node_in_flight.clone(),
        );
        r.register(
            "node_workers",
            "Workers declared for the node (the edge's limit of requests in flight)",
            m.node_workers.clone(),
        );
        r.register(
            "websockets_active",
            "Websocket tunnels open now",
            m.websockets_active.clone(),
        );
        r.register(
            "websockets",
            "Websocket tunnels opened",
            m.websockets_total.clone(),
        );
        r.register(
            "disk_bytes",
            "Reply bytes served from disk (module assets, filestore attachments)",
            m.disk_bytes.clone(),
        );
        r.register(
            "sent_bytes",
            "Reply body bytes sent to clients",
            m.sent_bytes.clone(),
        );
        r.register(
            "retries",
            "Requests sent to another node after a node failed",
            m.retries.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes by result",
            m.tls_handshakes.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (start or last good reload), Unix time",
            m.last_reload.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access log lines dropped: the writer fell behind, or the file refused them",
            m.access_log_dropped.clone(),
        );
        m.last_reload.set(unix_now());
        // Outcomes that have not happened yet show as 0, not as nothing: a
        // rate() over a series that appears late misses its first increase.
        for result in ["ok", "rejected"] {
            m.reloads.get_or_create(&Outcome { result }).inc_by(0);
        }
        for result in ["ok", "failed", "timeout"] {
            m.tls_handshakes
                .get_or_create(&Outcome { result })
                .inc_by(0);
        }
        for pool in ["interactive", "gevent"] {
            for reason in ["refused", "replay"] {
                m.retries.get_or_create(&Retry { pool, reason }).inc_by(0);
            }
        }
        Metrics { registry, ..m }
    }

    /// A request began (see [`Metrics::finished`]).
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// A request ended: its reply sent, or the client gone.
    pub fn finished(&self, f: &Finished<'_>) {
        self.in_flight.dec();
        let kind = f.kind.as_str();
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                pool: f.pool,
                node: NodeName(f.node.cloned()),
                status: status_class(f.status),
            })
            .inc();
        self.duration
            .get_or_create(&KindPool { kind, pool: f.pool })
            .observe(f.duration.as_secs_f64());
        if let Some(wait) = f.queue_wait {
            self.queue_wait
                .get_or_create(&PoolLabel { pool: f.pool })
                .observe(wait.as_secs_f64());
        }
        if f.bytes > 0 {
            self.sent_bytes
                .get_or_create(&KindLabel { kind })
                .inc_by(f.bytes);
            if matches!(f.kind, Kind::Static | Kind::Accel) {
                self.disk_bytes
                    .get_or_create(&KindLabel { kind })
                    .inc_by(f.bytes);
            }
        }
    }

    /// A request went to another node: `reason` is `refused` (nothing was
    /// sent) or `replay` (an idempotent request the node may have seen).
    pub fn retry(&self, pool: &'static str, reason: &'static str) {
        self.retries.get_or_create(&Retry { pool, reason }).inc();
    }

    /// A TLS handshake ended: `ok`, `failed` or `timeout`.
    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes.get_or_create(&Outcome { result }).inc();
    }

    /// A reload was applied (`ok`) or refused (`rejected`).
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&Outcome { result }).inc();
        if ok {
            self.last_reload.set(unix_now());
        }
    }

    /// A websocket tunnel opened to `node`; closed when the guard drops.
    pub fn websocket_opened(&self, node: &str) -> WebsocketGuard {
        let labels = NodeLabel {
            node: node.to_owned(),
        };
        self.websockets_total.get_or_create(&labels).inc();
        let gauge = self.websockets_active.get_or_create_owned(&labels);
        gauge.inc();
        WebsocketGuard(gauge)
    }

    /// An access log line was dropped.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// The dropped-lines counter itself, for the access log's writer thread.
    pub fn access_log_dropped_counter(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The exposition, with the cluster gauges read from `topology` now.
    pub fn render(&self, topology: &Topology) -> String {
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for family in [
            &self.node_up,
            &self.node_draining,
            &self.node_in_flight,
            &self.node_workers,
        ] {
            // Nodes removed by a reload disappear from the gauges.
            family.clear();
        }
        for pool in [&topology.interactive, &topology.bus] {
            let in_flight = pool.in_flight();
            for (node, n) in pool.nodes.iter().zip(in_flight) {
                let labels = NodeRole {
                    node: node.name.clone(),
                    role: node.role.as_str(),
                };
                // Bus traffic on interactive nodes adds to their count.
                self.node_in_flight
                    .get_or_create(&labels)
                    .inc_by(i64::from(n));
            }
            if Arc::ptr_eq(pool, &topology.bus) && topology.bus_on_interactive {
                // Named "interactive" too, and it never queues: setting its
                // 0 would hide the interactive pool's queue.
                continue;
            }
            self.queue_depth
                .get_or_create(&PoolLabel { pool: pool.name })
                .set(i64::try_from(pool.queued()).unwrap_or(i64::MAX));
        }
        for node in topology.nodes() {
            let labels = NodeRole {
                node: node.name.clone(),
                role: node.role.as_str(),
            };
            let routed = node.role != crate::config::Role::Cron;
            self.node_up
                .get_or_create(&labels)
                .set(i64::from(routed && node.is_up()));
            self.node_draining
                .get_or_create(&labels)
                .set(i64::from(node.is_draining()));
            self.node_workers
                .get_or_create(&labels)
                .set(i64::from(node.workers()));
            self.node_in_flight.get_or_create(&labels).inc_by(0);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Keeps a websocket counted as open.
pub struct WebsocketGuard(Gauge);

impl Drop for WebsocketGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
