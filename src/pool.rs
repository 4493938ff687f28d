//! The cluster as the edge routes it: nodes grouped into pools by role, which
//! node a request goes to, and how many requests each node has at once.
//!
//! # Admission control
//!
//! A prefork Odoo worker serves one connection at a time; a request sent to a
//! node whose workers are all busy waits in its listen backlog, invisible,
//! behind whatever they are doing (a 5-minute report). So the interactive pool
//! never has more requests in flight to a node than the node's `workers`. A
//! request that finds every worker busy waits in one FIFO queue here, bounded
//! in length and in time, and takes the first worker that frees up on any node
//! it may use. A request's [`Lease`] is its worker: it is released when the
//! node's reply has been read off the node (not when the client has read it).
//!
//! Among nodes with a free worker a request goes to the one with the fewest
//! requests in flight, round robin among ties. The bus pool (websockets and
//! longpolling on gevent nodes) has no worker limit: a tunnel does not hold a
//! worker, so it only holds its lease until the node has answered the
//! handshake.
//!
//! # Membership
//!
//! A node takes requests while it is up (see [`crate::health`]) and not
//! draining. When none of a pool's nodes is up, `health.when_all_down`
//! decides: `open` treats every non-draining node as eligible (best effort),
//! `closed` refuses with [`Refusal::AllDown`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::{self, Config, Probe, Role, WhenAllDown};
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
    /// Its active check.
    pub probe: Probe,
    /// How to reach it, and its idle keep-alive connections.
    pub endpoint: Endpoint,
    /// Passes its checks; nodes start up, so traffic flows from the first request.
    up: AtomicBool,
    /// Takes no new requests (config `drain = true`).
    draining: AtomicBool,
    /// Consecutive check outcomes, for rise and fall.
    streak: Mutex<Streak>,
    /// A failure streak is running: successful requests must break it.
    failing: AtomicBool,
    /// The node answered a request since the probe loop last looked.
    answered: AtomicBool,
}

/// Consecutive passes or failures, whichever came last.
#[derive(Debug, Default)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// A change of a node's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl Node {
    fn new(config: &config::NodeConfig) -> Node {
        Node {
            name: config.name.clone(),
            address: config.address.clone(),
            role: config.role,
            workers: config.workers,
            probe: config.probe.clone(),
            endpoint: Endpoint::new(&config.address),
            up: AtomicBool::new(true),
            draining: AtomicBool::new(config.drain),
            streak: Mutex::new(Streak::default()),
            failing: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Sets drain; true when that changed it.
    pub fn set_draining(&self, drain: bool) -> bool {
        self.draining.swap(drain, Ordering::AcqRel) != drain
    }

    /// Counts a passed probe: `rise` in a row bring a down node up.
    pub fn record_pass(&self) -> Option<Transition> {
        let mut streak = self.streak.lock().unwrap_or_else(PoisonError::into_inner);
        self.failing.store(false, Ordering::Release);
        streak.failures = 0;
        streak.passes = streak.passes.saturating_add(1);
        if !self.is_up() && streak.passes >= self.probe.rise {
            self.up.store(true, Ordering::Release);
            return Some(Transition::Up);
        }
        None
    }

    /// Counts a failed probe or a failed request: `fall` in a row take the node down.
    pub fn record_failure(&self) -> Option<Transition> {
        let mut streak = self.streak.lock().unwrap_or_else(PoisonError::into_inner);
        self.failing.store(true, Ordering::Release);
        streak.passes = 0;
        streak.failures = streak.failures.saturating_add(1);
        if self.is_up() && streak.failures >= self.probe.fall {
            self.up.store(false, Ordering::Release);
            return Some(Transition::Down);
        }
        None
    }

    /// A request the node answered: the failure streak is broken. Only probes
    /// bring a down node back.
    pub fn record_answer(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
        if self.failing.load(Ordering::Acquire) {
            let mut streak = self.streak.lock().unwrap_or_else(PoisonError::into_inner);
            streak.failures = 0;
            self.failing.store(false, Ordering::Release);
        }
    }

    /// Whether the node answered a request since the last call.
    pub fn take_answered(&self) -> bool {
        self.answered.swap(false, Ordering::Relaxed)
    }
}

/// Why a pool gave no node to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No node is up and `when_all_down = "closed"`, or every node drains.
    AllDown,
    /// Every worker busy and the queue full.
    QueueFull,
    /// Every worker stayed busy for `queue_timeout`.
    QueueTimeout,
    /// Every node the request may still use was tried already.
    Exhausted,
}

