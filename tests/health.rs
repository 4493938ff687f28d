//! Health checks, admission control and draining, over real sockets on
//! 127.0.0.1 with in-process mock Odoo nodes: nodes killed and restarted
//! mid-run, probes that fail or find every worker busy, the edge's queue,
//! fail-open and fail-closed pools, and drain by reload.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Call, Cluster, Reply, STEP, get, post, wait_until};
use futures_util::StreamExt as _;
use hyper::Method;
use odoo_edge::mock_odoo::{MockConfig, Mode, Role, Stats};
use odoo_edge::pool::Pool;
use tokio::time::{Instant, timeout};

/// Fast probes for both roles: every 100 ms (the shortest interval the file
/// accepts), 3 passes to come back, 2 failures to go out.
const FAST_PROBES: &str = "[health.interactive]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
     rise = 3\nfall = 2\n\n[health.gevent]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n";

const INTERVAL: Duration = Duration::from_millis(100);
const RISE: u32 = 3;

/// The position of node `name` in the interactive pool.
fn index_of(pool: &Pool, name: &str) -> usize {
    pool.nodes
        .iter()
        .position(|n| n.name == name)
        .unwrap_or_else(|| panic!("no interactive node named {name}"))
}

/// Whether interactive node `name` is up now.
fn is_up(cluster: &Cluster, name: &str) -> bool {
    let pool = &cluster.running().edge().topology.interactive;
    pool.nodes[index_of(pool, name)].is_up()
}

/// An interactive mock node with `workers` prefork workers.
fn prefork(name: &str, workers: usize) -> MockConfig {
    MockConfig::new(name, Role::Interactive).with_mode(Mode::Prefork { workers })
}

// === load runs ===

/// One request of a load run, as the client saw it.
#[derive(Debug)]
struct Outcome {
    /// Its `X-Mock-Request-Id`.
    id: String,
    status: u16,
    /// `X-Mock-Node` of the reply: who answered, if a node did.
    node: Option<String>,
    reply: Reply,
}

