//! Config reload (SIGHUP): the changed file becomes a new generation of the
//! [`Edge`], swapped in atomically, with no request failed and no open
//! websocket to a kept node cut.
//!
//! The file is validated whole first, certificates included: a bad file
//! changes nothing, is logged and counted (`odoo_edge_reloads_total{result="rejected"}`).
//! A good one is built into a new [`Edge`] and stored in the [`Current`]
//! every listener and the admin API load per request:
//!
//! * **Settings** (timeouts, limits, forwarding, cookies, retries, health,
//!   admission, statics, filestore, access log) apply to requests that start
//!   after the swap; requests already running finish with the generation
//!   they started with. Client-side timeouts and `limits.max_header_bytes`
//!   are taken when a connection opens, `websocket_idle` when a tunnel opens.
//! * **Kept nodes** (same name, address and role) are the same [`Node`]: their
//!   health (up or down, streaks), idle keep-alive connections and busy
//!   workers carry over, and a changed `workers`, probe or `drain` applies in
//!   place. Busy workers are counted on the node, across the pools of every
//!   generation ([`crate::pool`]): requests admitted before the swap and after
//!   it never exceed `workers` together, and requests queued in the old pool
//!   at the swap still get a worker, or their 503 at `queue_timeout`.
//! * **Added nodes** start up, as at start.
//! * **Removed nodes** are drained: they get no new request; requests in
//!   flight to them finish (they hold the old pools). Websocket tunnels to
//!   them are left to end on their own (client or node closes, or
//!   `websocket_idle`): a reload never cuts a tunnel. A node put back while
//!   requests to it still run is the same node again.
//! * **Probes** of the old topology stop and the new topology's start. A
//!   kept node keeps its cadence (next probe one interval after its last),
//!   so frequent reloads never hold its probes off; a new node is first
//!   probed one interval after the reload.
//! * **TLS certificates** are swapped for new handshakes; open connections
//!   keep theirs.
//!
//! What a running edge cannot change is reported as needing a restart and
//! left as it is: listeners added, removed or moved, TLS turned on or off, a
//! TLS listener's `handshake_timeout` or `hsts`, redirect settings,
//! `limits.max_connections` (it sizes each listener's connection limit),
//! `runtime.worker_threads` and `admin.address`.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, NodeConfig};
use crate::health;
use crate::listener::Mode;
use crate::pool::{Node, Topology};
use crate::proxy::{Current, Edge};
use crate::shutdown::Lifecycle;

/// What a reload needs besides the file: one per running edge, used by one
/// reload at a time.
pub struct Reloader {
    /// Stops the probe tasks of the generation serving now.
    probes: CancellationToken,
    /// Nodes removed by a reload, while anything (a request in flight, a
    /// queued one) still holds them: a node put back in the meantime is the
    /// same node, so its busy workers stay counted.
    retired: Vec<Weak<Node>>,
    /// The config the serving generation was built from.
    applied: Config,
    /// Listeners, `limits.max_connections`, `runtime.worker_threads` and
    /// `admin.address` as the edge started: only a restart changes them.
    started: Config,
}

impl Reloader {
    /// For an edge started with `config`, whose probe tasks stop with `probes`.
    pub fn new(config: &Config, probes: CancellationToken) -> Reloader {
        Reloader {
            probes,
            retired: Vec::new(),
            applied: config.clone(),
            started: config.clone(),
        }
    }

