//! Admission and membership rules, on paused time.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::NodeConfig;

fn probe() -> Probe {
    Probe {
        path: "/web/health".into(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(3),
        status: 200,
        rise: 2,
        fall: 3,
    }
}

fn node(name: &str, workers: u32) -> Arc<Node> {
    Arc::new(Node::new(&NodeConfig {
        name: name.into(),
        address: "127.0.0.1:9".into(),
        role: Role::Interactive,
        workers,
        drain: false,
        probe: probe(),
    }))
}

fn pool(workers: &[u32], queue_length: usize, when_all_down: WhenAllDown) -> Arc<Pool> {
    let nodes = workers
        .iter()
        .enumerate()
        .map(|(i, &w)| node(&format!("web{i}"), w))
        .collect();
    Arc::new(Pool::new(
        "interactive",
        nodes,
        PoolSettings {
            limited: true,
            queue_length,
            queue_timeout: Duration::from_secs(10),
            when_all_down,
        },
    ))
}

fn take_down(node: &Node) {
    for _ in 0..node.probe.fall {
        node.record_failure();
    }
    assert!(!node.is_up());
}

#[tokio::test(start_paused = true)]
async fn requests_go_to_the_least_busy_node_round_robin_among_ties() {
    let pool = pool(&[4, 4], 10, WhenAllDown::Open);
    let a = pool.acquire(&[]).await.unwrap();
    let b = pool.acquire(&[]).await.unwrap();
    assert_ne!(a.index(), b.index(), "ties alternate");
    let c = pool.acquire(&[]).await.unwrap();
    drop(b);
    // c's node has 2 in flight, the other 0 (b left): the next goes there.
    let d = pool.acquire(&[]).await.unwrap();
    assert_ne!(d.index(), c.index());
    assert_eq!(pool.in_flight().iter().sum::<u32>(), 3);
    drop((a, c, d));
    assert_eq!(pool.in_flight(), vec![0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_node_never_gets_more_than_its_workers_and_waiters_are_served_in_order() {
    let pool = pool(&[2], 10, WhenAllDown::Open);
    let first = pool.acquire(&[]).await.unwrap();
    let second = pool.acquire(&[]).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for id in 0..3 {
        let pool = pool.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let lease = pool.acquire(&[]).await.unwrap();
            tx.send((id, lease)).unwrap();
        });
        // Queue them in a known order.
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    assert_eq!(pool.queued(), 3);
    assert_eq!(pool.in_flight(), vec![2]);
    drop(first);
    let (id, lease0) = rx.recv().await.unwrap();
    assert_eq!(id, 0, "first come, first served");
    drop(second);
    let (id, _lease1) = rx.recv().await.unwrap();
    assert_eq!(id, 1);
    assert_eq!(
        pool.in_flight(),
        vec![2],
        "a handed-over worker stays counted"
    );
    drop(lease0);
    let (id, _lease2) = rx.recv().await.unwrap();
    assert_eq!(id, 2);
    assert_eq!(pool.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_and_a_long_wait_are_refused() {
    let pool = pool(&[1], 1, WhenAllDown::Open);
    let _busy = pool.acquire(&[]).await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&[]).await.map(|l| l.index()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.queued(), 1);
    assert_eq!(pool.acquire(&[]).await.unwrap_err(), Refusal::QueueFull);
    // Paused time: the queue timeout (10 s) passes at once.
    assert_eq!(waiting.await.unwrap(), Err(Refusal::QueueTimeout));
    assert_eq!(pool.queued(), 0, "a waiter that gave up leaves the queue");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_request_is_dropped_leaves_the_queue_and_loses_no_worker() {
    let pool = pool(&[1], 10, WhenAllDown::Open);
    let busy = pool.acquire(&[]).await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&[]).await.map(|l| l.index()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.queued(), 1);
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(pool.queued(), 0);
    drop(busy);
    assert_eq!(
        pool.in_flight(),
        vec![0],
        "the freed worker is free, not leaked"
    );
    let again = pool.acquire(&[]).await.unwrap();
    assert_eq!(again.index(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_skips_the_nodes_it_tried_even_in_the_queue() {
    let pool = pool(&[1, 1], 10, WhenAllDown::Open);
    let a = pool.acquire(&[]).await.unwrap();
    let b = pool.acquire(&[]).await.unwrap();
    let (a_index, b_index) = (a.index(), b.index());
    let retry = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&[a_index]).await.map(|l| l.index()) })
    };
    tokio::task::yield_now().await;
    drop(a);
    tokio::task::yield_now().await;
    assert_eq!(pool.queued(), 1, "a's worker is no use to a retry of a");
    drop(b);
    assert_eq!(retry.await.unwrap(), Ok(b_index));
    assert_eq!(
        pool.acquire(&[0, 1]).await.unwrap_err(),
        Refusal::Exhausted,
        "every node tried"
    );
}

#[tokio::test(start_paused = true)]
async fn down_and_draining_nodes_take_nothing_unless_the_pool_fails_open() {
    let open = pool(&[4, 4], 10, WhenAllDown::Open);
    take_down(&open.nodes[0]);
    for _ in 0..4 {
        assert_eq!(open.acquire(&[]).await.unwrap().index(), 1);
    }
    take_down(&open.nodes[1]);
    // Nothing is up: best effort over every node.
    let a = open.acquire(&[]).await.unwrap();
    let b = open.acquire(&[]).await.unwrap();
    assert_ne!(a.index(), b.index());
    assert!(open.nodes[0].set_draining(true));
    assert_eq!(open.acquire(&[]).await.unwrap().index(), 1);

    let closed = pool(&[4, 4], 10, WhenAllDown::Closed);
    take_down(&closed.nodes[0]);
    take_down(&closed.nodes[1]);
    assert_eq!(closed.acquire(&[]).await.unwrap_err(), Refusal::AllDown);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_refused_when_the_last_node_goes_down_in_a_closed_pool() {
    let pool = pool(&[1], 10, WhenAllDown::Closed);
    let _busy = pool.acquire(&[]).await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&[]).await.map(|l| l.index()) })
    };
    tokio::task::yield_now().await;
    take_down(&pool.nodes[0]);
    pool.refresh();
    assert_eq!(waiting.await.unwrap(), Err(Refusal::AllDown));
}