/// How a pool admits requests.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Cap requests in flight per node at its `workers`.
    pub limited: bool,
    pub queue_length: usize,
    pub queue_timeout: Duration,
    pub when_all_down: WhenAllDown,
}

/// Nodes that can serve one route, with their requests in flight and the
/// requests waiting for a worker.
#[derive(Debug)]
pub struct Pool {
    /// Name used in logs and errors.
    pub name: &'static str,
    pub nodes: Vec<Arc<Node>>,
    settings: PoolSettings,
    state: Mutex<State>,
}

/// Which nodes a pool uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Those up and not draining.
    Up,
    /// None is up and the pool fails open: every node not draining.
    AllLive,
}

#[derive(Debug, Default)]
struct State {
    in_flight: Vec<u32>,
    waiters: VecDeque<Waiter>,
    /// Round-robin cursor among equally loaded nodes.
    next: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    /// Nodes this request already tried.
    exclude: Vec<usize>,
    tx: oneshot::Sender<Lease>,
}

/// A request's place on a node: one worker of an interactive node. Released
/// when dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    index: usize,
}

impl Lease {
    pub fn node(&self) -> &Arc<Node> {
        &self.pool.nodes[self.index]
    }

    /// The node's position in its pool, for [`Pool::acquire`]'s `exclude`.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let handoffs = {
            let mut state = self.pool.lock();
            state.in_flight[self.index] = state.in_flight[self.index].saturating_sub(1);
            self.pool.dispatch(&mut state)
        };
        // Sent outside the lock: a lease that comes back (its waiter left) is
        // dropped here and takes the lock itself.
        Pool::hand_over(handoffs);
    }
}