    /// Builds a generation from `config`, swaps it into `current` and moves
    /// the probes over to it. Returns one line per change made and per change
    /// that needs a restart; each is logged.
    pub fn apply(
        &mut self,
        current: &Current,
        lifecycle: &Lifecycle,
        listeners: &[(SocketAddr, Mode)],
        config: &Config,
    ) -> Vec<String> {
        let old = current.load_full();
        let mut lines = Vec::new();
        let topology = self.topology(&old.topology, config, &mut lines);
        let statics = if same(&self.applied.statics, &config.statics) {
            // The warm cache: it re-checks files on disk by itself.
            old.statics.clone()
        } else {
            crate::static_files::StaticFiles::new(&config.statics).map(Arc::new)
        };
        let edge = Arc::new(Edge::from_parts(
            config,
            old.shared.clone(),
            topology,
            statics,
        ));
        // Old probes stop before new ones start: a node is never probed twice over.
        self.probes.cancel();
        current.store(edge.clone());
        self.probes = health::spawn(&edge.topology, config.timeouts.upstream_connect, lifecycle);
        // Workers, drain flags and the nodes themselves may have changed:
        // waiters of every generation are looked at again.
        for node in old.topology.nodes().iter().chain(&edge.topology.nodes()) {
            node.refresh_pools();
        }
        if let Some(line) = self.settings(config) {
            lines.push(line);
        }
        for line in &lines {
            info!("reload: {line}");
        }
        let mut restart = listeners_needing_restart(listeners, config);
        restart.extend(self.restart_only(config));
        for line in &restart {
            warn!("reload: {line}");
        }
        lines.extend(restart);
        lines.extend(certificates(listeners, config));
        edge.shared.access_log.reconfigure(&config.access_log);
        edge.shared.metrics.reload(true);
        self.applied = config.clone();
        lines
    }

    /// The topology of `config`, with the running nodes it keeps; removed
    /// nodes are drained and remembered while in use.
    fn topology(&mut self, old: &Topology, config: &Config, lines: &mut Vec<String>) -> Topology {
        let running = old.nodes();
        self.retired.retain(|n| n.strong_count() > 0);
        let retired: Vec<Arc<Node>> = self.retired.iter().filter_map(Weak::upgrade).collect();
        let added = |wanted: &NodeConfig| {
            format!(
                "node {}: added ({}, {})",
                wanted.name, wanted.role, wanted.address
            )
        };
        let topology = Topology::build(config, |wanted| {
            if let Some(node) = running.iter().find(|n| n.is(wanted)) {
                update(node, wanted, lines);
                return node.clone();
            }
            if let Some(node) = retired.iter().find(|n| n.is(wanted)) {
                // Back while requests to it still run: the same node.
                update(node, wanted, &mut Vec::new());
                lines.push(added(wanted));
                return node.clone();
            }
            lines.push(if running.iter().any(|n| n.name == wanted.name) {
                format!(
                    "node {}: address or role changed: a new node replaces the old one, \
                     which is drained",
                    wanted.name
                )
            } else {
                added(wanted)
            });
            Arc::new(Node::new(wanted))
        });
        let now = topology.nodes();
        for node in running {
            if now.iter().any(|n| Arc::ptr_eq(n, &node)) {
                continue;
            }
            // Pools of earlier generations, still used by requests in
            // flight, send it nothing new.
            node.set_draining(true);
            if !config.nodes.iter().any(|n| n.name == node.name) {
                lines.push(format!(
                    "node {}: removed: drained (requests in flight finish; open websockets \
                     end on their own)",
                    node.name
                ));
            }
            self.retired.push(Arc::downgrade(&node));
        }
        // A node put back is running again, not retired.
        self.retired.retain(|n| {
            n.upgrade()
                .is_some_and(|n| !now.iter().any(|m| Arc::ptr_eq(m, &n)))
        });
        topology
    }

    /// One line naming the sections whose settings changed, if any.
    fn settings(&self, config: &Config) -> Option<String> {
        let old = &self.applied;
        // Apart from the connection limit, which needs a restart.
        let mut limits = old.limits.clone();
        limits.max_connections = config.limits.max_connections;
        let sections = [
            ("timeouts", same(&old.timeouts, &config.timeouts)),
            ("limits", same(&limits, &config.limits)),
            ("forwarding", same(&old.forwarding, &config.forwarding)),
            ("cookies", same(&old.cookies, &config.cookies)),
            ("retries", same(&old.retries, &config.retries)),
            ("health", same(&old.health, &config.health)),
            ("admission", same(&old.admission, &config.admission)),
            ("static", same(&old.statics, &config.statics)),
            ("x_accel", same(&old.filestore, &config.filestore)),
            ("access_log", old.access_log == config.access_log),
        ];
        let changed: Vec<&str> = sections
            .iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| *name)
            .collect();
        (!changed.is_empty()).then(|| {
            format!(
                "[{}] changed: applies to requests from now on",
                changed.join("], [")
            )
        })
    }

    /// Settings outside the listeners that only a restart changes.
    fn restart_only(&self, config: &Config) -> Vec<String> {
        let started = &self.started;
        let mut lines = Vec::new();
        if started.limits.max_connections != config.limits.max_connections {
            lines.push(format!(
                "limits.max_connections: {} -> {}: needs a restart (it sizes each listener's \
                 connection limit)",
                started.limits.max_connections, config.limits.max_connections
            ));
        }
        if started.worker_threads != config.worker_threads {
            lines.push(format!(
                "runtime.worker_threads: {} -> {}: needs a restart",
                threads(started.worker_threads),
                threads(config.worker_threads)
            ));
        }
        if started.admin != config.admin {
            lines.push(format!(
                "admin.address: {} -> {}: needs a restart",
                address(started.admin),
                address(config.admin)
            ));
        }
        lines
    }
}

