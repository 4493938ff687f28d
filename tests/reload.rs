//! Reloads: `odoo-edge run` on SIGHUP (a real process) and
//! [`odoo_edge::Running::reload`] in process. A reload swaps in a new
//! generation of the edge without failing a request or cutting a websocket;
//! added nodes get traffic, removed ones finish what they have; admission
//! control holds across the swap; a broken file changes nothing and is
//! counted.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{EdgeProcess, config_file};
use common::{Call, Cluster, Reply, STEP, sha256_hex, wait_until, ws_connect, ws_echo};
use hyper::Method;
use odoo_edge::mock_odoo::{self, MockConfig, MockHandle, Mode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(web1: &MockHandle, web2: &MockHandle, drain_web1: bool) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"{}\"\nrole = \"interactive\"\nworkers = 4\ndrain = {drain_web1}\n\n\
         [[nodes]]\nname = \"web2\"\naddress = \"{}\"\nrole = \"interactive\"\nworkers = 4\n\n\
         [health.interactive]\ninterval = \"1h\"\n",
        web1.addr, web2.addr
    )
}

/// The node that answered a GET, from mock-odoo's `X-Mock-Node` header.
async fn served_by(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the edge");
    stream
        .write_all(b"GET /web/webclient/version_info HTTP/1.1\r\nHost: erp.example.com\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read reply");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-mock-node: ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no X-Mock-Node in {reply}"))
}

#[tokio::test]
async fn sighup_drains_a_node_and_a_broken_file_changes_nothing() {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let web1 = mock_odoo::bind(localhost, MockConfig::new("web1", Role::Interactive))
        .await
        .expect("web1");
    let web2 = mock_odoo::bind(localhost, MockConfig::new("web2", Role::Interactive))
        .await
        .expect("web2");
    let file = config_file(&config(&web1, &web2, false));
    let mut edge = EdgeProcess::start(file.path()).await;

    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(served_by(edge.addr).await);
    }
    assert!(nodes.iter().any(|n| n == "web1"), "{nodes:?}");

    std::fs::write(file.path(), config(&web1, &web2, true)).expect("rewrite config");
    edge.signal(libc::SIGHUP);
    edge.wait_for("reload: node web1: draining").await;
    for _ in 0..6 {
        assert_eq!(
            served_by(edge.addr).await,
            "web2",
            "a draining node gets nothing new"
        );
    }

    std::fs::write(file.path(), "[[listeners]\nbroken").expect("break config");
    edge.signal(libc::SIGHUP);
    edge.wait_for("reload refused").await;
    assert_eq!(
        served_by(edge.addr).await,
        "web2",
        "the running config stays"
    );

    std::fs::write(file.path(), config(&web1, &web2, false)).expect("restore config");
    edge.signal(libc::SIGHUP);
    edge.wait_for("reload: node web1: back in service").await;
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(served_by(edge.addr).await);
    }
    assert!(nodes.iter().any(|n| n == "web1"), "web1 is back: {nodes:?}");

    edge.stop().await;
    web1.shutdown().await;
    web2.shutdown().await;
}

// === helpers for the admin API and the mocks ===

