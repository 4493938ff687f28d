//! What the edge tells its operators: `/metrics` (parsed with a Prometheus
//! text-format parser) and the access log (one line per request), and the
//! request id that ties a log line to Odoo's own logs.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tls::{Pki, tls_listener};
use common::{Call, Cluster, STEP, fetch, get, post, raw_request, ws_connect, ws_echo};
use hyper::Method;
use odoo_edge::mock_odoo::{MockConfig, Role};
use prometheus_parse::{LineInfo, Scrape, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const ATTACHMENT: usize = 12_345;
const ASSET: &[u8] = b"console.log('odoo-edge');\n";

/// An addons path with one module asset, and a filestore with one attachment.
fn disk() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let put = |rel: &str, bytes: &[u8]| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    put("addons/shop/static/src/app.js", ASSET);
    put(&format!("filestore/odoo/3f/{SHA}"), &vec![b'x'; ATTACHMENT]);
    dir
}

fn disk_config(root: &Path) -> String {
    format!(
        "[static]\naddons_paths = [\"{}\"]\n\n[x_accel]\nfilestore = \"{}\"\n",
        root.join("addons").display(),
        root.join("filestore").display()
    )
}

/// Every sample of `name` whose labels include `labels`, summed.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Scrapes `/metrics`, checks that every line is one the parser understands,
/// and parses it.
async fn scrape_metrics(admin: SocketAddr) -> (Scrape, String) {
    let reply = get(admin, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.headers
    );
    let text = reply.text();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    for line in text.lines().filter(|l| *l != "# EOF") {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "the parser does not understand {line:?}"
        );
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse");
    (scrape, text)
}