/// Sends `count` requests (`method` on `/web/dataset/call_kw`, each with its own
/// request id and `mock_sleep=10`), `concurrency` at a time, each on its own
/// connection; `done` counts the finished ones as they finish.
async fn load(
    edge: SocketAddr,
    method: Method,
    count: usize,
    concurrency: usize,
    done: Arc<AtomicUsize>,
) -> Vec<Outcome> {
    futures_util::stream::iter(0..count)
        .map(|i| {
            let method = method.clone();
            let done = done.clone();
            async move {
                let id = format!("{method}-{i}");
                let mut call =
                    Call::new(edge, method.clone(), "/web/dataset/call_kw?mock_sleep=10")
                        .header("X-Mock-Request-Id", &id);
                if method == Method::POST {
                    call = call.body(format!("{{\"id\": {i}}}"));
                }
                let reply = call.send().await;
                done.fetch_add(1, Ordering::SeqCst);
                Outcome {
                    status: reply.status.as_u16(),
                    node: reply.header("x-mock-node").map(str::to_owned),
                    id,
                    reply,
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Starts [`load`] on web1..web3, kills web1 once `kill_after` requests have
/// finished and web1 has requests in flight, and waits for the run to end.
/// Returns the outcomes and web1's counters.
async fn run_and_kill_web1(
    method: Method,
    count: usize,
    kill_after: usize,
) -> (Cluster, Vec<Outcome>, Arc<Stats>) {
    let mut cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .interactive("web3")
        .start()
        .await;
    let done = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn(load(cluster.edge, method, count, 20, done.clone()));
    assert!(
        wait_until(STEP, || done.load(Ordering::SeqCst) >= kill_after).await,
        "{kill_after} requests must finish in time"
    );
    let web1 = cluster.node("web1").stats.clone();
    assert!(
        wait_until(STEP, || web1.in_flight() >= 1).await,
        "web1 must have a request in flight to be killed under"
    );
    let killed = cluster.kill("web1").await;
    let finished_at_kill = done.load(Ordering::SeqCst);
    assert!(
        finished_at_kill < count,
        "the kill must happen mid-run ({finished_at_kill} of {count} done)"
    );
    let outcomes = timeout(STEP, run)
        .await
        .expect("the load run must end in time")
        .expect("the load task must not panic");
    assert_eq!(outcomes.len(), count);
    (cluster, outcomes, killed.stats)
}

// === node failures ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_during_1000_gets_fails_none_of_them() {
    let (cluster, outcomes, web1) = run_and_kill_web1(Method::GET, 1000, 300).await;
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status != 200)
        .map(|o| {
            format!(
                "{} -> {} from {:?}: {}",
                o.id,
                o.status,
                o.node,
                o.reply.text()
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 1000 GETs failed: {failed:#?}",
        failed.len()
    );
    // GETs web1 had read but not answered when it died were replayed, once.
    let replayed = outcomes
        .iter()
        .filter(|o| web1.seen(&o.id) == 1 && o.node.as_deref() != Some("web1"))
        .count();
    assert!(
        replayed >= 1,
        "the kill must catch GETs in flight on web1 and they must be replayed"
    );
    for o in &outcomes {
        let live = cluster.seen(&o.id);
        assert!(
            web1.seen(&o.id) + live <= 2,
            "{} was sent more than twice",
            o.id
        );
    }
    assert!(
        !is_up(&cluster, "web1"),
        "passive checks must take the killed node down"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_is_never_received_twice_even_when_its_node_is_killed_mid_run() {
    let (cluster, outcomes, web1) = run_and_kill_web1(Method::POST, 400, 120).await;
    let mut failed = Vec::new();
    for o in &outcomes {
        let on_web1 = web1.seen(&o.id);
        let on_live = cluster.seen(&o.id);
        assert!(
            on_web1 + on_live <= 1,
            "{} reached the nodes {on_web1} (web1) + {on_live} (others) times",
            o.id
        );
        if o.status == 200 {
            assert_eq!(on_web1 + on_live, 1, "{} answered 200 unseen", o.id);
            assert_eq!(o.reply.echo().method(), "POST");
        } else {
            // Sent to web1 as it died (read by a worker, or still in its
            // listen backlog when the socket closed: a reset either way):
            // the edge cannot know whether it was applied, so it says so
            // rather than sending it again.
            o.reply.assert_error_page(502);
            assert_eq!(on_live, 0, "{} failed yet reached a live node", o.id);
            failed.push((o.id.as_str(), on_web1));
        }
    }
    // The edge never has more than web1's 4 workers in flight there; the
    // failures are those caught by the kill, and those sent before passive
    // checks took web1 out (3 failures in a row).
    assert!(
        (1..=12).contains(&failed.len()),
        "the POSTs caught on web1 by the kill fail, and only a few: {failed:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_restarted_node_gets_traffic_again_within_rise_intervals() {
    let mut cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .config(FAST_PROBES)
        .start()
        .await;
    let killed = cluster.kill("web2").await;
    // Traffic meanwhile: web1 serves it all, refused connects to web2 move on.
    for i in 0..6 {
        let reply = get(cluster.edge, &format!("/web?while-down={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-mock-node"), Some("web1"));
    }
    assert!(
        wait_until(Duration::from_secs(2), || !is_up(&cluster, "web2")).await,
        "the killed node must go down"
    );
    // Some failed probes more: a streak of failures must not delay the comeback.
    tokio::time::sleep(3 * INTERVAL).await;
    assert!(!is_up(&cluster, "web2"));

    cluster
        .restart(MockConfig::new("web2", Role::Interactive), killed.addr)
        .await;
    let restarted = Instant::now();
    let limit = RISE * INTERVAL + Duration::from_millis(500);
    let mut served_by_web2 = None;
    // Bounded by `limit`.
    while restarted.elapsed() < limit {
        let reply = get(cluster.edge, "/web?after-restart").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.header("x-mock-node") == Some("web2") {
            served_by_web2 = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = served_by_web2.unwrap_or_else(|| {
        panic!("the restarted node got no request within {limit:?} (rise {RISE} x {INTERVAL:?} + 500 ms)")
    });
    // Only probes bring it back, and one pass is not enough.
    assert!(
        after >= (RISE - 1) * INTERVAL - Duration::from_millis(30),
        "back after {after:?}: sooner than {RISE} passes allow"
    );
    assert!(is_up(&cluster, "web2"));
    cluster.shutdown().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Logged lines that contain every one of `words`.
    fn lines_with(&self, words: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_owned)
            .collect()
    }
}

// A current-thread runtime: the edge's tasks run on this thread and log to
// the subscriber set here.
#[tokio::test(flavor = "current_thread")]
async fn a_node_going_down_and_up_logs_one_line_per_change() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .config(FAST_PROBES)
        .start()
        .await;
    let killed = cluster.kill("web2").await;
    for i in 0..10 {
        assert_eq!(get(cluster.edge, &format!("/web?{i}")).await.status, 200);
    }
    assert!(wait_until(Duration::from_secs(2), || !is_up(&cluster, "web2")).await);
    // Many more failed probes while it stays down.
    tokio::time::sleep(5 * INTERVAL).await;
    cluster
        .restart(MockConfig::new("web2", Role::Interactive), killed.addr)
        .await;
    assert!(wait_until(Duration::from_secs(2), || is_up(&cluster, "web2")).await);
    // More passed probes while it stays up.
    tokio::time::sleep(5 * INTERVAL).await;
    let down = logs.lines_with(&["node down", "web2"]);
    let up = logs.lines_with(&["node up", "web2"]);
    assert_eq!(down.len(), 1, "one line when web2 goes down: {down:#?}");
    assert_eq!(up.len(), 1, "one line when web2 comes back: {up:#?}");
    assert!(logs.lines_with(&["node down", "web1"]).is_empty());
    cluster.shutdown().await;
}

// === admission control ===

#[tokio::test]
async fn a_node_never_has_more_requests_than_its_workers_and_the_rest_wait() {
    // The mock could serve 8 at once; the edge is told 2, and probes run.
    let cluster = Cluster::builder()
        .node(prefork("web1", 8))
        .config(FAST_PROBES)
        .tweak(|config| config.nodes[0].workers = 2)
        .start()
        .await;
    let edge = cluster.edge;
    let sleep = 150;
    let started = Instant::now();
    let calls = (0..10).map(|i| async move {
        Call::new(
            edge,
            Method::GET,
            &format!("/web/slow/{i}?mock_sleep={sleep}"),
        )
        .send()
        .await
    });
    let replies = timeout(STEP, futures_util::future::join_all(calls))
        .await
        .expect("10 slow requests in time");
    let elapsed = started.elapsed();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let max = cluster.node("web1").stats.max_in_flight();
    assert_eq!(max, 2, "at most 2 at once on the node, probes included");
    assert!(
        elapsed >= Duration::from_millis(5 * sleep),
        "10 requests 2 at a time take 5 rounds: {elapsed:?}"
    );
    let pool = &cluster.running().edge().topology.interactive;
    assert_eq!(pool.in_flight(), [0]);
    assert_eq!(pool.queued(), 0);
    cluster.shutdown().await;
}

/// Holds web1's only worker with a `ms`-long request; returns its task once
/// the node has it.
async fn hold_the_only_worker(cluster: &Cluster, ms: u64) -> tokio::task::JoinHandle<Reply> {
    let edge = cluster.edge;
    let slow = tokio::spawn(async move {
        Call::new(edge, Method::GET, &format!("/web/report?mock_sleep={ms}"))
            .header("X-Mock-Request-Id", "slow")
            .send()
            .await
    });
    let web1 = cluster.node("web1").stats.clone();
    assert!(
        wait_until(STEP, || web1.seen("slow") == 1).await,
        "the slow request must reach the node"
    );
    slow
}

#[tokio::test]
async fn a_full_queue_gets_503_at_once_with_retry_after() {
    let cluster = Cluster::builder()
        .node(prefork("web1", 1))
        .config("[admission]\nqueue_length = 1\nqueue_timeout = \"5s\"\nretry_after = \"7s\"")
        .start()
        .await;
    let slow = hold_the_only_worker(&cluster, 600).await;
    let edge = cluster.edge;
    let queued = tokio::spawn(async move { get(edge, "/web/queued").await });
    let pool = &cluster.running().edge().topology.interactive;
    assert!(
        wait_until(STEP, || pool.queued() == 1).await,
        "the second request must wait in the queue"
    );

    let started = Instant::now();
    let reply = get(cluster.edge, "/web/refused").await;
    let waited = started.elapsed();
    reply.assert_error_page(503);
    assert_eq!(
        reply.header("retry-after"),
        Some("7"),
        "admission.retry_after"
    );
    assert!(
        waited < Duration::from_millis(300),
        "a full queue refuses at once, not after {waited:?}"
    );

    let reply = timeout(STEP, slow).await.expect("in time").expect("task");
    assert_eq!(reply.status, 200);
    let reply = timeout(STEP, queued).await.expect("in time").expect("task");
    assert_eq!(
        reply.status, 200,
        "the queued request gets the freed worker"
    );
    assert_eq!(
        cluster.node("web1").stats.requests(),
        2,
        "the refused request never reached the node"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_request_waiting_past_queue_timeout_gets_503_with_retry_after() {
    let cluster = Cluster::builder()
        .node(prefork("web1", 1))
        .config("[admission]\nqueue_length = 10\nqueue_timeout = \"300ms\"\nretry_after = \"9s\"")
        .start()
        .await;
    let slow = hold_the_only_worker(&cluster, 1500).await;
    let started = Instant::now();
    let reply = post(cluster.edge, "/web/dataset/call_kw", "{}").await;
    let waited = started.elapsed();
    reply.assert_error_page(503);
    assert_eq!(
        reply.header("retry-after"),
        Some("9"),
        "admission.retry_after"
    );
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_millis(1200),
        "refused after queue_timeout (300 ms), before the worker freed up: {waited:?}"
    );
    assert_eq!(cluster.running().edge().topology.interactive.queued(), 0);
    let reply = timeout(STEP, slow).await.expect("in time").expect("task");
    assert_eq!(reply.status, 200);
    assert_eq!(
        cluster.node("web1").stats.requests(),
        1,
        "the timed-out request never reached the node"
    );
    cluster.shutdown().await;
}

// === probes ===

/// Probes every 100 ms that no node passes (the mock answers 404 there), one
/// failure taking a node out; `extra` is appended to `[health]`.
fn failing_probes(health: &str) -> String {
    format!(
        "[health]\n{health}\n\n[health.interactive]\npath = \"/web/nowhere?mock_status=404\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\nfall = 1\n"
    )
}

/// Waits until no interactive node is up.
async fn wait_all_down(cluster: &Cluster) {
    let pool = &cluster.running().edge().topology.interactive;
    assert!(
        wait_until(Duration::from_secs(2), || pool
            .nodes
            .iter()
            .all(|n| !n.is_up()))
        .await,
        "every node must fail its probe and go down"
    );
}

#[tokio::test]
async fn nodes_start_up_and_the_first_probe_comes_one_interval_in() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(
            "[health]\nwhen_all_down = \"closed\"\n\n[health.interactive]\n\
             path = \"/web/nowhere?mock_status=404\"\ninterval = \"1s\"\ntimeout = \"1s\"\nfall = 1\n",
        )
        .start()
        .await;
    let started = Instant::now();
    let reply = get(cluster.edge, "/web/first").await;
    assert_eq!(
        reply.status,
        200,
        "a node is up from the start: {}",
        reply.text()
    );
    let web1 = cluster.node("web1").stats.clone();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(web1.requests(), 1, "no probe before one interval");
    assert!(
        wait_until(Duration::from_secs(3), || !is_up(&cluster, "web1")).await,
        "the first (failing) probe must take the node down"
    );
    let down_after = started.elapsed();
    assert!(
        down_after >= Duration::from_millis(950),
        "the first probe came {down_after:?} after start, before one interval"
    );
    assert_eq!(web1.requests(), 2, "one request, one probe");
    get(cluster.edge, "/web/then").await.assert_error_page(503);
    cluster.shutdown().await;
}

#[tokio::test]
async fn with_every_probe_failing_a_fail_open_pool_still_serves() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .config(&failing_probes("when_all_down = \"open\""))
        .start()
        .await;
    wait_all_down(&cluster).await;
    let mut nodes = HashSet::new();
    for i in 0..6 {
        let reply = get(cluster.edge, &format!("/web?open={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        nodes.insert(reply.echo().node().to_owned());
        let reply = post(cluster.edge, "/web/dataset/call_kw", "{}").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        nodes.insert(reply.echo().node().to_owned());
    }
    assert_eq!(nodes.len(), 2, "both nodes still get requests: {nodes:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn with_every_probe_failing_a_fail_closed_pool_sends_the_maintenance_page() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let page_path = dir.path().join("maintenance.html");
    let page = "<!DOCTYPE html>\n<title>Upgrade</title><p>Back at 14:00.</p>\n";
    std::fs::write(&page_path, page).expect("write the maintenance page");
    let health = format!(
        "when_all_down = \"closed\"\nretry_after = \"42s\"\nmaintenance_page = \"{}\"",
        page_path.display()
    );
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .config(&failing_probes(&health))
        .start()
        .await;
    wait_all_down(&cluster).await;
    for (i, method) in [Method::GET, Method::POST].into_iter().enumerate() {
        let id = format!("closed-{i}");
        let reply = Call::new(cluster.edge, method.clone(), "/web/dataset/call_kw")
            .header("X-Mock-Request-Id", &id)
            .send()
            .await;
        assert_eq!(reply.status, 503, "{method}: {}", reply.text());
        assert_eq!(
            reply.header("retry-after"),
            Some("42"),
            "health.retry_after"
        );
        assert_eq!(reply.text(), page, "the maintenance page, as it is on disk");
        assert_eq!(cluster.seen(&id), 0, "{method} must not reach a node");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn fast_probes_never_touch_the_cron_node() {
    let cluster = Cluster::standard().config(FAST_PROBES).start().await;
    for i in 0..5 {
        assert_eq!(get(cluster.edge, &format!("/web?{i}")).await.status, 200);
    }
    // Probes are running on every other node: 5 each, 500 ms at least.
    let probed = wait_until(Duration::from_secs(3), || {
        cluster.mocks().all(|(_, m)| m.stats.requests() >= 5 + 3)
    })
    .await;
    let counts: Vec<_> = cluster
        .mocks()
        .map(|(n, m)| (n.to_owned(), m.stats.requests()))
        .collect();
    assert!(probed, "probes must reach web1, web2 and bus: {counts:?}");
    assert_eq!(
        cluster.cron_connections(),
        0,
        "the cron node gets no connection, probes included"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_probe_never_takes_down_a_node_whose_only_worker_is_busy() {
    // One worker, one failure takes it out, and no node up means 503: a probe
    // that queued behind the slow request would time out and close the site.
    let cluster = Cluster::builder()
        .node(prefork("web1", 1))
        .config(
            "[health]\nwhen_all_down = \"closed\"\n\n[health.interactive]\n\
             interval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        )
        .start()
        .await;
    let web1 = cluster.node("web1").stats.clone();
    assert!(
        wait_until(Duration::from_secs(2), || web1.requests() >= 2).await,
        "probes must be running"
    );
    let slow = hold_the_only_worker(&cluster, 800).await;
    let probes_before = web1.requests();
    // Bounded: 8 probe intervals while the worker is held.
    let held_until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < held_until {
        assert!(
            is_up(&cluster, "web1"),
            "a busy node was marked down by a probe"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        web1.requests(),
        probes_before,
        "no probe is sent while the only worker is busy"
    );
    let reply = timeout(STEP, slow).await.expect("in time").expect("task");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(is_up(&cluster, "web1"));
    let reply = get(cluster.edge, "/web/after").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // And the probes resume.
    assert!(
        wait_until(Duration::from_secs(2), || web1.requests()
            >= probes_before + 3)
        .await,
        "probes must resume once the worker is free"
    );
    assert!(is_up(&cluster, "web1"));
    cluster.shutdown().await;
}

// === drain ===

#[tokio::test]
async fn drain_by_reload_stops_new_requests_and_lets_the_in_flight_one_finish() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .start()
        .await;
    let edge = cluster.edge;
    let slow = tokio::spawn(async move { get(edge, "/web/report?mock_sleep=800").await });
    let busy = wait_until(STEP, || {
        cluster.mocks().any(|(_, m)| m.stats.in_flight() == 1)
    })
    .await;
    assert!(busy, "the slow request must reach a node");
    let (drained, other) = if cluster.node("web1").stats.in_flight() == 1 {
        ("web1", "web2")
    } else {
        ("web2", "web1")
    };

    let with_drain = |drain: bool| {
        let mut config = cluster.config.clone();
        config
            .nodes
            .iter_mut()
            .find(|n| n.name == drained)
            .expect("the node is in the config")
            .drain = drain;
        config
    };
    let lines = cluster.running().reload(&with_drain(true));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(drained) && lines[0].contains("draining"),
        "{lines:?}"
    );

    let before = cluster.node(drained).stats.requests();
    for i in 0..10 {
        let reply = get(cluster.edge, &format!("/web?drain={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.echo().node(),
            other,
            "a draining node takes no new request"
        );
    }
    assert_eq!(cluster.node(drained).stats.requests(), before);
    let reply = timeout(STEP, slow).await.expect("in time").expect("task");
    assert_eq!(reply.status, 200, "the in-flight request finishes");
    assert_eq!(reply.echo().node(), drained);

    let lines = cluster.running().reload(&with_drain(false));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("back in service"), "{lines:?}");
    let mut served = 0;
    for i in 0..10 {
        let reply = get(cluster.edge, &format!("/web?back={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        served += usize::from(reply.echo().node() == drained);
    }
    assert_eq!(served, 5, "back in the round robin");
    cluster.shutdown().await;
}

/// A client that leaves while its request runs does not free the node's
/// worker: the prefork worker is still busy with it.
#[tokio::test]
async fn a_client_that_leaves_mid_request_keeps_the_worker_counted_busy() {
    use tokio::io::AsyncWriteExt as _;
    let cluster = Cluster::builder()
        .node(MockConfig::new("web1", Role::Interactive).with_mode(Mode::Prefork { workers: 1 }))
        .config(
            "[health]\nwhen_all_down = \"closed\"\n\n[health.interactive]\n\
             interval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        )
        .start()
        .await;
    let web1 = cluster.node("web1").stats.clone();
    let pool = cluster.running().edge().topology.interactive.clone();
    let mut stream = tokio::net::TcpStream::connect(cluster.edge)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /web/report?mock_sleep=1000 HTTP/1.1\r\nHost: erp.example.com\r\n\
              X-Mock-Request-Id: abandoned\r\n\r\n",
        )
        .await
        .expect("send");
    assert!(wait_until(STEP, || web1.seen("abandoned") == 1).await);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        pool.in_flight(),
        vec![1],
        "the worker is still busy on the node"
    );
    // Probes every 100 ms with fall = 1 would take the node down if they were
    // let through to a busy worker.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        assert!(pool.nodes[0].is_up(), "a busy node was marked down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = get(cluster.edge, "/web/next").await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(
        web1.max_in_flight() <= 1,
        "the node never had more than its one worker's worth"
    );
    assert!(wait_until(STEP, || pool.in_flight() == vec![0]).await);
    cluster.shutdown().await;
}

/// After a refused connection, a request that then waits out the queue gets
/// the queue's 503 with Retry-After, not the refused node's 502.
#[tokio::test]
async fn a_queue_timeout_after_a_refused_node_is_a_503_with_retry_after() {
    let cluster = Cluster::builder()
        .refused("web0")
        .node(MockConfig::new("web1", Role::Interactive).with_mode(Mode::Prefork { workers: 1 }))
        .config("[admission]\nqueue_timeout = \"300ms\"\nretry_after = \"4s\"\n")
        .start()
        .await;
    let edge = cluster.edge;
    let web1 = cluster.node("web1").stats.clone();
    let slow = tokio::spawn(async move {
        Call::new(edge, Method::GET, "/web/report?mock_sleep=1500")
            .header("X-Mock-Request-Id", "slow")
            .send()
            .await
    });
    assert!(wait_until(STEP, || web1.seen("slow") == 1).await);
    let reply = get(edge, "/web/next").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("4"));
    let slow = timeout(STEP, slow)
        .await
        .expect("slow request in time")
        .expect("task");
    assert_eq!(slow.status, 200);
    cluster.shutdown().await;
}