/// The value of one sample of the admin API's `/metrics`, such as
/// `odoo_edge_reloads_total{result="ok"}`; 0 when it is not there yet.
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let reply = common::get(admin, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const RELOADS_OK: &str = "odoo_edge_reloads_total{result=\"ok\"}";
const RELOADS_REJECTED: &str = "odoo_edge_reloads_total{result=\"rejected\"}";

/// Waits (10 s at most) until `/metrics` shows `sample` at `value`.
async fn wait_for_metric(admin: SocketAddr, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + STEP;
    // Bounded by STEP.
    loop {
        let now = metric(admin, sample).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} stayed at {now}, not {value}, for {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn mock(name: &str, role: Role) -> MockHandle {
    mock_odoo::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MockConfig::new(name, role),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} must bind: {e}"))
}

// === the acceptance test: 20 reloads under load ===

/// One of four configs the acceptance test cycles through, each different
/// from the one before in something real: web1's `workers`, web2 added,
/// drained, back and removed, a timeout, the queue timeout, probe settings.
fn cycle_config(step: usize, web1: &MockHandle, web2: &MockHandle, bus: &MockHandle) -> String {
    let (workers, web2_drain, upstream_response, queue_timeout, interval) = match step % 4 {
        0 => (4, None, "30s", "60s", "1h"),
        1 => (2, Some(false), "25s", "60s", "200ms"),
        2 => (2, Some(true), "25s", "45s", "200ms"),
        _ => (3, Some(false), "20s", "45s", "1h"),
    };
    let mut text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"{}\"\nrole = \"interactive\"\nworkers = {workers}\n\n\
         [[nodes]]\nname = \"bus\"\naddress = \"{}\"\nrole = \"gevent\"\n\n",
        web1.addr, bus.addr
    );
    if let Some(drain) = web2_drain {
        text.push_str(&format!(
            "[[nodes]]\nname = \"web2\"\naddress = \"{}\"\nrole = \"interactive\"\n\
             workers = 4\ndrain = {drain}\n\n",
            web2.addr
        ));
    }
    text.push_str(&format!(
        "[timeouts]\nupstream_response = \"{upstream_response}\"\n\n\
         [admission]\nqueue_timeout = \"{queue_timeout}\"\n\n\
         [health.interactive]\ninterval = \"{interval}\"\ntimeout = \"150ms\"\n\n\
         [health.gevent]\ninterval = \"1h\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n"
    ));
    text
}

/// What the client loop of the acceptance test saw.
#[derive(Default)]
struct Tally {
    served: AtomicU64,
    failures: Mutex<Vec<String>>,
    by_node: Mutex<HashMap<String, u64>>,
}

impl Tally {
    /// Checks one reply: 200, from an interactive node, the right echo.
    fn check(&self, what: &str, reply: &Reply, method: &str, body: &[u8]) {
        let ok = reply.status == 200 && {
            let echo = reply.echo();
            let node = echo.node().to_owned();
            let right = echo.method() == method
                && echo.body_len() == body.len() as u64
                && (body.is_empty() || echo.body_sha256() == sha256_hex(body))
                && (node == "web1" || node == "web2");
            *self.by_node.lock().expect("tally").entry(node).or_default() += 1;
            right
        };
        if ok {
            self.served.fetch_add(1, Ordering::SeqCst);
        } else {
            self.failures.lock().expect("tally").push(format!(
                "{what}: {} {}",
                reply.status,
                reply.text()
            ));
        }
    }
}

/// Issue 6, item 3: GETs and POSTs in a loop and an open websocket through 20
/// SIGHUP reloads that add, drain and remove a node and change workers,
/// timeouts and probes: no request fails, requests are served between every
/// two reloads, and the websocket still echoes at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request_and_keep_the_websocket_open() {
    let web1 = mock("web1", Role::Interactive).await;
    let web2 = mock("web2", Role::Interactive).await;
    let bus = mock("bus", Role::Gevent).await;
    let file = config_file(&cycle_config(0, &web1, &web2, &bus));
    let mut edge = EdgeProcess::start(file.path()).await;
    let admin = edge.admin().await;
    let addr = edge.addr;

    let (mut ws, response) = ws_connect(addr, "/websocket?version=17.0-1").await;
    assert_eq!(response.status(), 101);
    assert_eq!(ws_echo(&mut ws, "before").await["node"], "bus");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|client| {
            let tally = tally.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                // Bounded: 60 s or 100,000 rounds, whichever comes first.
                for i in 0..100_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let what = format!("GET {client}-{i}");
                    // 10 ms at the node: requests are in flight at every swap.
                    let path = format!("/web/dataset/call_kw?c={client}&i={i}&mock_sleep=10");
                    let reply = Call::new(addr, Method::GET, &path).send().await;
                    tally.check(&what, &reply, "GET", b"");
                    let body = format!("{{\"client\": {client}, \"i\": {i}}}");
                    let reply = Call::new(addr, Method::POST, "/web/dataset/call_kw")
                        .body(body.clone())
                        .send()
                        .await;
                    tally.check(
                        &format!("POST {client}-{i}"),
                        &reply,
                        "POST",
                        body.as_bytes(),
                    );
                }
            })
        })
        .collect();

    // Some traffic on the first generation.
    assert!(wait_until(STEP, || tally.served.load(Ordering::SeqCst) >= 20).await);
    let mut served_between = Vec::new();
    for step in 1..=20 {
        let before = tally.served.load(Ordering::SeqCst);
        std::fs::write(file.path(), cycle_config(step, &web1, &web2, &bus))
            .expect("rewrite config");
        edge.signal(libc::SIGHUP);
        wait_for_metric(admin, RELOADS_OK, step as f64).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        served_between.push(tally.served.load(Ordering::SeqCst) - before);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(STEP, client)
            .await
            .expect("the client loop ends in time")
            .expect("the client loop must not panic");
    }

    let failures = tally.failures.lock().expect("tally").clone();
    let served = tally.served.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:#?}",
        failures.len(),
        served + failures.len() as u64
    );
    assert!(served >= 200, "only {served} requests served");
    assert!(
        served_between.iter().all(|&n| n > 0),
        "requests served around each reload: {served_between:?}"
    );
    let by_node = tally.by_node.lock().expect("tally").clone();
    assert!(
        by_node.get("web2").is_some_and(|&n| n > 0),
        "web2, added by a reload, got traffic: {by_node:?}"
    );
    assert_eq!(metric(admin, RELOADS_REJECTED).await, 0.0);

    assert_eq!(
        ws_echo(&mut ws, "after 20 reloads").await["echo"],
        "after 20 reloads",
        "the websocket is still open"
    );
    assert_eq!(bus.stats.websockets_open(), 1);
    assert_eq!(
        bus.stats.connections(),
        1,
        "the tunnel's one connection, never reopened"
    );
    drop(ws);
    edge.stop().await;
    for mock in [web1, web2, bus] {
        mock.shutdown().await;
    }
}

