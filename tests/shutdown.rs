//! Stopping the edge. `odoo-edge run` on SIGTERM: a slow request in flight
//! finishes, new connections are refused, websockets get a close frame with
//! 1001 (Going Away), the process exits 0; past `[timeouts] shutdown` a
//! request is cut and the process still exits 0. In process: the node side
//! of a tunnel gets a masked close 1001, and a frame in flight either way
//! ends before any close.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::process::EdgeProcess;
use common::tls::{Pki, tls_listener};
use common::{Cluster, STEP, wait_until, ws_connect, ws_echo};
use futures_util::StreamExt as _;
use http::HeaderValue;
use odoo_edge::mock_odoo::{self, MockConfig, MockHandle, Role};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the edge writes to a client as its close frame: unmasked, 1001 and the reason.
const CLOSE_1001: &[u8] = b"\x88\x16\x03\xe9server shutting down";

// === the edge as a process ===

/// Mock nodes `web1` (interactive, 4 workers) and `bus` (gevent).
async fn nodes() -> (MockHandle, MockHandle) {
    let web1 = mock_odoo::bind(
        common::localhost(),
        MockConfig::new("web1", Role::Interactive),
    )
    .await
    .expect("web1 must bind");
    let bus = mock_odoo::bind(common::localhost(), MockConfig::new("bus", Role::Gevent))
        .await
        .expect("bus must bind");
    (web1, bus)
}

/// A config for `odoo-edge run` in front of `web1` and `bus`, with `shutdown` as deadline.
fn config(web1: &MockHandle, bus: &MockHandle, shutdown: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"{}\"\nrole = \"interactive\"\nworkers = 4\n\n\
         [[nodes]]\nname = \"bus\"\naddress = \"{}\"\nrole = \"gevent\"\n\n\
         [health.interactive]\ninterval = \"1h\"\n\n\
         [health.gevent]\ninterval = \"1h\"\n\n\
         [timeouts]\nshutdown = \"{shutdown}\"\n",
        web1.addr, bus.addr
    )
}

