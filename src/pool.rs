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
//! # Generations
//!
//! A reload builds new pools, and requests already running keep the pools
//! they started with, so a node can be in the pools of several generations
//! at once. The count of busy workers is therefore the [`Node`]'s, not a
//! pool's: every worker-limited pool takes a worker with a compare-and-swap
//! on the node's count, so two pools sharing a node can never admit more
//! than its `workers` between them. Each node knows the worker-limited pools
//! it is in (weakly: a pool lives as long as requests use it), and a freed
//! worker is offered to the waiters of each of them in turn, oldest pool
//! first: a request queued in an old pool at the swap gets a worker (or its
//! 503 at `queue_timeout`) like any other. A kept node's `workers` and probe
//! settings change in place.
//!
//! # Membership
//!
//! A node takes requests while it is up (see [`crate::health`]) and not
//! draining. When none of a pool's nodes is up, `health.when_all_down`
//! decides: `open` treats every non-draining node as eligible (best effort),
//! `closed` refuses with [`Refusal::AllDown`]. A node a reload removed is
//! drained: pools of earlier generations send it nothing new.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use crate::config::{Config, NodeConfig, Probe, Role, WhenAllDown};
use crate::router::Route;
use crate::upstream::Endpoint;

/// One Odoo node.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// The name as a metrics label, shared: counting a request copies no string.
    pub label: Arc<str>,
    /// `host:port`.
    pub address: String,
    pub role: Role,
    /// Odoo workers: the most requests in flight from worker-limited pools.
    /// A reload may change it.
    workers: AtomicU32,
    /// Its active check; a reload may change it.
    probe: ArcSwap<Probe>,
    /// How to reach it, and its idle keep-alive connections.
    pub endpoint: Endpoint,
    /// Requests in flight from worker-limited pools, of every generation:
    /// each holds one of the node's workers.
    busy: AtomicU32,
    /// Requests in flight from unlimited pools (bus traffic): they hold no worker.
    passing: AtomicU32,
    /// The worker-limited pools the node is in, of every generation still
    /// alive: a freed worker may serve a waiter of any of them.
    pools: ArcSwap<Vec<Weak<Pool>>>,
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
    /// When the node was last probed (or first scheduled for a probe): a
    /// reload's new probe task keeps the cadence instead of starting a full
    /// interval over.
    probe_anchor: Mutex<Option<tokio::time::Instant>>,
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
    /// A node as `config` declares it: up, nothing in flight, in no pool yet.
    pub fn new(config: &NodeConfig) -> Node {
        Node {
            name: config.name.clone(),
            label: Arc::from(config.name.as_str()),
            address: config.address.clone(),
            role: config.role,
            workers: AtomicU32::new(config.workers),
            probe: ArcSwap::from_pointee(config.probe.clone()),
            endpoint: Endpoint::new(&config.address),
            busy: AtomicU32::new(0),
            passing: AtomicU32::new(0),
            pools: ArcSwap::from_pointee(Vec::new()),
            up: AtomicBool::new(true),
            draining: AtomicBool::new(config.drain),
            streak: Mutex::new(Streak::default()),
            failing: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            probe_anchor: Mutex::new(None),
        }
    }

    /// Whether `config` names this node: same name, address and role.
    pub fn is(&self, config: &NodeConfig) -> bool {
        self.name == config.name && self.address == config.address && self.role == config.role
    }

    /// Odoo workers declared for the node.
    pub fn workers(&self) -> u32 {
        self.workers.load(Ordering::Acquire)
    }

    /// Sets `workers`; true when that changed it. Waiters may use new
    /// workers once [`Node::refresh_pools`] runs.
    pub fn set_workers(&self, workers: u32) -> bool {
        self.workers.swap(workers, Ordering::AcqRel) != workers
    }

    /// Its active check as configured now.
    pub fn probe(&self) -> Arc<Probe> {
        self.probe.load_full()
    }

    /// Sets its active check; true when that changed it.
    pub fn set_probe(&self, probe: &Probe) -> bool {
        if *self.probe.load_full() == *probe {
            return false;
        }
        self.probe.store(Arc::new(probe.clone()));
        true
    }

    /// Takes one of the node's workers if one is free.
    fn take_worker(&self) -> bool {
        let limit = self.workers().max(1);
        self.busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Whether a worker is free now.
    fn has_free_worker(&self) -> bool {
        self.busy.load(Ordering::SeqCst) < self.workers().max(1)
    }

    /// Joins a worker-limited pool: its waiters are offered this node's freed workers.
    fn join(&self, pool: &Weak<Pool>) {
        self.pools.rcu(|pools| {
            let mut live: Vec<Weak<Pool>> = pools
                .iter()
                .filter(|p| p.strong_count() > 0)
                .cloned()
                .collect();
            live.push(pool.clone());
            live
        });
    }

    /// Offers free workers to the waiters of every pool the node is in, of
    /// every generation, oldest pool first; after a worker is freed, or the
    /// node changed state (up, down, drain, workers).
    pub fn refresh_pools(&self) {
        for pool in self.pools.load().iter() {
            if let Some(pool) = pool.upgrade() {
                pool.refresh();
            }
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
        if !self.is_up() && streak.passes >= self.probe.load().rise {
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
        if self.is_up() && streak.failures >= self.probe.load().fall {
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

    /// When a new probe task should first probe: one (new) `interval` after
    /// the node's last probe, or after it was first scheduled if never
    /// probed; now if that is past. So reloads, however frequent, never hold
    /// a probe off, and a changed interval counts from the last probe.
    pub fn next_probe(&self, interval: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut anchor = self
            .probe_anchor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (*anchor.get_or_insert(now) + interval).max(now)
    }

    /// The probe loop ticked now.
    pub fn probe_ticked(&self) {
        *self
            .probe_anchor
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
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

/// Nodes that can serve one route, and the requests waiting for a worker.
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
        let node = &self.pool.nodes[self.index];
        if self.pool.settings.limited {
            node.busy.fetch_sub(1, Ordering::SeqCst);
            // The worker may go to a waiter of this pool or of another
            // generation's. A waiter that left gives back the lease it was
            // handed: it is dropped there, outside every lock.
            node.refresh_pools();
        } else {
            node.passing.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Pool {
    /// A pool of `nodes`; a worker-limited one registers with each node, so
    /// that workers freed by other pools reach its waiters.
    pub fn new(name: &'static str, nodes: Vec<Arc<Node>>, settings: PoolSettings) -> Arc<Pool> {
        Arc::new_cyclic(|me| {
            if settings.limited {
                for node in &nodes {
                    node.join(me);
                }
            }
            Pool {
                name,
                nodes,
                settings,
                state: Mutex::new(State::default()),
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests in flight to each node, in pool order: for a worker-limited
    /// pool, the node's busy workers (every generation's pools together); for
    /// an unlimited one, the node's requests from unlimited pools.
    pub fn in_flight(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| self.load(n)).collect()
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// The count this pool balances on and, when limited, caps.
    fn load(&self, node: &Node) -> u32 {
        let count = if self.settings.limited {
            &node.busy
        } else {
            &node.passing
        };
        count.load(Ordering::SeqCst)
    }

    /// Counts a request on `node`: a worker for a limited pool, if one is free.
    fn take(&self, node: &Node) -> bool {
        if self.settings.limited {
            node.take_worker()
        } else {
            node.passing.fetch_add(1, Ordering::SeqCst);
            true
        }
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
    /// fewest in flight; round robin among ties. Its worker is taken.
    fn pick(&self, state: &mut State, membership: Membership, exclude: &[usize]) -> Option<usize> {
        let n = self.nodes.len();
        // Bounded in practice: a turn is repeated only when another request
        // (of another pool) took the chosen node's last worker meanwhile.
        loop {
            let start = state.next;
            let mut best: Option<(usize, u32)> = None;
            for offset in 0..n {
                let i = (start + offset) % n;
                if exclude.contains(&i) || !self.eligible(i, membership) {
                    continue;
                }
                let node = &self.nodes[i];
                if self.settings.limited && !node.has_free_worker() {
                    continue;
                }
                let load = self.load(node);
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                }
            }
            let (i, _) = best?;
            if self.take(&self.nodes[i]) {
                state.next = (i + 1) % n.max(1);
                return Some(i);
            }
        }
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
            // node this request may skip, and a worker may have been freed
            // by another pool since `pick` looked: try to serve it now.
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

    /// A worker on node `index` for a probe, only if one is free and no
    /// request waiting here may take it; never queued.
    pub fn try_acquire_node(self: &Arc<Self>, index: usize) -> Option<Lease> {
        // Under the lock: a worker freed a moment ago, not yet handed to a
        // waiter that may use it, is theirs (a freed worker is counted free
        // before the pools' waiters are offered it).
        let state = self.lock();
        let theirs = self.membership().is_some_and(|m| self.eligible(index, m))
            && state.waiters.iter().any(|w| !w.exclude.contains(&index));
        if theirs {
            return None;
        }
        if !self.take(&self.nodes[index]) {
            return None;
        }
        drop(state);
        Some(Lease {
            pool: self.clone(),
            index,
        })
    }

    /// Re-examines the queue after a node changed state (up, down, drain) or
    /// freed a worker.
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
                    if !self.has_free_worker(membership) {
                        break;
                    }
                    i += 1;
                }
            }
        }
        handoffs
    }

    fn has_free_worker(&self, membership: Membership) -> bool {
        !self.settings.limited
            || (0..self.nodes.len())
                .any(|i| self.eligible(i, membership) && self.nodes[i].has_free_worker())
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

/// All pools of one generation: built from the config at start and at each reload.
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
    /// Pools of new nodes, as at start.
    pub fn new(config: &Config) -> Topology {
        Topology::build(config, |n| Arc::new(Node::new(n)))
    }

    /// Pools of the nodes `node` gives for each declared node (a reload
    /// passes on the running ones it keeps).
    pub fn build(config: &Config, mut node: impl FnMut(&NodeConfig) -> Arc<Node>) -> Topology {
        let mut nodes =
            |role| -> Vec<Arc<Node>> { config.nodes_with_role(role).map(&mut node).collect() };
        let interactive = nodes(Role::Interactive);
        let gevent = nodes(Role::Gevent);
        let cron = nodes(Role::Cron);
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
            interactive: Pool::new("interactive", interactive, limited),
            bus,
            cron,
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