// === a changed setting, a broken file ===

fn limits_config(web1: &MockHandle, limits: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"{}\"\nrole = \"interactive\"\nworkers = 4\n\n\
         [health.interactive]\ninterval = \"1h\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n{limits}",
        web1.addr
    )
}

async fn post_bytes(addr: SocketAddr, len: usize) -> Reply {
    Call::new(addr, Method::POST, "/web/dataset/call_kw")
        .body(vec![b'x'; len])
        .send()
        .await
}

#[tokio::test]
async fn sighup_applies_a_new_body_limit_and_a_broken_file_is_refused_and_counted() {
    let web1 = mock("web1", Role::Interactive).await;
    let file = config_file(&limits_config(&web1, ""));
    let mut edge = EdgeProcess::start(file.path()).await;
    let admin = edge.admin().await;
    let reply = post_bytes(edge.addr, 4096).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echo().body_len(), 4096);

    std::fs::write(
        file.path(),
        limits_config(&web1, "[limits]\nmax_request_body = \"1KiB\"\n"),
    )
    .expect("rewrite config");
    edge.signal(libc::SIGHUP);
    wait_for_metric(admin, RELOADS_OK, 1.0).await;
    post_bytes(edge.addr, 4096).await.assert_error_page(413);
    assert_eq!(post_bytes(edge.addr, 512).await.status, 200);
    let applied_at = metric(admin, "odoo_edge_last_reload_success_timestamp_seconds").await;
    assert!(applied_at > 0.0);

    std::fs::write(file.path(), "[[listeners]\nbroken").expect("break config");
    edge.signal(libc::SIGHUP);
    wait_for_metric(admin, RELOADS_REJECTED, 1.0).await;
    post_bytes(edge.addr, 4096).await.assert_error_page(413);
    assert_eq!(
        post_bytes(edge.addr, 512).await.status,
        200,
        "still serving"
    );
    assert_eq!(metric(admin, RELOADS_OK).await, 1.0);
    assert_eq!(
        metric(admin, "odoo_edge_last_reload_success_timestamp_seconds").await,
        applied_at,
        "a refused file is not a successful reload"
    );
    edge.stop().await;
    web1.shutdown().await;
}

// === in process: nodes added and removed, admission across the swap ===

/// An interactive mock node with `workers` prefork workers.
fn prefork(name: &str, workers: usize) -> MockConfig {
    MockConfig::new(name, Role::Interactive).with_mode(Mode::Prefork { workers })
}

/// A slow GET (`ms` at the node) with request id `id`, on a task of its own.
fn slow_get(edge: SocketAddr, id: &str, ms: u64) -> tokio::task::JoinHandle<Reply> {
    let id = id.to_owned();
    tokio::spawn(async move {
        Call::new(edge, Method::GET, &format!("/web/report?mock_sleep={ms}"))
            .header("X-Mock-Request-Id", &id)
            .send()
            .await
    })
}

async fn finished(task: tokio::task::JoinHandle<Reply>) -> Reply {
    tokio::time::timeout(STEP, task)
        .await
        .expect("the request must end in time")
        .expect("the request task must not panic")
}