/// `GET path` with `Connection: close` on a raw socket; everything the
/// edge sends until it closes, within `limit`.
async fn raw_get(addr: SocketAddr, path: &str, limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the edge");
    let head = format!("GET {path} HTTP/1.1\r\nHost: erp.example.com\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut reply = Vec::new();
    // A reset is an end too: what matters is what arrived before it.
    let _ = timeout(limit, stream.read_to_end(&mut reply))
        .await
        .expect("the edge must end the connection in time");
    String::from_utf8_lossy(&reply).into_owned()
}

/// The next close frame on `ws`, skipping pings, within [`STEP`].
async fn close_of<S>(ws: &mut WebSocketStream<S>) -> CloseFrame
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(STEP, async {
        // Bounded by STEP.
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a close frame with a status, got {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame in time")
}

/// Asserts `frame` is the edge's 1001.
fn assert_going_away(frame: &CloseFrame) {
    assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
    assert_eq!(frame.reason.as_str(), "server shutting down");
}

/// Reads on to the end of `ws` (the close handshake completes), within [`STEP`].
async fn finish<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(STEP, async {
        // Bounded by STEP: the edge closes the socket.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .expect("the websocket must end");
}

#[tokio::test]
async fn sigterm_finishes_a_slow_request_closes_websockets_with_1001_and_exits_0() {
    let (web1, bus) = nodes().await;
    let deadline = Duration::from_secs(10);
    let mut edge = EdgeProcess::start_text(&config(&web1, &bus, "10s")).await;
    let (mut ws, _) = ws_connect(edge.addr, "/websocket?version=17.0-1").await;
    assert_eq!(ws_echo(&mut ws, "hello").await["node"], "bus");
    let addr = edge.addr;
    let slow = tokio::spawn(async move { raw_get(addr, "/web/slow?mock_sleep=1500", STEP).await });
    assert!(
        wait_until(STEP, || web1.stats.in_flight() == 1).await,
        "the slow request reaches web1"
    );

    let signalled = Instant::now();
    edge.signal(libc::SIGTERM);
    assert_going_away(&close_of(&mut ws).await);
    finish(&mut ws).await;
    // Bounded by STEP; a connection accepted before the listener closed is retried.
    let refused = timeout(STEP, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                Err(e) => panic!("connect failed otherwise: {e}"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "new connections must be refused");
    assert!(
        !slow.is_finished(),
        "refused while the slow request is still in flight"
    );

    let reply = timeout(STEP, slow)
        .await
        .expect("the slow request ends in time")
        .expect("the request task");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("x-mock-node: web1"),
        "{reply}"
    );
    let status = edge.exited(deadline).await;
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < deadline,
        "the edge exits once the request is done, not at the deadline: {:?}",
        signalled.elapsed()
    );
    assert!(
        wait_until(STEP, || bus.stats.websockets_open() == 0).await,
        "the node's websocket ends"
    );
    web1.shutdown().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn with_only_websockets_open_the_edge_exits_long_before_the_deadline() {
    let (web1, bus) = nodes().await;
    let mut edge = EdgeProcess::start_text(&config(&web1, &bus, "60s")).await;
    let (mut ws, _) = ws_connect(edge.addr, "/websocket?version=17.0-1").await;
    assert_eq!(ws_echo(&mut ws, "hello").await["node"], "bus");
    // A second client that never reads nor answers the close.
    let (_silent, _) = ws_connect(edge.addr, "/websocket?version=17.0-1").await;
    assert!(
        wait_until(STEP, || bus.stats.websockets_open() == 2).await,
        "both websockets reach the node"
    );

    let signalled = Instant::now();
    edge.signal(libc::SIGTERM);
    assert_going_away(&close_of(&mut ws).await);
    finish(&mut ws).await;
    let status = edge.exited(STEP).await;
    assert!(status.success(), "{status:?}");
    // The silent client holds its tunnel for 2 s at most (tunnel::CLOSE_LIMIT).
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "idle websockets do not hold the stop up to the 60 s deadline: {:?}",
        signalled.elapsed()
    );
    web1.shutdown().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_request_past_the_shutdown_deadline_is_cut_and_the_edge_exits_0() {
    let (web1, bus) = nodes().await;
    let mut edge = EdgeProcess::start_text(&config(&web1, &bus, "1s")).await;
    let addr = edge.addr;
    let slow = tokio::spawn(async move { raw_get(addr, "/web/slow?mock_sleep=20000", STEP).await });
    assert!(
        wait_until(STEP, || web1.stats.in_flight() == 1).await,
        "the slow request reaches web1"
    );

    let signalled = Instant::now();
    edge.signal(libc::SIGTERM);
    edge.wait_for("shutdown deadline").await;
    let status = edge.exited(STEP).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "the request gets its deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the edge exits soon after the deadline: {took:?}"
    );
    let reply = timeout(STEP, slow)
        .await
        .expect("the request ends in time")
        .expect("the request task");
    assert!(
        !reply.contains(" 200 "),
        "a request cut at the deadline gets no reply: {reply:?}"
    );
    // The node is still sleeping on it: drop it rather than wait.
    drop(web1);
    bus.shutdown().await;
}

// === in process, with a node played by the test ===

/// A gevent node played by the test: it answers one websocket handshake
/// with a 101 and hands over the socket.
async fn raw_node() -> (SocketAddr, oneshot::Receiver<TcpStream>) {
    let listener = TcpListener::bind(common::localhost())
        .await
        .expect("bind the node");
    let addr = listener.local_addr().expect("node address");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // Bounded by the head size the edge sends (and the test's bound).
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
            stream.read_exact(&mut byte).await.expect("read the head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("a Sec-WebSocket-Key");
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        stream.write_all(reply.as_bytes()).await.expect("write 101");
        let _ = tx.send(stream);
    });
    (addr, rx)
}

/// A cluster with `web1` and the test's node as `bus`.
async fn cluster_with(node: SocketAddr) -> Cluster {
    Cluster::builder()
        .interactive("web1")
        .external("bus", node, "gevent")
        .start()
        .await
}

/// Exactly `n` bytes, within [`STEP`].
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    timeout(STEP, stream.read_exact(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{n} bytes must arrive in time"))
        .unwrap_or_else(|e| panic!("{n} bytes must arrive: {e}"));
    out
}

/// Reads one close frame as a node receives it; asserts it is masked and
/// returns its status code and reason.
async fn masked_close(node: &mut TcpStream) -> (u16, String) {
    let head = read_n(node, 2).await;
    assert_eq!(head[0], 0x88, "a final close frame: {head:?}");
    assert_eq!(
        head[1] & 0x80,
        0x80,
        "frames to a node must be masked (RFC 6455 §5.3)"
    );
    let len = usize::from(head[1] & 0x7F);
    assert!(len >= 2, "a close with a status code");
    let key = read_n(node, 4).await;
    let payload: Vec<u8> = read_n(node, len)
        .await
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (code, String::from_utf8_lossy(&payload[2..]).into_owned())
}

/// Reads until the edge closes the socket, within [`STEP`]; returns what came.
async fn rest(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(STEP, stream.read_to_end(&mut out))
        .await
        .expect("the edge must close the socket in time")
        .expect("read to the end");
    out
}

#[tokio::test]
async fn the_node_gets_a_masked_1001_and_a_frame_in_flight_to_the_client_ends_first() {
    let (node_addr, node) = raw_node().await;
    let mut cluster = cluster_with(node_addr).await;
    let (mut ws, _) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
    let mut node = timeout(STEP, node)
        .await
        .expect("the handshake reaches the node")
        .expect("the node's socket");
    // A text frame of 14 bytes, of which the node sends 5 before the stop.
    let message = b"\x81\x0ehello, browser";
    node.write_all(&message[..5]).await.expect("node writes");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let stop = cluster.stop_edge(Duration::from_secs(10));
    let node_side = async {
        // The node's direction is between frames: its close comes at once.
        assert_eq!(
            masked_close(&mut node).await,
            (1001, "server shutting down".to_owned())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.write_all(&message[5..]).await.expect("node finishes");
        // Its close reply is the last thing it sends.
        node.write_all(b"\x88\x02\x03\xe9")
            .await
            .expect("node answers");
        assert_eq!(rest(&mut node).await, b"", "nothing after the close");
    };
    let client_side = async {
        let first = timeout(STEP, ws.next()).await.expect("a message in time");
        match first {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "hello, browser"),
            other => panic!("the frame in flight must arrive whole first: {other:?}"),
        }
        assert_going_away(&close_of(&mut ws).await);
        finish(&mut ws).await;
    };
    tokio::join!(stop, node_side, client_side);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the tunnel closes without waiting for the deadline: {:?}",
        started.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_frame_in_flight_to_the_node_ends_before_its_masked_close() {
    let (node_addr, node) = raw_node().await;
    let mut cluster = cluster_with(node_addr).await;
    let mut client = TcpStream::connect(cluster.edge).await.expect("connect");
    let handshake = format!(
        "GET /websocket?version=17.0-1 HTTP/1.1\r\nHost: {edge}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://{edge}\r\n\r\n",
        edge = cluster.edge
    );
    client
        .write_all(handshake.as_bytes())
        .await
        .expect("handshake");
    let reply = common::read_one_reply(&mut client, &mut Vec::new()).await;
    assert_eq!(reply.status, 101);
    let mut node = timeout(STEP, node)
        .await
        .expect("the handshake reaches the node")
        .expect("the node's socket");
    // A masked binary frame with a 200-byte payload (16-bit length).
    let mut message = vec![0x82, 0xFE, 0x00, 200, 9, 8, 7, 6];
    message.extend((0..200u8).map(|i| i ^ [9, 8, 7, 6][usize::from(i) % 4]));
    client
        .write_all(&message[..3])
        .await
        .expect("client writes");
    assert_eq!(read_n(&mut node, 3).await, &message[..3]);

    let stop = cluster.stop_edge(Duration::from_secs(10));
    let client_side = async {
        // The client's direction is between frames: its close comes at once,
        // unmasked, as a server's frames are.
        assert_eq!(read_n(&mut client, CLOSE_1001.len()).await, CLOSE_1001);
        for piece in message[3..].chunks(50) {
            client.write_all(piece).await.expect("client finishes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
            .write_all(b"\x88\x82\x00\x00\x00\x00\x03\xe9")
            .await
            .expect("client answers");
        assert_eq!(rest(&mut client).await, b"", "nothing after the close");
    };
    let node_side = async {
        assert_eq!(
            read_n(&mut node, message.len() - 3).await,
            &message[3..],
            "the frame arrives whole"
        );
        assert_eq!(
            masked_close(&mut node).await,
            (1001, "server shutting down".to_owned())
        );
        node.write_all(b"\x88\x02\x03\xe9")
            .await
            .expect("node answers");
        assert_eq!(
            rest(&mut node).await,
            b"",
            "the client's close stays behind"
        );
    };
    tokio::join!(stop, client_side, node_side);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_websocket_over_tls_gets_1001_at_the_stop() {
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com"]);
    let mut cluster = Cluster::builder()
        .interactive("web1")
        .gevent("bus")
        .config(&tls_listener(&pki, &["erp"], ""))
        .start()
        .await;
    let tcp = TcpStream::connect(cluster.running().addrs[1])
        .await
        .expect("connect to the TLS listener");
    let name = ServerName::try_from("erp.example.com").expect("a DNS name");
    let tls = timeout(STEP, pki.client(&[b"http/1.1"]).connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake");
    let mut request = "wss://erp.example.com/websocket?version=17.0-1"
        .into_client_request()
        .expect("a valid websocket request");
    request.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://erp.example.com"),
    );
    let (mut ws, _) = timeout(STEP, tokio_tungstenite::client_async(request, tls))
        .await
        .expect("websocket handshake in time")
        .expect("websocket handshake must succeed");
    assert!(
        wait_until(STEP, || cluster.node("bus").stats.websockets_open() == 1).await,
        "the websocket reaches the node"
    );

    let stop = cluster.stop_edge(Duration::from_secs(10));
    let client_side = async {
        assert_going_away(&close_of(&mut ws).await);
        finish(&mut ws).await;
    };
    tokio::join!(stop, client_side);
    assert!(
        wait_until(STEP, || cluster.node("bus").stats.websockets_open() == 0).await,
        "the node's websocket ends"
    );
    cluster.shutdown().await;
}

// === the access log at the stop ===

#[tokio::test]
async fn access_log_lines_queued_at_the_stop_are_written_before_the_edge_exits() {
    const REQUESTS: usize = 1500;
    let (web1, bus) = nodes().await;
    let config = format!(
        "{}\n[access_log]\nformat = \"json\"\npath = \"-\"\n",
        config(&web1, &bus, "10s")
    );
    let mut edge = EdgeProcess::with_config_text(&config)
        .stdout(Stdio::piped())
        .start()
        .await;
    let mut stdout = edge.take_stdout();
    // Nobody reads the log yet: the writer stalls on the full pipe and the
    // lines wait in its queue.
    let mut keep_alive = common::KeptAlive::connect(edge.addr).await;
    for _ in 0..REQUESTS {
        let reply = keep_alive
            .send(common::Call::new(
                edge.addr,
                hyper::Method::GET,
                "/web/login",
            ))
            .await;
        assert_eq!(reply.status, 200);
    }
    drop(keep_alive);
    edge.signal(libc::SIGTERM);
    // Then the log is read, slowly (a busy journal): about 0.1 MB/s.
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut text = Vec::new();
        let mut chunk = [0; 2048];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        text
    });
    assert!(edge.exited(STEP).await.success());
    let text = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    let lines = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(
        lines, REQUESTS,
        "one access log line per request, none lost at exit"
    );
}
