//! Active and passive health checks: they decide which nodes are in a pool.
//!
//! Every routed node gets a probe task: `GET /web/health` on interactive
//! nodes, `GET /websocket/health` on gevent nodes (configurable per role and
//! per node), every `interval`, passed when the status is the expected one
//! within `timeout`. `rise` passes in a row bring a down node up; `fall`
//! failures in a row take it down, and failures of live traffic (refused,
//! reset, no reply in time) count towards `fall` as probe failures do. A
//! request the node answers breaks the failure streak; only probes bring a
//! down node back. One log line per change of state, never per probe.
//!
//! Cron nodes (`http_enable = False`) have no HTTP port: no probe task, no
//! connection, ever.
//!
//! Probe tasks belong to one generation of the topology: a reload stops them
//! and starts the next topology's. A node the reload keeps keeps its health
//! (up or down, and its streak) and is probed with its new settings, at the
//! same cadence (the next probe one new interval after the last one, however
//! often reloads come); a new node starts up, as at start, its first probe
//! one interval after the reload.
//!
//! # Probes and busy workers
//!
//! On a prefork node a probe takes a worker like any request, so it takes a
//! worker slot of the node's admission control: the edge never has more
//! connections to a node than `workers`, probes included. When every slot is
//! held by requests the edge sent, the probe is not sent: the node is visibly
//! working, and its health is judged by those requests themselves. If the
//! node answered any of them since the last tick, that counts as a pass;
//! otherwise the probe is skipped, neither a pass nor a failure (requests that
//! fail count as failures on their own, as passive checks). A probe that could
//! only time out in the node's backlog behind a long report would be a false
//! "down".

use std::sync::Arc;
use std::time::Duration;

use http::{Request, header};
use http_body_util::BodyExt as _;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Role;
use crate::pool::{Node, Pool, Topology, Transition};
use crate::proxy::UpstreamBody;
use crate::shutdown::Lifecycle;

/// Starts one probe task per routed node of `topology`. They stop at the
/// graceful stop, or earlier when the returned token is cancelled (a reload
/// replaces them with the next topology's).
pub fn spawn(
    topology: &Topology,
    connect_timeout: Duration,
    lifecycle: &Lifecycle,
) -> CancellationToken {
    let stop = lifecycle.graceful.child_token();
    let interactive = &topology.interactive;
    // Cron nodes have no HTTP port: never probed.
    for node in topology
        .nodes()
        .into_iter()
        .filter(|n| n.role != Role::Cron)
    {
        // The slot a probe needs on a worker-limited node.
        let slot = interactive
            .nodes
            .iter()
            .position(|n| Arc::ptr_eq(n, &node))
            .map(|index| (interactive.clone(), index));
        let stop = stop.clone();
        lifecycle.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = probe_loop(node, slot, connect_timeout) => {}
            }
        });
    }
    stop
}

async fn probe_loop(node: Arc<Node>, slot: Option<(Arc<Pool>, usize)>, connect_timeout: Duration) {
    // Nodes start up, and live traffic finds a dead one at once (refused
    // connections count): the first probe comes one interval in. A kept
    // node's new task after a reload keeps the old one's cadence.
    let interval = node.probe().interval;
    let mut ticks = tokio::time::interval_at(node.next_probe(interval), interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        node.probe_ticked();
        let answered = node.take_answered();
        let lease = match &slot {
            Some((pool, index)) => pool.try_acquire_node(*index),
            None => None,
        };
        let outcome = match (&slot, lease) {
            (Some(_), None) if answered => {
                // Every worker busy with edge requests, and the node answers
                // them: that is a pass (a down node in a fail-open pool comes
                // back this way while the queue keeps it saturated).
                Ok(())
            }
            (Some(_), None) => {
                debug!(node = %node.name, "probe skipped: every worker is busy with edge requests");
                continue;
            }
            (_, lease) => {
                let outcome = probe(&node, connect_timeout).await;
                drop(lease);
                outcome
            }
        };
        let transition = match &outcome {
            Ok(()) => node.record_pass(),
            Err(reason) => {
                debug!(node = %node.name, %reason, "probe failed");
                node.record_failure()
            }
        };
        if let Some(transition) = transition {
            report(
                &node,
                transition,
                outcome.err().as_deref().unwrap_or("probe passed"),
            );
            node.refresh_pools();
        }
    }
}

/// One probe: the expected status within the timeout, body read to its end.
async fn probe(node: &Node, connect_timeout: Duration) -> Result<(), String> {
    let probe = node.probe();
    let mut request = Request::new(UpstreamBody::empty());
    *request.uri_mut() = probe.path.parse().map_err(|e| format!("path: {e}"))?;
    if let Ok(host) = header::HeaderValue::from_str(&node.address) {
        request.headers_mut().insert(header::HOST, host);
    }
    request.headers_mut().insert(
        header::USER_AGENT,
        header::HeaderValue::from_static("odoo-edge-health"),
    );
    let attempt = async {
        let (response, mut driver) = node
            .endpoint
            .send(request, connect_timeout.min(probe.timeout))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        driver
            .drive(response.into_body().collect())
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        if status.as_u16() == probe.status {
            Ok(())
        } else {
            Err(format!(
                "status {} (expected {})",
                status.as_u16(),
                probe.status
            ))
        }
    };
    match tokio::time::timeout(probe.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete reply within {:?}", probe.timeout)),
    }
}

/// Counts a failure of live traffic to `node` (refused, reset, no reply).
pub fn passive_failure(node: &Node, reason: &str) {
    if let Some(transition) = node.record_failure() {
        report(node, transition, reason);
        node.refresh_pools();
    }
}

fn report(node: &Node, transition: Transition, reason: &str) {
    let role = node.role;
    match transition {
        Transition::Up => info!(
            node = %node.name,
            %role,
            "node up: {} checks passed in a row",
            node.probe().rise
        ),
        Transition::Down => warn!(
            node = %node.name,
            %role,
            %reason,
            "node down: {} failures in a row",
            node.probe().fall
        ),
    }
}
