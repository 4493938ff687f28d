//! The cluster as the edge routes it: nodes grouped into pools by role, the
//! round-robin choice among them. Connections to a node are its [`Endpoint`].
//!
//! Health and admission control (later) plug in at [`Pool::candidates`]: it is
//! the one place that decides which nodes a request may try, and in which order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{Config, Role};
use crate::router::Route;
use crate::upstream::Endpoint;

/// One Odoo node.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// `host:port`.
    pub address: String,
    pub role: Role,
    pub workers: u32,
    /// How to reach it, and its idle keep-alive connections.
    pub endpoint: Endpoint,
}

/// Nodes that can serve one route, with a round-robin cursor.
#[derive(Debug)]
pub struct Pool {
    /// Name used in logs and errors.
    pub name: &'static str,
    pub nodes: Vec<Arc<Node>>,
    next: AtomicUsize,
}

impl Pool {
    fn new(name: &'static str, nodes: Vec<Arc<Node>>) -> Pool {
        Pool {
            name,
            nodes,
            next: AtomicUsize::new(0),
        }
    }

    /// Every node once, starting one further than the previous request did:
    /// round robin, with the rest as fallbacks in order.
    pub fn candidates(&self) -> impl Iterator<Item = &Arc<Node>> {
        let n = self.nodes.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| &self.nodes[(start + i) % n])
    }
}

/// All pools, built once from the config.
#[derive(Debug)]
pub struct Topology {
    pub interactive: Pool,
    /// Gevent nodes, or the interactive nodes when the cluster has no gevent node.
    pub bus: Pool,
    /// Declared so the edge knows and reports them; never sent anything.
    pub cron: Vec<Arc<Node>>,
    /// True when bus traffic falls back to interactive nodes.
    pub bus_on_interactive: bool,
}

impl Topology {
    pub fn new(config: &Config) -> Topology {
        let nodes = |role| -> Vec<Arc<Node>> {
            config
                .nodes_with_role(role)
                .map(|n| {
                    Arc::new(Node {
                        name: n.name.clone(),
                        address: n.address.clone(),
                        role: n.role,
                        workers: n.workers,
                        endpoint: Endpoint::new(&n.address),
                    })
                })
                .collect()
        };
        let interactive = nodes(Role::Interactive);
        let gevent = nodes(Role::Gevent);
        let bus_on_interactive = gevent.is_empty();
        let bus = if bus_on_interactive {
            Pool::new("interactive", interactive.clone())
        } else {
            Pool::new("gevent", gevent)
        };
        Topology {
            interactive: Pool::new("interactive", interactive),
            bus,
            cron: nodes(Role::Cron),
            bus_on_interactive,
        }
    }

    /// The pool that serves a route.
    pub fn pool(&self, route: Route) -> &Pool {
        match route {
            Route::Bus => &self.bus,
            Route::Interactive => &self.interactive,
        }
    }
}
