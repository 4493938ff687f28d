//! Config reload (SIGHUP): what a running edge takes from a changed file.
//!
//! For now that is node draining: `drain = true` on a node stops new
//! requests and tunnels to it while those in flight finish; `drain = false`
//! puts it back. Other changes (nodes added or removed, addresses, workers,
//! listeners, timeouts) are reported as needing a restart.

use std::sync::Arc;

use tracing::info;

use crate::config::Config;
use crate::pool::{Node, Topology};

/// Applies `config`'s drain flags to the running `topology`; returns one line
/// per change made and per change that needs a restart.
pub fn apply(topology: &Topology, config: &Config) -> Vec<String> {
    let mut running: Vec<&Arc<Node>> = topology.interactive.nodes.iter().collect();
    for node in topology.bus.nodes.iter().chain(&topology.cron) {
        if !running.iter().any(|n| Arc::ptr_eq(n, node)) {
            running.push(node);
        }
    }
    let mut lines = Vec::new();
    for wanted in &config.nodes {
        let Some(node) = running.iter().find(|n| n.name == wanted.name) else {
            lines.push(format!("node {}: new node; needs a restart", wanted.name));
            continue;
        };
        if node.address != wanted.address || node.role != wanted.role {
            lines.push(format!(
                "node {}: address or role changed; needs a restart",
                wanted.name
            ));
            continue;
        }
        if node.workers != wanted.workers || node.probe != wanted.probe {
            lines.push(format!(
                "node {}: workers or health check changed; needs a restart",
                wanted.name
            ));
        }
        if node.set_draining(wanted.drain) {
            let line = if wanted.drain {
                format!(
                    "node {}: draining (no new requests; those in flight finish)",
                    node.name
                )
            } else {
                format!("node {}: back in service", node.name)
            };
            info!("{line}");
            lines.push(line);
            for pool in topology.pools_of(node) {
                pool.refresh();
            }
        }
    }
    for node in running {
        if !config.nodes.iter().any(|n| n.name == node.name) {
            lines.push(format!(
                "node {}: removed from the file; needs a restart (drain it first with drain = true)",
                node.name
            ));
        }
    }
    lines
}