#[tokio::test]
async fn a_node_added_by_reload_gets_traffic_and_a_removed_one_finishes_its_request() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .interactive("web3")
        .tweak(|config| config.nodes.retain(|n| n.name != "web3"))
        .start()
        .await;
    let slow = slow_get(cluster.edge, "slow", 1000);
    assert!(wait_until(STEP, || cluster.seen("slow") == 1).await);
    let (removed, kept) = if cluster.node("web1").stats.seen("slow") == 1 {
        ("web1", "web2")
    } else {
        ("web2", "web1")
    };

    let mut config = odoo_edge::config::parse(&cluster.config_text()).expect("valid");
    config.nodes.retain(|n| n.name != removed);
    let lines = cluster.running().reload(&config);
    assert!(
        lines.iter().any(|l| l.starts_with("node web3: added")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("node {removed}: removed"))),
        "{lines:?}"
    );
    let names: Vec<String> = cluster
        .running()
        .edge()
        .topology
        .interactive
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(names, [kept, "web3"]);

    let mut served: HashMap<String, usize> = HashMap::new();
    for i in 0..12 {
        let reply = common::get(cluster.edge, &format!("/web?after={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *served.entry(reply.echo().node().to_owned()).or_default() += 1;
    }
    assert_eq!(
        served.get(removed),
        None,
        "a removed node gets nothing new: {served:?}"
    );
    assert!(
        served.get("web3").is_some_and(|&n| n >= 4),
        "the added node takes its share: {served:?}"
    );
    assert_eq!(
        cluster.node(removed).stats.requests(),
        1,
        "only the slow one"
    );

    let reply = finished(slow).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echo().node(), removed, "it finished where it started");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_put_back_while_its_request_runs_is_the_same_node_and_stays_counted() {
    let cluster = Cluster::builder()
        .node(prefork("web1", 1))
        .node(prefork("web2", 1))
        .start()
        .await;
    let node = |name: &str| {
        let edge = cluster.running().edge();
        edge.topology
            .interactive
            .nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
    };
    let slow = slow_get(cluster.edge, "slow", 800);
    assert!(wait_until(STEP, || cluster.seen("slow") == 1).await);
    let busy = if cluster.node("web1").stats.seen("slow") == 1 {
        "web1"
    } else {
        "web2"
    };
    let original = node(busy).expect("running");

    let mut without = cluster.config.clone();
    without.nodes.retain(|n| n.name != busy);
    cluster.running().reload(&without);
    assert!(node(busy).is_none());
    let lines = cluster.running().reload(&cluster.config);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("node {busy}: added"))),
        "{lines:?}"
    );
    let back = node(busy).expect("put back");
    assert!(
        Arc::ptr_eq(&original, &back),
        "the same node, not a new one"
    );
    assert!(!back.is_draining(), "in service again");
    let pool = cluster.running().edge().topology.interactive.clone();
    let index = pool
        .nodes
        .iter()
        .position(|n| n.name == busy)
        .expect("in the pool");
    assert_eq!(
        pool.in_flight()[index],
        1,
        "its running request still holds its worker"
    );

    // Its one worker is busy: new requests go to the other node meanwhile.
    for i in 0..4 {
        let reply = common::get(cluster.edge, &format!("/web?meanwhile={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_ne!(reply.echo().node(), busy);
    }
    assert_eq!(finished(slow).await.status, 200);
    assert!(cluster.node(busy).stats.max_in_flight() <= 1);
    cluster.shutdown().await;
}

#[tokio::test]
async fn admission_holds_across_a_reload_and_the_old_queue_is_served() {
    // The mock could serve 8 at once; the edge is told 2.
    let cluster = Cluster::builder()
        .node(prefork("web1", 8))
        .tweak(|config| config.nodes[0].workers = 2)
        .start()
        .await;
    let web1 = cluster.node("web1").stats.clone();
    let before: Vec<_> = (0..2)
        .map(|i| slow_get(cluster.edge, &format!("before-{i}"), 600))
        .collect();
    assert!(wait_until(STEP, || web1.in_flight() == 2).await);
    let old = cluster.running().edge();
    let queued = slow_get(cluster.edge, "queued", 100);
    assert!(
        wait_until(STEP, || old.topology.interactive.queued() == 1).await,
        "the third request waits in the old pool"
    );

    let mut config = cluster.config.clone();
    config.timeouts.upstream_response = Duration::from_secs(45);
    let lines = cluster.running().reload(&config);
    assert!(lines.iter().any(|l| l.contains("[timeouts]")), "{lines:?}");
    let new = cluster.running().edge();
    assert!(!Arc::ptr_eq(
        &old.topology.interactive,
        &new.topology.interactive
    ));
    assert!(
        Arc::ptr_eq(
            &old.topology.interactive.nodes[0],
            &new.topology.interactive.nodes[0]
        ),
        "the node is kept"
    );
    assert_eq!(
        new.topology.interactive.in_flight(),
        [2],
        "the new pool counts the requests the old one admitted"
    );

    let after: Vec<_> = (0..4)
        .map(|i| slow_get(cluster.edge, &format!("after-{i}"), 100))
        .collect();
    assert!(
        wait_until(STEP, || new.topology.interactive.queued() == 4).await,
        "requests after the swap wait: both workers are busy"
    );
    assert_eq!(web1.in_flight(), 2);

    for task in before.into_iter().chain([queued]).chain(after) {
        let reply = finished(task).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        web1.max_in_flight(),
        2,
        "never more than 2 at once, old and new pool together"
    );
    assert_eq!(web1.seen("queued"), 1, "the old pool's waiter was served");
    assert_eq!(old.topology.interactive.queued(), 0);
    assert_eq!(new.topology.interactive.in_flight(), [0]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_request_queued_before_a_reload_is_not_sent_to_a_node_it_removed() {
    let cluster = Cluster::builder()
        .node(prefork("web1", 1))
        .node(prefork("web2", 1))
        .start()
        .await;
    // web1 busy for long, web2 for a short while; a third request queues.
    let long = slow_get(cluster.edge, "long", 900);
    assert!(wait_until(STEP, || cluster.seen("long") == 1).await);
    let short = slow_get(cluster.edge, "short", 200);
    assert!(wait_until(STEP, || cluster.seen("short") == 1).await);
    let (long_on, short_on) = if cluster.node("web1").stats.seen("long") == 1 {
        ("web1", "web2")
    } else {
        ("web2", "web1")
    };
    let old = cluster.running().edge();
    let queued = slow_get(cluster.edge, "queued", 0);
    assert!(wait_until(STEP, || old.topology.interactive.queued() == 1).await);

    // The node that frees up first is removed by a reload.
    let mut config = cluster.config.clone();
    config.nodes.retain(|n| n.name != short_on);
    cluster.running().reload(&config);
    assert_eq!(finished(short).await.status, 200);
    let reply = finished(queued).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.echo().node(),
        long_on,
        "the queued request waited for a kept node"
    );
    assert_eq!(cluster.node(short_on).stats.seen("queued"), 0);
    assert_eq!(finished(long).await.status, 200);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_changed_workers_value_applies_after_a_reload() {
    let cluster = Cluster::builder()
        .node(prefork("web1", 8))
        .tweak(|config| config.nodes[0].workers = 2)
        .start()
        .await;
    let mut config = cluster.config.clone();
    config.nodes[0].workers = 3;
    let lines = cluster.running().reload(&config);
    assert_eq!(lines, ["node web1: workers 2 -> 3"]);
    let tasks: Vec<_> = (0..9)
        .map(|i| slow_get(cluster.edge, &format!("r{i}"), 150))
        .collect();
    for task in tasks {
        assert_eq!(finished(task).await.status, 200);
    }
    assert_eq!(cluster.node("web1").stats.max_in_flight(), 3);
    cluster.shutdown().await;
}

// === probes and what needs a restart ===

fn is_up(cluster: &Cluster, name: &str) -> bool {
    cluster
        .running()
        .edge()
        .topology
        .interactive
        .nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no interactive node {name}"))
        .is_up()
}

#[tokio::test]
async fn probes_follow_a_reload_and_a_kept_node_keeps_its_health() {
    let cluster = Cluster::builder().interactive("web1").start().await;
    let web1 = cluster.node("web1").stats.clone();
    let node = cluster.running().edge().topology.interactive.nodes[0].clone();

    // Probes every 100 ms that fail: the new settings take the node down.
    let mut failing = cluster.config.clone();
    failing.nodes[0].probe.path = "/web/nowhere?mock_status=404".into();
    failing.nodes[0].probe.interval = Duration::from_millis(100);
    failing.nodes[0].probe.timeout = Duration::from_millis(100);
    failing.nodes[0].probe.fall = 1;
    let lines = cluster.running().reload(&failing);
    assert_eq!(lines, ["node web1: health check changed"]);
    assert!(
        wait_until(Duration::from_secs(2), || !is_up(&cluster, "web1")).await,
        "the reloaded probe must run and fail"
    );

    // Back to one probe an hour: the 100 ms probes stop; the node stays down.
    let mut hourly = failing.clone();
    hourly.nodes[0].probe.interval = Duration::from_secs(3600);
    cluster.running().reload(&hourly);
    assert!(Arc::ptr_eq(
        &node,
        &cluster.running().edge().topology.interactive.nodes[0]
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let probes = web1.requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        web1.requests(),
        probes,
        "the old generation's probes stopped"
    );
    assert!(!is_up(&cluster, "web1"), "a kept node keeps its health");
    cluster.shutdown().await;
}

#[tokio::test]
async fn what_a_reload_cannot_change_is_reported_as_needing_a_restart() {
    let cluster = Cluster::builder().interactive("web1").start().await;
    let mut config = cluster.config.clone();
    config.limits.max_connections += 1;
    config.worker_threads = Some(3);
    config.admin = Some(SocketAddr::from(([127, 0, 0, 1], 9)));
    config.listeners[0].address = SocketAddr::from(([127, 0, 0, 1], 9));
    let lines = cluster.running().reload(&config);
    for what in [
        "listeners added, removed or moved",
        "limits.max_connections",
        "runtime.worker_threads",
        "admin.address",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(what) && l.contains("needs a restart")),
            "{what}: {lines:?}"
        );
    }
    let reply = common::get(cluster.edge, "/web").await;
    assert_eq!(reply.status, 200, "the running listener still serves");
    cluster.shutdown().await;
}

// === forwarding on open connections ===

#[tokio::test]
async fn a_peer_a_reload_no_longer_trusts_is_not_trusted_on_its_open_connection() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .config("[forwarding]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start()
        .await;
    let mut conn = common::KeptAlive::connect(cluster.edge).await;
    let call = || {
        Call::new(cluster.edge, Method::GET, "/web/login")
            .header("X-Request-ID", "lb-5f0e8a2c")
            .header("X-Forwarded-For", "203.0.113.9")
    };
    let reply = conn.send(call()).await;
    assert_eq!(reply.echo().header("x-request-id"), Some("lb-5f0e8a2c"));

    let mut config = cluster.config.clone();
    config.forwarding.trusted_proxies.clear();
    cluster.running().reload(&config);

    // The same connection, after the reload: the peer's headers are not believed.
    let reply = conn.send(call()).await;
    assert!(!conn.is_closed());
    assert_ne!(
        reply.echo().header("x-request-id"),
        Some("lb-5f0e8a2c"),
        "a request id from a peer no longer trusted"
    );
    assert_eq!(reply.echo().header("x-forwarded-for"), Some("127.0.0.1"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_replaced_generation_is_freed_once_nothing_uses_it() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .config("[admin]\naddress = \"127.0.0.1:0\"\n")
        .start()
        .await;
    assert_eq!(common::get(cluster.edge, "/web/login").await.status, 200);
    let first = Arc::downgrade(&cluster.running().edge());
    let web2 = Arc::downgrade(&cluster.running().edge().topology.interactive.nodes[1]);
    let mut config = cluster.config.clone();
    config.nodes.retain(|n| n.name != "web2");
    cluster.running().reload(&config);
    assert_eq!(common::get(cluster.edge, "/web/login").await.status, 200);
    let admin = cluster.running().admin.expect("admin API");
    assert_eq!(common::get(admin, "/status").await.status, 200);
    assert!(
        wait_until(STEP, || first.upgrade().is_none()).await,
        "the first generation (its pools, nodes and static cache) is still held"
    );
    assert!(web2.upgrade().is_none(), "the removed node is still held");
    cluster.shutdown().await;
}

#[tokio::test]
async fn reloads_more_frequent_than_the_probe_interval_do_not_hold_probes_off() {
    let cluster = Cluster::builder().interactive("web1").start().await;
    let web1 = cluster.node("web1").stats.clone();
    let mut config = cluster.config.clone();
    config.nodes[0].probe.interval = Duration::from_millis(300);
    cluster.running().reload(&config);
    let before = web1.requests();
    // A reload every 100 ms for 1.5 s: each would restart a 300 ms wait.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.running().reload(&config);
    }
    let probes = web1.requests() - before;
    assert!(
        (3..=7).contains(&probes),
        "about one probe per 300 ms in 1.5 s, got {probes}"
    );
    cluster.shutdown().await;
}