impl Pool {
    pub fn new(name: &'static str, nodes: Vec<Arc<Node>>, settings: PoolSettings) -> Pool {
        let state = State {
            in_flight: vec![0; nodes.len()],
            ..State::default()
        };
        Pool {
            name,
            nodes,
            settings,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests in flight to each node, in pool order.
    pub fn in_flight(&self) -> Vec<u32> {
        self.lock().in_flight.clone()
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Which nodes may take requests now; `None`: none may.
    fn membership(&self) -> Option<Membership> {
        let mut live = false;
        for node in &self.nodes {
            if !node.is_draining() {
                if node.is_up() {
                    return Some(Membership::Up);
                }
                live = true;
            }
        }
        (live && self.settings.when_all_down == WhenAllDown::Open).then_some(Membership::AllLive)
    }

    fn eligible(&self, i: usize, membership: Membership) -> bool {
        let node = &self.nodes[i];
        !node.is_draining() && (membership == Membership::AllLive || node.is_up())
    }

    /// The node for the next request: eligible, not excluded, a free worker,
    /// fewest in flight; round robin among ties.
    fn pick(&self, state: &mut State, membership: Membership, exclude: &[usize]) -> Option<usize> {
        let n = self.nodes.len();
        let start = state.next;
        let mut best: Option<usize> = None;
        for offset in 0..n {
            let i = (start + offset) % n;
            if exclude.contains(&i) || !self.eligible(i, membership) {
                continue;
            }
            if self.settings.limited && state.in_flight[i] >= self.nodes[i].workers.max(1) {
                continue;
            }
            if best.is_none_or(|b| state.in_flight[i] < state.in_flight[b]) {
                best = Some(i);
            }
        }
        if let Some(i) = best {
            state.in_flight[i] += 1;
            state.next = (i + 1) % n.max(1);
        }
        best
    }

    /// A worker for a request that has not tried the nodes in `exclude`:
    /// at once if one is free, else after waiting in the queue.
    pub async fn acquire(self: &Arc<Self>, exclude: &[usize]) -> Result<Lease, Refusal> {
        let (id, rx) = {
            let mut state = self.lock();
            let Some(membership) = self.membership() else {
                return Err(Refusal::AllDown);
            };
            if !(0..self.nodes.len()).any(|i| !exclude.contains(&i) && self.eligible(i, membership))
            {
                return Err(Refusal::Exhausted);
            }
            // First come, first served: nobody overtakes a waiting request.
            if state.waiters.is_empty()
                && let Some(index) = self.pick(&mut state, membership, exclude)
            {
                return Ok(Lease {
                    pool: self.clone(),
                    index,
                });
            }
            if !self.settings.limited {
                // Nothing to wait for: a node changed state since the check above.
                return Err(Refusal::Exhausted);
            }
            if state.waiters.len() >= self.settings.queue_length {
                return Err(Refusal::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.waiters.push_back(Waiter {
                id,
                exclude: exclude.to_vec(),
                tx,
            });
            // The queue may be non-empty only because its head waits for a
            // node this request may skip: try to serve it now.
            let handoffs = self.dispatch(&mut state);
            drop(state);
            Pool::hand_over(handoffs);
            (id, rx)
        };
        let mut guard = WaitGuard {
            pool: self,
            id,
            rx: Some(rx),
        };
        let rx = guard.rx.as_mut().expect("set above");
        match tokio::time::timeout(self.settings.queue_timeout, rx).await {
            Ok(Ok(lease)) => {
                guard.rx = None;
                Ok(lease)
            }
            // The sender was dropped: no node may take this request any more.
            Ok(Err(_)) => {
                guard.rx = None;
                Err(match self.membership() {
                    None => Refusal::AllDown,
                    Some(_) => Refusal::Exhausted,
                })
            }
            Err(_) => {
                // A lease handed over at the last moment is used, not wasted.
                let rx = guard.rx.take();
                guard.remove();
                match rx.map(|mut rx| rx.try_recv()) {
                    Some(Ok(lease)) => Ok(lease),
                    _ => Err(Refusal::QueueTimeout),
                }
            }
        }
    }

    /// A worker on node `index` for a probe, only if one is free; never
    /// queued. (A free worker with requests waiting is one they may not use:
    /// a freed worker goes to a waiter under the same lock.)
    pub fn try_acquire_node(self: &Arc<Self>, index: usize) -> Option<Lease> {
        let mut state = self.lock();
        if self.settings.limited && state.in_flight[index] >= self.nodes[index].workers.max(1) {
            return None;
        }
        state.in_flight[index] += 1;
        Some(Lease {
            pool: self.clone(),
            index,
        })
    }

    /// Re-examines the queue after a node changed state (up, down, drain).
    pub fn refresh(self: &Arc<Self>) {
        let handoffs = {
            let mut state = self.lock();
            self.dispatch(&mut state)
        };
        Pool::hand_over(handoffs);
    }

    /// Gives free workers to waiters, oldest first; refuses them all when no
    /// node may take requests any more.
    fn dispatch(self: &Arc<Self>, state: &mut State) -> Vec<(oneshot::Sender<Lease>, Lease)> {
        let mut handoffs = Vec::new();
        if state.waiters.is_empty() {
            return handoffs;
        }
        let Some(membership) = self.membership() else {
            // Dropping the senders tells every waiter.
            state.waiters.clear();
            return handoffs;
        };
        // A retry whose remaining nodes went down or drain can never be
        // served: dropping its sender tells it at once.
        state.waiters.retain(|w| {
            (0..self.nodes.len()).any(|i| !w.exclude.contains(&i) && self.eligible(i, membership))
        });
        let mut i = 0;
        while i < state.waiters.len() {
            let exclude = std::mem::take(&mut state.waiters[i].exclude);
            match self.pick(state, membership, &exclude) {
                Some(index) => {
                    let waiter = state.waiters.remove(i).expect("index in range");
                    handoffs.push((
                        waiter.tx,
                        Lease {
                            pool: self.clone(),
                            index,
                        },
                    ));
                }
                None => {
                    state.waiters[i].exclude = exclude;
                    if !self.has_free_worker(state, membership) {
                        break;
                    }
                    i += 1;
                }
            }
        }
        handoffs
    }

    fn has_free_worker(&self, state: &State, membership: Membership) -> bool {
        !self.settings.limited
            || (0..self.nodes.len()).any(|i| {
                self.eligible(i, membership) && state.in_flight[i] < self.nodes[i].workers.max(1)
            })
    }

    fn hand_over(handoffs: Vec<(oneshot::Sender<Lease>, Lease)>) {
        for (tx, lease) in handoffs {
            // A waiter that left gives the lease back: dropping it releases it.
            drop(tx.send(lease));
        }
    }
}

/// Takes a waiter out of the queue if its request gives up (timeout, client
/// gone) before it got a worker.
struct WaitGuard<'a> {
    pool: &'a Arc<Pool>,
    id: u64,
    rx: Option<oneshot::Receiver<Lease>>,
}

impl WaitGuard<'_> {
    fn remove(&mut self) {
        let mut state = self.pool.lock();
        if let Some(pos) = state.waiters.iter().position(|w| w.id == self.id) {
            state.waiters.remove(pos);
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.remove();
            // A lease already in the channel is released when `rx` drops,
            // after the lock above is gone.
        }
    }
}

/// All pools, built once from the config.
#[derive(Debug)]
pub struct Topology {
    pub interactive: Arc<Pool>,
    /// Gevent nodes, or the interactive nodes when the cluster has no gevent node.
    pub bus: Arc<Pool>,
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
                .map(|n| Arc::new(Node::new(n)))
                .collect()
        };
        let interactive = nodes(Role::Interactive);
        let gevent = nodes(Role::Gevent);
        let bus_on_interactive = gevent.is_empty();
        let when_all_down = config.health.when_all_down;
        let limited = PoolSettings {
            limited: true,
            queue_length: config.admission.queue_length,
            queue_timeout: config.admission.queue_timeout,
            when_all_down,
        };
        let unlimited = PoolSettings {
            limited: false,
            queue_length: 0,
            queue_timeout: config.admission.queue_timeout,
            when_all_down,
        };
        let bus = if bus_on_interactive {
            Pool::new("interactive", interactive.clone(), unlimited)
        } else {
            Pool::new("gevent", gevent, unlimited)
        };
        Topology {
            interactive: Arc::new(Pool::new("interactive", interactive, limited)),
            bus: Arc::new(bus),
            cron: nodes(Role::Cron),
            bus_on_interactive,
        }
    }

    /// The pool that serves a route.
    pub fn pool(&self, route: Route) -> &Arc<Pool> {
        match route {
            Route::Bus => &self.bus,
            Route::Interactive => &self.interactive,
        }
    }

    /// Every node once: interactive, then gevent, then cron.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        for node in self
            .interactive
            .nodes
            .iter()
            .chain(&self.bus.nodes)
            .chain(&self.cron)
        {
            if !nodes.iter().any(|n| Arc::ptr_eq(n, node)) {
                nodes.push(node.clone());
            }
        }
        nodes
    }

    /// Every pool a node is in (one, or two when bus traffic falls back to
    /// interactive nodes).
    pub fn pools_of<'a>(&'a self, node: &'a Arc<Node>) -> impl Iterator<Item = &'a Arc<Pool>> {
        [&self.interactive, &self.bus]
            .into_iter()
            .filter(move |p| p.nodes.iter().any(|n| Arc::ptr_eq(n, node)))
    }
}

#[cfg(test)]
mod tests;