/// Applies a kept node's new settings; one line per change.
fn update(node: &Node, wanted: &NodeConfig, lines: &mut Vec<String>) {
    let workers = node.workers();
    if node.set_workers(wanted.workers) {
        lines.push(format!(
            "node {}: workers {workers} -> {}",
            node.name, wanted.workers
        ));
    }
    if node.set_probe(&wanted.probe) {
        lines.push(format!("node {}: health check changed", node.name));
    }
    if node.set_draining(wanted.drain) {
        lines.push(if wanted.drain {
            format!(
                "node {}: draining (no new requests; those in flight finish)",
                node.name
            )
        } else {
            format!("node {}: back in service", node.name)
        });
    }
}

/// Listener changes, which only a restart applies: the sockets, their TLS
/// termination and redirect are fixed when they are bound.
fn listeners_needing_restart(listeners: &[(SocketAddr, Mode)], config: &Config) -> Vec<String> {
    let running: Vec<SocketAddr> = listeners.iter().map(|(a, _)| *a).collect();
    let wanted: Vec<SocketAddr> = config.listeners.iter().map(|l| l.address).collect();
    if running != wanted {
        let list = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return vec![format!(
            "listeners added, removed or moved (running: {}; file: {}): needs a restart",
            list(&running),
            list(&wanted)
        )];
    }
    let mut lines = Vec::new();
    for ((address, mode), wanted) in listeners.iter().zip(&config.listeners) {
        match (&mode.tls, &wanted.tls) {
            (Some(_), None) => lines.push(format!(
                "listener {address}: TLS turned off: needs a restart"
            )),
            (None, Some(_)) => {
                lines.push(format!(
                    "listener {address}: TLS turned on: needs a restart"
                ));
            }
            (Some(running), Some(new))
                if running.handshake_timeout != new.handshake_timeout
                    || running.hsts != new.hsts =>
            {
                lines.push(format!(
                    "listener {address}: handshake_timeout or hsts changed: needs a restart"
                ));
            }
            _ => {}
        }
        if !same(&mode.redirect.as_deref(), &wanted.redirect.as_ref()) {
            lines.push(format!(
                "listener {address}: redirect settings changed: needs a restart"
            ));
        }
    }
    lines
}

/// Swaps in the certificates of `config` for each TLS listener that is still
/// configured, in the same place in the file, at the same address.
pub fn certificates(listeners: &[(SocketAddr, Mode)], config: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    for (index, (address, mode)) in listeners.iter().enumerate() {
        let Some(tls) = &mode.tls else { continue };
        // The same entry of the file, at the same address.
        let wanted = config
            .listeners
            .get(index)
            .filter(|l| l.address == *address);
        if let Some(new) = wanted.and_then(|l| l.tls.as_ref()) {
            tls.server.store(new.server.clone());
            let line = format!(
                "listener {address}: certificates reloaded ({} certificate(s))",
                new.certificates.len()
            );
            info!("reload: {line}");
            lines.push(line);
        }
    }
    lines
}

/// Whether two settings are the same. The config types implement `Debug`
/// (not `PartialEq`), and their debug form shows every field.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn threads(n: Option<usize>) -> String {
    n.map_or_else(|| "one per core".to_owned(), |n| n.to_string())
}

fn address(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "off".to_owned(), |a| a.to_string())
}
