//! Websockets through the edge: the handshake relayed to the gevent node, the
//! tunnel, and Odoo's handshake errors passed through.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Cluster, RawReply, STEP, raw_request, read_one_reply, wait_until, ws_connect, ws_echo,
};
use futures_util::{SinkExt as _, StreamExt as _};
use odoo_edge::mock_odoo::{MockConfig, Mode, Role};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// A websocket handshake by hand; `version` is the Sec-WebSocket-Version sent.
fn handshake(cluster: &Cluster, version: &str, with_origin: bool) -> String {
    let origin = if with_origin {
        format!("Origin: http://{}\r\n", cluster.edge)
    } else {
        String::new()
    };
    format!(
        "GET /websocket?version=17.0-1 HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: {version}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n",
        cluster.edge
    )
}

#[tokio::test]
async fn a_websocket_reaches_the_gevent_node_and_echoes() {
    let cluster = Cluster::standard().start().await;
    let (mut ws, response) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("sec-websocket-accept"));
    assert_eq!(cluster.node("bus").stats.websockets_open(), 1);

    let echo = ws_echo(&mut ws, r#"{"event_name": "subscribe"}"#).await;
    assert_eq!(
        echo,
        serde_json::json!({"node": "bus", "echo": r#"{"event_name": "subscribe"}"#})
    );
    // Binary frames come back as they are.
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    let reply = timeout(STEP, ws.next())
        .await
        .expect("reply in time")
        .expect("tunnel open")
        .expect("a valid frame");
    assert_eq!(reply, Message::binary(vec![0u8, 1, 2, 255]));
    for web in ["web1", "web2"] {
        assert_eq!(
            cluster.node(web).stats.connections(),
            0,
            "{web} got a connection"
        );
    }
    ws.close(None).await.expect("close");
    cluster.shutdown().await;
}

#[tokio::test]
async fn websocket_without_upgrade_headers_is_forwarded_and_gets_odoos_400() {
    let cluster = Cluster::standard().start().await;
    let request = format!(
        "GET /websocket HTTP/1.1\r\nHost: {}\r\nOrigin: http://{}\r\nConnection: close\r\n\r\n",
        cluster.edge, cluster.edge
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, request.as_bytes()).await);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        reply.header("x-mock-node"),
        Some("bus"),
        "Odoo's answer, from the gevent node"
    );
    assert!(
        reply
            .text()
            .contains("Empty or missing header(s): connection, sec-websocket-key, sec-websocket-version, upgrade"),
        "{}",
        reply.text()
    );
    assert_eq!(cluster.node("bus").stats.websockets_open(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn websocket_handshake_errors_pass_through_unchanged() {
    let cluster = Cluster::standard().start().await;
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    let mut buf = Vec::new();
    stream
        .write_all(handshake(&cluster, "8", true).as_bytes())
        .await
        .expect("write");
    let reply = read_one_reply(&mut stream, &mut buf).await;
    assert_eq!(reply.status, 426, "{}", reply.text());
    assert_eq!(reply.header("sec-websocket-version"), Some("13"));
    assert_eq!(reply.header("x-mock-node"), Some("bus"));
    assert!(
        reply.text().contains("Wrong websocket version"),
        "{}",
        reply.text()
    );

    // The refused upgrade leaves an ordinary connection that serves the next request.
    stream
        .write_all(handshake(&cluster, "13", false).as_bytes())
        .await
        .expect("write");
    let reply = read_one_reply(&mut stream, &mut buf).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.header("x-mock-node"), Some("bus"));
    assert!(
        reply.text().contains("Empty or missing header(s): origin"),
        "{}",
        reply.text()
    );
    assert_eq!(cluster.node("bus").stats.websockets_open(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn without_a_gevent_node_a_websocket_reaches_a_threaded_interactive_node() {
    let cluster = Cluster::builder()
        .node(MockConfig::new("threaded", Role::Interactive).with_mode(Mode::Threaded))
        .start()
        .await;
    assert!(
        cluster
            .config
            .warnings
            .iter()
            .any(|w| w.contains("no gevent node")),
        "the edge warns: {:?}",
        cluster.config.warnings
    );
    let (mut ws, response) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    assert_eq!(response.status(), 101);
    let echo = ws_echo(&mut ws, "ping?").await;
    assert_eq!(
        echo,
        serde_json::json!({"node": "threaded", "echo": "ping?"})
    );
    ws.close(None).await.expect("close");
    cluster.shutdown().await;
}

#[tokio::test]
async fn fifty_websockets_at_once_each_echo_their_own_messages() {
    let cluster = Cluster::standard().start().await;
    let edge = cluster.edge;
    let sessions = (0..50).map(|i| async move {
        let (mut ws, _) = ws_connect(edge, "/websocket?version=17.0-1").await;
        let mut echoes = Vec::new();
        for round in 0..3 {
            let text = format!("tab {i} message {round}");
            let echo = ws_echo(&mut ws, &text).await;
            echoes.push((text, echo));
        }
        (ws, echoes)
    });
    let results = timeout(STEP, futures_util::future::join_all(sessions))
        .await
        .expect("50 sessions in time");
    assert_eq!(cluster.node("bus").stats.websockets_open(), 50);
    for (_, echoes) in &results {
        for (text, echo) in echoes {
            assert_eq!(echo, &serde_json::json!({"node": "bus", "echo": text}));
        }
    }
    for (mut ws, _) in results {
        ws.close(None).await.expect("close");
    }
    let bus = cluster.node("bus");
    assert!(
        wait_until(STEP, || bus.stats.websockets_open() == 0).await,
        "{} websockets still open on the node",
        bus.stats.websockets_open()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn closing_a_websocket_closes_the_nodes_side() {
    let cluster = Cluster::standard().start().await;
    let bus = cluster.node("bus");
    let (mut ws, _) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    ws_echo(&mut ws, "hello").await;
    assert_eq!(bus.stats.websockets_open(), 1);
    ws.close(None).await.expect("send a close frame");
    // The node answers the close frame; then both sides end.
    let end = timeout(STEP, async {
        // Bounded by STEP; drains to the end of the stream.
        while let Some(Ok(message)) = ws.next().await {
            assert!(
                message.is_close(),
                "only the close reply may follow: {message:?}"
            );
        }
    })
    .await;
    assert!(end.is_ok(), "the tunnel must end after the close handshake");
    assert!(
        wait_until(Duration::from_secs(5), || bus.stats.websockets_open() == 0).await,
        "the node still has the websocket open"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_client_that_vanishes_without_a_close_frame_closes_the_nodes_side() {
    let cluster = Cluster::standard().start().await;
    let bus = cluster.node("bus");
    let (mut ws, _) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    ws_echo(&mut ws, "hello").await;
    assert_eq!(bus.stats.websockets_open(), 1);
    drop(ws);
    assert!(
        wait_until(Duration::from_secs(5), || bus.stats.websockets_open() == 0).await,
        "the node still has the websocket open"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn websocket_routes_under_websocket_go_to_the_gevent_node() {
    let cluster = Cluster::standard().start().await;
    for path in [
        "/websocket/health",
        "/websocket/peek_notifications",
        "/longpolling/poll",
    ] {
        let reply = common::get(cluster.edge, path).await;
        assert_eq!(reply.header("x-mock-node"), Some("bus"), "{path}");
    }
    for path in ["/websocketx", "/web/websocket"] {
        let reply = common::get(cluster.edge, path).await;
        assert_ne!(reply.header("x-mock-node"), Some("bus"), "{path}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_websocket_whose_gevent_node_is_down_gets_502() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .refused_gevent("bus")
        .start()
        .await;
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    stream
        .write_all(handshake(&cluster, "13", true).as_bytes())
        .await
        .expect("write");
    let reply = read_one_reply(&mut stream, &mut Vec::new()).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply.text().contains("<h1>502 "), "{}", reply.text());
    assert_eq!(
        cluster.node("web1").stats.connections(),
        0,
        "websocket traffic never falls back to a prefork interactive node"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_open_websockets() {
    let mut cluster = Cluster::standard().start().await;
    let (mut ws, _) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    ws_echo(&mut ws, "hello").await;
    cluster.stop_edge(Duration::from_millis(300)).await;
    let ended = timeout(Duration::from_secs(2), async {
        // Bounded by the timeout; drains until the tunnel ends.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the tunnel must be closed once the edge has stopped"
    );
    let bus = cluster.node("bus");
    assert!(
        wait_until(Duration::from_secs(2), || bus.stats.websockets_open() == 0).await,
        "the node's side must be closed too"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_browser_style_connection_header_still_opens_a_websocket() {
    // Firefox sends `Connection: keep-alive, Upgrade` and asks for compression.
    let cluster = Cluster::standard().start().await;
    let (mut ws, response) = common::ws_connect_with(
        cluster.edge,
        "/websocket?version=17.0-1",
        &[
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ],
    )
    .await;
    assert_eq!(response.status(), 101);
    let echo = ws_echo(&mut ws, "from firefox").await;
    assert_eq!(echo["node"], "bus");
    ws.close(None).await.expect("close");
    cluster.shutdown().await;
}

/// The standard cluster with a 500 ms websocket idle timeout. The file refuses
/// anything up to 60 s; the parsed config takes a short one.
async fn short_idle_cluster() -> Cluster {
    Cluster::standard()
        .tweak(|c| c.timeouts.websocket_idle = Duration::from_millis(500))
        .start()
        .await
}

#[tokio::test]
async fn a_websocket_idle_longer_than_websocket_idle_is_closed() {
    let cluster = short_idle_cluster().await;
    let (mut ws, _) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    ws_echo(&mut ws, "hello").await;
    let quiet_since = tokio::time::Instant::now();
    let ended = timeout(Duration::from_secs(5), async {
        // Bounded by the timeout; drains until the tunnel ends.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "an idle tunnel must be closed");
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(400),
        "closed after only {:?}",
        quiet_since.elapsed()
    );
    let bus = cluster.node("bus");
    assert!(
        wait_until(Duration::from_secs(2), || bus.stats.websockets_open() == 0).await,
        "the node's side must be closed too"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn traffic_keeps_a_websocket_open_past_websocket_idle() {
    let cluster = short_idle_cluster().await;
    let (mut ws, _) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    // 8 messages 200 ms apart: 1.6 s in all, never 500 ms quiet.
    for i in 0..8 {
        let echo = ws_echo(&mut ws, &format!("keepalive {i}")).await;
        assert_eq!(echo["echo"], format!("keepalive {i}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cluster.node("bus").stats.websockets_open(), 1);
    ws.close(None).await.expect("close");
    cluster.shutdown().await;
}

/// A gevent node played by the test: keeps each request head it receives and
/// answers 400, so the handshake it saw can be inspected.
async fn capturing_node() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind(common::localhost())
        .await
        .expect("bind the capturing node");
    let addr = listener.local_addr().expect("capturing node address");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // Bounded by the head size a test sends.
            while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            seen.lock()
                .expect("heads lock")
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn the_handshake_reaches_the_node_intact_with_the_forwarded_headers() {
    let (node, heads) = capturing_node().await;
    let cluster = Cluster::builder()
        .interactive("web1")
        .external("bus", node, "gevent")
        .start()
        .await;
    let request = format!(
        "GET /websocket?version=17.0-1 HTTP/1.1\r\nHost: {edge}\r\n\
         Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nKeep-Alive: 300\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\nOrigin: http://{edge}\r\n\
         Cookie: session_id=abc\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n",
        edge = cluster.edge
    );
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let reply = read_one_reply(&mut stream, &mut Vec::new()).await;
    assert_eq!(reply.status, 400, "the node's answer is relayed");

    let heads = heads.lock().expect("heads lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = &heads[0];
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("GET /websocket?version=17.0-1 HTTP/1.1"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').expect("a header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let edge = cluster.edge.to_string();
    let origin = format!("http://{edge}");
    assert_eq!(get("host"), [edge.as_str()]);
    assert_eq!(get("upgrade"), ["websocket"]);
    assert_eq!(get("connection").len(), 1);
    assert!(
        get("connection")[0].eq_ignore_ascii_case("upgrade"),
        "{head}"
    );
    assert_eq!(get("sec-websocket-version"), ["13"]);
    assert_eq!(get("sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);
    assert_eq!(get("sec-websocket-extensions"), ["permessage-deflate"]);
    assert_eq!(get("origin"), [origin.as_str()]);
    assert_eq!(get("cookie"), ["session_id=abc"]);
    assert_eq!(
        get("x-forwarded-for"),
        ["127.0.0.1"],
        "spoofed value replaced"
    );
    assert_eq!(get("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    assert_eq!(get("x-forwarded-host"), [edge.as_str()]);
    assert!(
        get("keep-alive").is_empty(),
        "hop-by-hop headers stay behind: {head}"
    );
    assert_eq!(cluster.node("web1").stats.connections(), 0);
    cluster.shutdown().await;
}