#[tokio::test(start_paused = true)]
async fn a_probe_gets_a_worker_only_when_one_is_free() {
    let pool = pool(&[1], 10, WhenAllDown::Open);
    let busy = pool.acquire(&[]).await.unwrap();
    assert!(
        pool.try_acquire_node(0).is_none(),
        "busy: the probe is skipped"
    );
    drop(busy);
    let probe = pool.try_acquire_node(0).expect("free worker");
    assert_eq!(pool.in_flight(), vec![1], "a probe holds a worker");
    drop(probe);
    assert_eq!(pool.in_flight(), vec![0]);
}

#[test]
fn rise_and_fall_count_consecutive_outcomes() {
    let n = node("web", 4);
    assert!(n.is_up(), "nodes start up");
    assert_eq!(n.record_failure(), None);
    assert_eq!(n.record_failure(), None);
    n.record_answer();
    assert_eq!(n.record_failure(), None, "an answer broke the streak");
    assert_eq!(n.record_failure(), None);
    assert_eq!(n.record_failure(), Some(Transition::Down));
    assert_eq!(n.record_failure(), None, "one change, one report");
    assert_eq!(n.record_pass(), None);
    n.record_failure();
    assert_eq!(n.record_pass(), None, "a failure restarted the count");
    assert_eq!(n.record_pass(), Some(Transition::Up));
    assert!(n.is_up());
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_last_usable_node_drains_is_refused_at_once() {
    let pool = pool(&[1, 1], 10, WhenAllDown::Open);
    let a = pool.acquire(&[]).await.unwrap();
    let b = pool.acquire(&[]).await.unwrap();
    let (a_index, b_index) = (a.index(), b.index());
    let started = tokio::time::Instant::now();
    let retry = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&[a_index]).await.map(|l| l.index()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.queued(), 1);
    assert!(pool.nodes[b_index].set_draining(true));
    pool.refresh();
    assert_eq!(retry.await.unwrap(), Err(Refusal::Exhausted));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after queue_timeout"
    );
    assert_eq!(pool.queued(), 0);
    drop((a, b));
}
