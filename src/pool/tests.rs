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
    Pool::new("interactive", nodes, limited(queue_length, when_all_down))
}

fn limited(queue_length: usize, when_all_down: WhenAllDown) -> PoolSettings {
    PoolSettings {
        limited: true,
        queue_length,
        queue_timeout: Duration::from_secs(10),
        when_all_down,
    }
}

fn take_down(node: &Node) {
    for _ in 0..node.probe().fall {
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

// === generations: pools of an old and a new topology sharing nodes ===

/// Waits (on paused time) in `pool`'s queue on a task of its own; its lease
/// comes out of the channel with the node's index.
fn wait_in(
    pool: &Arc<Pool>,
    tx: &tokio::sync::mpsc::UnboundedSender<(&'static str, Lease)>,
    tag: &'static str,
) -> tokio::task::JoinHandle<()> {
    let pool = pool.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let lease = pool.acquire(&[]).await.expect("a worker in time");
        tx.send((tag, lease)).expect("the test listens");
    })
}

/// The next waiter served, within 60 s of paused time (a waiter left
/// unserved times out at 10 s and its task panics).
async fn served(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(&'static str, Lease)>,
) -> (&'static str, Lease) {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a waiter must be served")
        .expect("the test holds a sender")
}

#[tokio::test(start_paused = true)]
async fn two_pools_sharing_a_node_never_exceed_its_workers() {
    let web = node("web", 2);
    let old = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let new = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let a = old.acquire(&[]).await.unwrap();
    let b = new.acquire(&[]).await.unwrap();
    assert_eq!(
        new.in_flight(),
        vec![2],
        "the node's count, both pools together"
    );
    assert!(
        old.try_acquire_node(0).is_none(),
        "no third worker for a probe"
    );
    assert!(new.try_acquire_node(0).is_none());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _w1 = wait_in(&new, &tx, "new");
    let _w2 = wait_in(&old, &tx, "old");
    tokio::task::yield_now().await;
    assert_eq!(
        (old.queued(), new.queued()),
        (1, 1),
        "both wait: 2 of 2 busy"
    );
    assert!(rx.try_recv().is_err());
    drop(a);
    let (tag, first) = served(&mut rx).await;
    assert_eq!(
        tag, "old",
        "a freed worker is offered to the oldest pool first"
    );
    tokio::task::yield_now().await;
    assert!(rx.try_recv().is_err(), "one freed worker serves one waiter");
    assert_eq!(old.in_flight(), vec![2]);
    drop(b);
    let (tag, second) = served(&mut rx).await;
    assert_eq!(tag, "new");
    assert_eq!((old.queued(), new.queued()), (0, 0));
    assert_eq!(web.busy.load(Ordering::SeqCst), 2);
    drop((first, second));
    assert_eq!(old.in_flight(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn a_worker_freed_by_the_old_pool_serves_a_waiter_of_the_new_one_and_back() {
    let web = node("web", 1);
    let old = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let new = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();

    let held_by_old = old.acquire(&[]).await.unwrap();
    let _waiting = wait_in(&new, &tx, "new");
    tokio::task::yield_now().await;
    assert_eq!(new.queued(), 1);
    drop(held_by_old);
    let (tag, held_by_new) = served(&mut rx).await;
    assert_eq!(
        tag, "new",
        "the old pool's lease freed the new pool's waiter"
    );

    let _waiting = wait_in(&old, &tx, "old");
    tokio::task::yield_now().await;
    assert_eq!(old.queued(), 1, "queued in the old pool after the swap");
    drop(held_by_new);
    let (tag, lease) = served(&mut rx).await;
    assert_eq!(
        tag, "old",
        "the new pool's lease freed the old pool's waiter"
    );
    drop(lease);
    assert_eq!(new.in_flight(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_of_a_pool_no_longer_referenced_elsewhere_still_gets_a_worker() {
    // The old pool lives only through its waiting request (the edge swapped it out).
    let web = node("web", 1);
    let old = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let new = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let busy = new.acquire(&[]).await.unwrap();
    let waiting = {
        let old = old.clone();
        tokio::spawn(async move { old.acquire(&[]).await.map(|l| l.index()) })
    };
    tokio::task::yield_now().await;
    drop(old);
    drop(busy);
    assert_eq!(waiting.await.unwrap(), Ok(0));
    assert_eq!(new.in_flight(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn a_changed_workers_value_applies_to_the_running_node() {
    let web = node("web", 1);
    let pool = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = pool.acquire(&[]).await.unwrap();
    let _waiting = wait_in(&pool, &tx, "raised");
    tokio::task::yield_now().await;
    assert_eq!(pool.queued(), 1);
    assert!(web.set_workers(2));
    web.refresh_pools();
    let (_, second) = served(&mut rx).await;
    assert_eq!(
        pool.in_flight(),
        vec![2],
        "the second worker is used at once"
    );

    // Lowered below what is in flight: nothing new until under the new value.
    assert!(web.set_workers(1));
    let _waiting = wait_in(&pool, &tx, "lowered");
    tokio::task::yield_now().await;
    drop(first);
    tokio::task::yield_now().await;
    assert!(
        rx.try_recv().is_err(),
        "1 in flight of 1 worker: still waiting"
    );
    assert_eq!(pool.queued(), 1);
    drop(second);
    let (tag, _third) = served(&mut rx).await;
    assert_eq!(tag, "lowered");
    assert_eq!(pool.in_flight(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_of_the_old_pool_goes_to_a_kept_node_not_a_removed_one() {
    let kept = node("kept", 1);
    let removed = node("removed", 1);
    let old = Pool::new(
        "interactive",
        vec![kept.clone(), removed.clone()],
        limited(10, WhenAllDown::Open),
    );
    let new = Pool::new(
        "interactive",
        vec![kept.clone()],
        limited(10, WhenAllDown::Open),
    );
    let a = old.acquire(&[]).await.unwrap();
    let b = old.acquire(&[]).await.unwrap();
    let (on_removed, on_kept) = if a.index() == 1 { (a, b) } else { (b, a) };
    let waiting = {
        let old = old.clone();
        tokio::spawn(async move { old.acquire(&[]).await })
    };
    tokio::task::yield_now().await;
    // The reload: `removed` is drained.
    removed.set_draining(true);
    removed.refresh_pools();
    drop(on_removed);
    tokio::task::yield_now().await;
    assert_eq!(
        old.queued(),
        1,
        "the removed node's freed worker is not used"
    );
    // The request on the kept node ends: the old pool's waiter gets it, not
    // a later request of the new pool.
    drop(on_kept);
    let lease = waiting.await.unwrap().expect("served");
    assert_eq!(lease.node().name, "kept");
    assert!(new.try_acquire_node(0).is_none(), "kept's worker is taken");
    drop(lease);
    assert!(new.try_acquire_node(0).is_some());
}

#[tokio::test(start_paused = true)]
async fn bus_leases_on_an_interactive_node_do_not_take_its_workers() {
    let web = node("web", 1);
    let bus = Pool::new(
        "interactive",
        vec![web.clone()],
        PoolSettings {
            limited: false,
            queue_length: 0,
            queue_timeout: Duration::from_secs(10),
            when_all_down: WhenAllDown::Open,
        },
    );
    let interactive = Pool::new(
        "interactive",
        vec![web.clone()],
        limited(10, WhenAllDown::Open),
    );
    let handshakes: Vec<Lease> = futures_util::future::join_all((0..3).map(|_| bus.acquire(&[])))
        .await
        .into_iter()
        .map(|l| l.expect("the bus pool is unlimited"))
        .collect();
    let worker = interactive.acquire(&[]).await.expect("the worker is free");
    assert_eq!(bus.in_flight(), vec![3]);
    assert_eq!(interactive.in_flight(), vec![1]);
    drop(handshakes);
    assert_eq!(bus.in_flight(), vec![0]);
    assert_eq!(interactive.in_flight(), vec![1]);
    drop(worker);
}