#[tokio::test]
async fn metrics_parse_and_count_every_kind_of_traffic() {
    let root = disk();
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com"]);
    let store = root.path().join("filestore");
    let cluster = Cluster::builder()
        .refused("web0")
        .node(MockConfig::new("web1", Role::Interactive).with_x_sendfile(&store))
        .gevent("bus")
        .cron("cron1")
        .config(&format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nformat = \"off\"\n\n{}\n{}",
            disk_config(root.path()),
            tls_listener(&pki, &["erp"], "")
        ))
        .start()
        .await;
    let admin = cluster.running().admin.expect("admin API");
    let edge = cluster.edge;

    // Proxied requests; web0 refuses, so some go to web1 as retries.
    for _ in 0..4 {
        assert_eq!(get(edge, "/web/login").await.status, 200);
    }
    assert_eq!(post(edge, "/web/dataset/call_kw", "{}").await.status, 200);
    assert_eq!(get(edge, "/web/missing?mock_status=404").await.status, 404);
    // A module asset and an attachment, both from disk.
    let asset = get(edge, "/shop/static/src/app.js").await;
    assert_eq!(asset.status, 200);
    assert_eq!(asset.body.as_ref(), ASSET);
    let attachment = fetch(edge, "GET", &format!("/web/content/{SHA}"), "").await;
    assert_eq!(attachment.status, 200);
    assert_eq!(attachment.body.len(), ATTACHMENT);
    // A websocket, kept open while scraping.
    let (mut ws, _) = ws_connect(edge, "/websocket").await;
    assert_eq!(ws_echo(&mut ws, "hello").await["node"], "bus");
    // One TLS handshake that works, one that does not.
    let tls_addr = cluster.running().addrs[1];
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("erp.example.com").expect("name");
    let tls = tokio::time::timeout(STEP, pki.client(&[b"http/1.1"]).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    drop(tls);
    let mut plain = TcpStream::connect(tls_addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(STEP, plain.read_to_end(&mut sink)).await;

    // Counters are written when a reply is done: wait for the last one.
    let deadline = tokio::time::Instant::now() + STEP;
    let (scrape, text) = loop {
        let (scrape, text) = scrape_metrics(admin).await;
        let failed = sum(
            &scrape,
            "odoo_edge_tls_handshakes_total",
            &[("result", "failed")],
        );
        if failed >= 1.0 || tokio::time::Instant::now() > deadline {
            break (scrape, text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    for family in [
        "requests",
        "request_duration_seconds",
        "requests_in_flight",
        "queue_wait_seconds",
        "queue_depth",
        "node_up",
        "node_draining",
        "node_in_flight",
        "node_workers",
        "websockets_active",
        "websockets",
        "disk_bytes",
        "sent_bytes",
        "retries",
        "tls_handshakes",
        "reloads",
        "last_reload_success_timestamp_seconds",
        "access_log_dropped",
    ] {
        let name = format!("odoo_edge_{family}");
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no {name} family in\n{text}"
        );
    }
    let requests = |labels: &[(&str, &str)]| sum(&scrape, "odoo_edge_requests_total", labels);
    assert_eq!(
        requests(&[("kind", "proxy"), ("node", "web1"), ("status", "2xx")]),
        5.0,
        "{text}"
    );
    assert_eq!(requests(&[("kind", "proxy"), ("status", "4xx")]), 1.0);
    assert_eq!(requests(&[("kind", "static"), ("status", "2xx")]), 1.0);
    assert_eq!(requests(&[("kind", "accel"), ("node", "web1")]), 1.0);
    assert_eq!(
        requests(&[("kind", "websocket"), ("pool", "gevent"), ("node", "bus")]),
        1.0
    );
    assert!(
        sum(&scrape, "odoo_edge_retries_total", &[("reason", "refused")]) >= 1.0,
        "web0 refuses, so a request moved on: {text}"
    );
    assert_eq!(
        sum(&scrape, "odoo_edge_disk_bytes_total", &[("kind", "accel")]),
        ATTACHMENT as f64
    );
    assert_eq!(
        sum(&scrape, "odoo_edge_disk_bytes_total", &[("kind", "static")]),
        ASSET.len() as f64
    );
    assert_eq!(
        sum(&scrape, "odoo_edge_websockets_active", &[("node", "bus")]),
        1.0
    );
    assert_eq!(
        sum(
            &scrape,
            "odoo_edge_tls_handshakes_total",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &scrape,
            "odoo_edge_tls_handshakes_total",
            &[("result", "failed")]
        ),
        1.0
    );
    // Cluster state, read at scrape time.
    assert_eq!(
        sum(
            &scrape,
            "odoo_edge_node_up",
            &[("node", "web1"), ("role", "interactive")]
        ),
        1.0
    );
    assert_eq!(sum(&scrape, "odoo_edge_node_up", &[("node", "cron1")]), 0.0);
    assert_eq!(
        sum(&scrape, "odoo_edge_node_draining", &[("node", "web1")]),
        0.0
    );
    assert!(sum(&scrape, "odoo_edge_node_workers", &[("node", "web1")]) >= 1.0);
    assert_eq!(sum(&scrape, "odoo_edge_requests_in_flight", &[]), 0.0);
    assert_eq!(
        sum(&scrape, "odoo_edge_queue_depth", &[("pool", "interactive")]),
        0.0
    );
    // Histograms: every interactive request waited (0 s) for a worker once.
    assert_eq!(
        sum(
            &scrape,
            "odoo_edge_queue_wait_seconds",
            &[("pool", "interactive")]
        ),
        7.0,
        "{text}"
    );
    assert!(
        sum(
            &scrape,
            "odoo_edge_request_duration_seconds",
            &[("kind", "proxy"), ("pool", "interactive")]
        ) >= 6.0
    );
    assert!(
        sum(
            &scrape,
            "odoo_edge_last_reload_success_timestamp_seconds",
            &[]
        ) > 1.7e9
    );

    // The websocket closes: the gauge follows.
    drop(ws);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (scrape, _) = scrape_metrics(admin).await;
        if sum(&scrape, "odoo_edge_websockets_active", &[("node", "bus")]) == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the websocket gauge never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        Call::new(admin, Method::POST, "/metrics")
            .send()
            .await
            .status,
        405
    );
}

/// Reads the access log file until it has `n` lines (bounded by STEP).
async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            // A little longer, to catch a line too many.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = std::fs::read_to_string(path).unwrap_or_default();
            return text.lines().map(str::to_owned).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_config(path: &Path, format: &str) -> String {
    format!(
        "[access_log]\nformat = \"{format}\"\npath = \"{}\"\n",
        path.display()
    )
}

#[tokio::test]
async fn one_json_access_log_line_per_request_with_every_field() {
    let root = disk();
    let log: PathBuf = root.path().join("access.log");
    let store = root.path().join("filestore");
    let cluster = Cluster::builder()
        .node(MockConfig::new("web1", Role::Interactive).with_x_sendfile(&store))
        .config(&format!(
            "{}\n{}",
            log_config(&log, "json"),
            disk_config(root.path())
        ))
        .start()
        .await;
    let edge = cluster.edge;

    let login = Call::new(edge, Method::GET, "/web/login?db=odoo")
        .header("Referer", "https://erp.example.com/odoo")
        .header("User-Agent", "Mozilla/5.0 (test)")
        .send()
        .await;
    assert_eq!(login.status, 200);
    let rpc = post(edge, "/web/dataset/call_kw", "{\"id\": 1}").await;
    assert_eq!(rpc.status, 200);
    let asset = get(edge, "/shop/static/src/app.js").await;
    assert_eq!(asset.status, 200);
    let attachment = fetch(edge, "GET", &format!("/web/content/{SHA}"), "").await;
    assert_eq!(attachment.status, 200);

    let lines = log_lines(&log, 4).await;
    assert_eq!(lines.len(), 4, "one line per request: {lines:#?}");
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |path: &str| -> &serde_json::Value {
        entries
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {lines:#?}"))
    };

    let e = find("/web/login?db=odoo");
    for key in [
        "time",
        "request_id",
        "client",
        "method",
        "path",
        "status",
        "bytes",
        "duration",
        "kind",
        "node",
        "retries",
        "queue_wait",
    ] {
        assert!(e.get(key).is_some(), "{key} missing: {e}");
    }
    assert_eq!(e["method"], "GET");
    assert_eq!(e["status"], 200);
    assert_eq!(e["kind"], "proxy");
    assert_eq!(e["node"], "web1");
    assert_eq!(e["retries"], 0);
    assert_eq!(e["protocol"], "HTTP/1.1");
    assert_eq!(e["bytes"], login.body.len());
    assert_eq!(e["referer"], "https://erp.example.com/odoo");
    assert_eq!(e["user_agent"], "Mozilla/5.0 (test)");
    assert!(e["queue_wait"].as_f64().is_some_and(|w| w >= 0.0), "{e}");
    assert!(e["duration"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    assert!(
        e["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{e}"
    );
    // The id in the line is the one the client got back and the one Odoo saw.
    assert_eq!(
        Some(e["request_id"].as_str().unwrap_or("")),
        login.header("x-request-id")
    );
    assert_eq!(
        login.echo().header("x-request-id"),
        login.header("x-request-id")
    );

    let e = find("/web/dataset/call_kw");
    assert_eq!(
        (e["method"].as_str(), e["status"].as_u64()),
        (Some("POST"), Some(200))
    );
    let e = find("/shop/static/src/app.js");
    assert_eq!(
        (e["kind"].as_str(), e["node"].as_str()),
        (Some("static"), Some(""))
    );
    assert_eq!(e["bytes"], ASSET.len());
    let e = find(&format!("/web/content/{SHA}"));
    assert_eq!(
        (e["kind"].as_str(), e["node"].as_str()),
        (Some("accel"), Some("web1"))
    );
    assert_eq!(e["bytes"], ATTACHMENT);

    let ids: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 4, "every request has its own id");
}

#[tokio::test]
async fn the_combined_format_is_nginx_combined_plus_the_edge_fields() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let cluster = Cluster::builder()
        .refused("web0")
        .interactive("web1")
        .config(&log_config(&log, "combined"))
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(
            get(cluster.edge, "/web/webclient/version_info")
                .await
                .status,
            200
        );
    }
    let lines = log_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let mut retried = 0;
    for line in &lines {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.contains("] \"GET /web/webclient/version_info HTTP/1.1\" 200 "),
            "{line}"
        );
        assert!(
            line.contains(" \"-\" \"-\" rt="),
            "no referer or agent: {line}"
        );
        let fields: HashMap<&str, &str> = line
            .rsplit("\" ")
            .next()
            .unwrap_or_default()
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        assert_eq!(fields.get("kind"), Some(&"proxy"), "{line}");
        assert_eq!(fields.get("node"), Some(&"web1"), "{line}");
        assert_eq!(fields.get("id").map(|id| id.len()), Some(32), "{line}");
        assert!(
            fields.contains_key("rt") && fields.contains_key("qw"),
            "{line}"
        );
        if fields.get("retries") == Some(&"1") {
            retried += 1;
        }
    }
    assert!(
        retried >= 1,
        "web0 refuses: a request was retried: {lines:#?}"
    );
}

#[tokio::test]
async fn a_request_id_is_taken_only_from_a_trusted_proxy() {
    let untrusted = Cluster::builder().interactive("web1").start().await;
    let reply = Call::new(untrusted.edge, Method::GET, "/web/login")
        .header("X-Request-ID", "from-the-internet")
        .send()
        .await;
    let id = reply.header("x-request-id").expect("an id").to_owned();
    assert_ne!(id, "from-the-internet");
    assert_eq!(reply.echo().header("x-request-id"), Some(id.as_str()));

    let trusted = Cluster::builder()
        .interactive("web1")
        .config("[forwarding]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start()
        .await;
    let reply = Call::new(trusted.edge, Method::GET, "/web/login")
        .header("X-Request-ID", "lb-5f0e8a2c")
        .send()
        .await;
    assert_eq!(reply.header("x-request-id"), Some("lb-5f0e8a2c"));
    assert_eq!(reply.echo().header("x-request-id"), Some("lb-5f0e8a2c"));
    // Even a trusted peer cannot inject a header-splitting or oversized id.
    let reply = Call::new(trusted.edge, Method::GET, "/web/login")
        .header("X-Request-ID", &"a".repeat(300))
        .send()
        .await;
    assert_eq!(reply.header("x-request-id").map(str::len), Some(32));
}

#[tokio::test]
async fn a_reload_reopens_the_access_log_for_logrotate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&log_config(&log, "json"))
        .start()
        .await;
    assert_eq!(get(cluster.edge, "/web/before").await.status, 200);
    assert_eq!(log_lines(&log, 1).await.len(), 1);
    // logrotate moves the file away, then reloads the edge.
    std::fs::rename(&log, &rotated).expect("rotate");
    let config = odoo_edge::config::parse(&cluster.config_text()).expect("config");
    cluster.running().reload(&config);
    assert_eq!(get(cluster.edge, "/web/after").await.status, 200);

    let new = log_lines(&log, 1).await;
    assert_eq!(new.len(), 1, "the reload made a new file: {new:#?}");
    assert!(new[0].contains("\"path\":\"/web/after\""), "{new:#?}");
    let old = log_lines(&rotated, 1).await;
    assert_eq!(old.len(), 1, "{old:#?}");
    assert!(old[0].contains("\"path\":\"/web/before\""), "{old:#?}");
}

#[tokio::test]
async fn a_client_cannot_strip_the_request_id_odoo_receives() {
    let cluster = Cluster::builder().interactive("web1").start().await;
    let reply = Call::new(cluster.edge, Method::GET, "/web/login")
        .header("Connection", "keep-alive, X-Request-ID")
        .send()
        .await;
    assert_eq!(reply.status, 200);
    let id = reply.header("x-request-id").expect("an id");
    assert_eq!(
        reply.echo().header("x-request-id"),
        Some(id),
        "Odoo must get the id the client got back and the log has"
    );
}

#[tokio::test]
async fn a_head_hyper_refuses_still_gets_its_log_line_and_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&format!(
            "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
            log_config(&log, "json")
        ))
        .start()
        .await;
    let bad = raw_request(
        cluster.edge,
        b"GET /web HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let big = format!(
        "GET /web HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(200_000)
    );
    let big = raw_request(cluster.edge, big.as_bytes()).await;
    assert!(big.starts_with("HTTP/1.1 431"), "{big}");

    let lines = log_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let mut statuses: Vec<u64> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .map(|e| {
            assert_eq!(
                (e["method"].as_str(), e["path"].as_str()),
                (Some("-"), Some("-")),
                "{e}"
            );
            e["status"].as_u64().unwrap_or(0)
        })
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 431]);
    let admin = cluster.running().admin.expect("admin API");
    let (scrape, text) = scrape_metrics(admin).await;
    assert_eq!(
        sum(&scrape, "odoo_edge_requests_total", &[("status", "4xx")]),
        2.0,
        "{text}"
    );
    assert_eq!(sum(&scrape, "odoo_edge_requests_in_flight", &[]), 0.0);
}
