//! Config reload (SIGHUP): what a running edge takes from a changed file.
//!
//! For now that is node draining (`drain = true` on a node stops new
//! requests and tunnels to it while those in flight finish; `drain = false`
//! puts it back) and TLS certificates (new handshakes use the new files, open
//! connections keep theirs). The file is validated whole first, certificates
//! included: a bad file changes nothing. Other changes (nodes added or
//! removed, addresses, workers, listeners, timeouts) are reported as needing
//! a restart.

use std::net::SocketAddr;

use tracing::info;

use crate::config::Config;
use crate::listener::Mode;
use crate::pool::Topology;

/// Applies `config`'s drain flags to the running `topology`; returns one line
/// per change made and per change that needs a restart.
pub fn apply(topology: &Topology, config: &Config) -> Vec<String> {
    let running = topology.nodes();
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
        match wanted.and_then(|l| l.tls.as_ref()) {
            Some(new) => {
                tls.server.store(new.server.clone());
                let line = format!(
                    "listener {address}: certificates reloaded ({} certificate(s))",
                    new.certificates.len()
                );
                info!("{line}");
                lines.push(line);
            }
            None => lines.push(format!(
                "listener {address}: TLS removed or listener moved; needs a restart"
            )),
        }
    }
    lines
}
