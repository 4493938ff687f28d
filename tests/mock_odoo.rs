//! Integration tests of mock-odoo over real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use odoo_edge::mock_odoo::{self, Fail, MockConfig, MockHandle, Mode, PATTERN, Role};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Upper bound for any single step of a test.
const STEP: Duration = Duration::from_secs(10);

async fn start(cfg: MockConfig) -> MockHandle {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    mock_odoo::bind(addr, cfg).await.expect("mock must bind")
}

fn threaded(name: &str) -> MockConfig {
    MockConfig::new(name, Role::Interactive).with_mode(Mode::Threaded)
}

fn prefork(name: &str, workers: usize) -> MockConfig {
    MockConfig::new(name, Role::Interactive).with_mode(Mode::Prefork { workers })
}

#[derive(Debug)]
struct Response {
    version: u8,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body must be JSON")
    }
}

/// Parses one response from the front of `buf`; `None` until it is complete.
fn parse(buf: &[u8], head_only: bool) -> Option<(Response, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(head_len) = res.parse(buf).expect("response head must parse")
    else {
        return None;
    };
    let headers: Vec<(String, String)> = res
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().expect("numeric content-length"));
    let len = if head_only { 0 } else { len };
    if buf.len() < head_len + len {
        return None;
    }
    let response = Response {
        version: res.version.expect("version"),
        status: res.code.expect("status"),
        reason: res.reason.expect("reason").to_owned(),
        headers,
        body: buf[head_len..head_len + len].to_vec(),
    };
    Some((response, head_len + len))
}

/// Reads exactly one response from a connection that may stay open.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Response {
    timeout(STEP, async {
        loop {
            if !buf.is_empty()
                && let Some((res, used)) = parse(buf, head_only)
            {
                buf.drain(..used);
                return res;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await.expect("read must succeed");
            assert!(n > 0, "connection closed before a full response");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("response in time")
}

/// Sends raw bytes and reads until the server closes; returns everything received.
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    timeout(STEP, stream.read_to_end(&mut out))
        .await
        .expect("server must close in time")?;
    Ok(out)
}

/// Sends a request on a fresh connection and parses the first reply (the connection may stay
/// open).
async fn send(addr: SocketAddr, request: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(&mut stream, &mut Vec::new(), request.starts_with("HEAD ")).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: odoo.test\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn health_endpoints_pass_with_no_store() {
    let mock = start(threaded("n1")).await;
    for path in ["/web/health", "/websocket/health"] {
        let res = send(mock.addr, &get(path)).await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.text(), r#"{"status": "pass"}"#);
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.header("cache-control"), Some("no-store"));
        assert_eq!(res.header("server"), Some("mock-odoo"));
        assert_eq!(res.header("x-mock-node"), Some("n1"));
        assert!(res.header("date").is_some_and(|d| d.ends_with(" GMT")));
    }
}

#[tokio::test]
async fn health_db_server_status_follows_db_up() {
    let up = start(threaded("up")).await;
    let res = send(up.addr, &get("/web/health?db_server_status=0")).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        r#"{"status": "pass", "db_server_status": true}"#
    );

    let down = start(threaded("down").with_db_up(false)).await;
    let res = send(down.addr, &get("/web/health?db_server_status")).await;
    assert_eq!(res.status, 500);
    assert_eq!(
        res.text(),
        r#"{"status": "fail", "db_server_status": false}"#
    );
    // Without the parameter a dead DB still passes, as in Odoo.
    let res = send(down.addr, &get("/web/health")).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn echo_reports_request_and_body_digest() {
    let mock = start(threaded("echo")).await;
    let body = b"hello odoo";
    let request = format!(
        "POST /web/dataset/call_kw?x=1 HTTP/1.1\r\nHost: odoo.test\r\nX-Custom: A b\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = request.into_bytes();
    raw.extend_from_slice(body);
    let out = exchange(mock.addr, &raw).await.expect("exchange");
    let res = parse(&out, false).expect("response").0;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let json = res.json();
    assert_eq!(json["node"], "echo");
    assert_eq!(json["role"], "interactive");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/web/dataset/call_kw");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["http_version"], "HTTP/1.1");
    assert_eq!(json["headers"][0], serde_json::json!(["host", "odoo.test"]));
    assert_eq!(json["headers"][1], serde_json::json!(["x-custom", "A b"]));
    assert_eq!(json["body_len"], body.len());
    assert_eq!(json["body_sha256"], hex::encode(Sha256::digest(body)));

    // The same body sent chunked hashes the same, and a missing query is null.
    let chunked = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n5\r\nhello\r\n5\r\n odoo\r\n0\r\n\r\n";
    let out = exchange(mock.addr, chunked).await.expect("exchange");
    let json = parse(&out, false).expect("response").0.json();
    assert_eq!(json["body_len"], body.len());
    assert_eq!(json["body_sha256"], hex::encode(Sha256::digest(body)));
    assert_eq!(json["query"], serde_json::Value::Null);
}

#[tokio::test]
async fn odoo_view_applies_forwarded_headers_only_with_x_forwarded_host() {
    let mock = start(threaded("pm")).await;
    let without = "GET / HTTP/1.1\r\nHost: odoo:8069\r\nX-Forwarded-For: 1.2.3.4\r\n\
        X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let json = send(mock.addr, without).await.json();
    assert_eq!(
        json["odoo"],
        serde_json::json!({"remote_addr": "127.0.0.1", "scheme": "http", "host": "odoo:8069"})
    );

    let with = "GET / HTTP/1.1\r\nHost: odoo:8069\r\nX-Forwarded-For: 9.9.9.9, 1.2.3.4\r\n\
        X-Forwarded-Proto: http, https\r\nX-Forwarded-Host: evil.test, shop.example.com:8443\r\n\
        Connection: close\r\n\r\n";
    let json = send(mock.addr, with).await.json();
    assert_eq!(
        json["odoo"],
        serde_json::json!({"remote_addr": "1.2.3.4", "scheme": "https", "host": "shop.example.com:8443"})
    );

    // Only X-Forwarded-Host: the others fall back to the peer and "http".
    let host_only = "GET / HTTP/1.1\r\nHost: odoo\r\nX-Forwarded-Host: a.test\r\n\
        Connection: close\r\n\r\n";
    let json = send(mock.addr, host_only).await.json();
    assert_eq!(
        json["odoo"],
        serde_json::json!({"remote_addr": "127.0.0.1", "scheme": "http", "host": "a.test"})
    );
}

#[tokio::test]
async fn prefork_replies_http10_and_closes_after_one_request() {
    let mock = start(prefork("pf", 1)).await;
    // Two pipelined requests: a prefork worker serves only the first, then closes.
    let two = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let out = exchange(mock.addr, two.as_bytes()).await;
    let out = out.expect("exchange");
    let (res, used) = parse(&out, false).expect("response");
    assert_eq!(res.version, 0);
    assert_eq!(res.status, 200);
    assert_eq!(res.reason, "OK");
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.json()["path"], "/a");
    assert_eq!(used, out.len(), "nothing after the first reply");
}

#[tokio::test]
async fn prefork_workers_cap_requests_in_flight() {
    let mock = start(prefork("pf2", 2)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..5 {
        let addr = mock.addr;
        tasks.push(tokio::spawn(async move {
            send(addr, &get(&format!("/slow/{i}?mock_sleep=300"))).await
        }));
    }
    for task in tasks {
        let res = task.await.expect("client task");
        assert_eq!(res.status, 200);
    }
    assert_eq!(mock.stats.max_in_flight(), 2);
    assert_eq!(mock.stats.requests(), 5);
    assert_eq!(mock.stats.connections(), 5);
    // 5 requests of 300 ms on 2 workers need three rounds.
    assert!(started.elapsed() >= Duration::from_millis(850));
}

#[tokio::test]
async fn stalled_request_head_is_dropped_after_read_timeout() {
    let cfg = prefork("slow", 1).with_read_timeout(Duration::from_millis(200));
    let mock = start(cfg).await;
    let mut stream = TcpStream::connect(mock.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut out = Vec::new();
    timeout(STEP, stream.read_to_end(&mut out))
        .await
        .expect("closed in time")
        .expect("clean close");
    assert!(out.is_empty(), "no reply expected, got {out:?}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(mock.stats.read_timeouts(), 1);
    assert_eq!(mock.stats.requests(), 0);
}

#[tokio::test]
async fn threaded_keep_alive_serves_two_requests_on_one_connection() {
    let mock = start(threaded("ka")).await;
    let mut stream = TcpStream::connect(mock.addr).await.expect("connect");
    let mut buf = Vec::new();
    for path in ["/one", "/two"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let res = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(res.version, 1);
        assert_eq!(res.status, 200);
        assert_eq!(res.header("connection"), None);
        assert_eq!(res.json()["path"], path);
    }
    // HEAD has the headers of the echo but no body.
    stream
        .write_all(b"HEAD /three HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let res = read_response(&mut stream, &mut buf, true).await;
    assert_eq!(res.header("connection"), Some("close"));
    assert!(res.header("content-length").is_some_and(|l| l != "0"));
    let mut rest = Vec::new();
    timeout(STEP, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(
        rest.is_empty() && buf.is_empty(),
        "HEAD reply carried a body"
    );
    assert_eq!(mock.stats.connections(), 1);
    assert_eq!(mock.stats.requests(), 3);
}

fn ws_request(skip: &str, overrides: &[(&str, &str)]) -> String {
    let mut headers = vec![
        ("Host", "odoo.test"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "http://odoo.test"),
    ];
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(skip));
    for (name, value) in overrides {
        for header in headers.iter_mut().filter(|(n, _)| n == name) {
            header.1 = value;
        }
    }
    let mut req = "GET /websocket?version=17.0-1 HTTP/1.1\r\n".to_owned();
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req + "\r\n"
}

#[tokio::test]
async fn websocket_handshake_errors_match_odoo() {
    let mock = start(MockConfig::new("ws", Role::Gevent)).await;
    let cases: [(String, u16, &str); 6] = [
        (
            ws_request("origin", &[]),
            400,
            "Empty or missing header(s): origin",
        ),
        (
            get("/websocket"),
            400,
            "Empty or missing header(s): sec-websocket-key, sec-websocket-version, upgrade, origin",
        ),
        (
            ws_request("", &[("Upgrade", "h2c")]),
            400,
            "Invalid upgrade header",
        ),
        (
            ws_request("", &[("Connection", "keep-alive")]),
            400,
            "Invalid connection header",
        ),
        (
            ws_request("", &[("Sec-WebSocket-Version", "8")]),
            426,
            "Wrong websocket version",
        ),
        (
            ws_request("", &[("Sec-WebSocket-Key", "c2hvcnQ=")]),
            400,
            "Invalid Sec-WebSocket-Key header",
        ),
    ];
    for (request, status, text) in cases {
        let res = send(mock.addr, &request).await;
        assert_eq!(res.status, status, "{request}");
        assert!(res.text().contains(text), "{} lacks {text}", res.text());
        if status == 426 {
            assert_eq!(res.header("sec-websocket-version"), Some("13"));
        }
    }
    assert_eq!(mock.stats.websockets_open(), 0);
}

#[tokio::test]
async fn websocket_on_prefork_interactive_is_500() {
    let mock = start(prefork("http-worker", 2)).await;
    let res = send(mock.addr, &ws_request("", &[])).await;
    assert_eq!(res.status, 500);
    assert_eq!(res.reason, "Internal Server Error");
    assert_eq!(mock.stats.websockets_open(), 0);
}

#[tokio::test]
async fn gevent_websocket_echoes_text_naming_the_node() {
    let mock = start(MockConfig::new("gevent-1", Role::Gevent)).await;
    let stream = TcpStream::connect(mock.addr).await.expect("connect");
    let mut request = format!("ws://{}/websocket?version=17.0-1", mock.addr)
        .into_client_request()
        .expect("request");
    let origin = format!("http://{}", mock.addr)
        .parse()
        .expect("origin value");
    request.headers_mut().insert("Origin", origin);
    let (mut ws, response) = timeout(STEP, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake in time")
        .expect("handshake must succeed");
    assert_eq!(response.status(), 101);
    let mut names: Vec<&str> = response.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["connection", "sec-websocket-accept", "upgrade"]);
    assert_eq!(mock.stats.websockets_open(), 1);

    ws.send(Message::text(r#"{"event_name": "subscribe"}"#))
        .await
        .expect("send text");
    let reply = timeout(STEP, ws.next()).await.expect("reply in time");
    let reply = reply.expect("a message").expect("no error");
    let json: serde_json::Value =
        serde_json::from_str(reply.to_text().expect("text reply")).expect("JSON reply");
    assert_eq!(
        json,
        serde_json::json!({"node": "gevent-1", "echo": r#"{"event_name": "subscribe"}"#})
    );

    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    let reply = timeout(STEP, ws.next()).await.expect("reply in time");
    assert_eq!(
        reply.expect("a message").expect("no error"),
        Message::binary(vec![1u8, 2, 3])
    );

    ws.close(None).await.expect("close");
    let deadline = Instant::now() + STEP;
    while mock.stats.websockets_open() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.stats.websockets_open(), 0);
}

#[tokio::test]
async fn mock_fail_modes_as_seen_by_a_raw_client() {
    let mock = start(threaded("fail")).await;

    let out = exchange(mock.addr, get("/?mock_fail=garbage").as_bytes()).await;
    assert_eq!(out.expect("garbage"), b"this is not http\r\n\r\n");

    let out = exchange(mock.addr, get("/?mock_fail=close").as_bytes()).await;
    assert!(out.expect("clean close").is_empty());

    let err = exchange(mock.addr, get("/?mock_fail=reset").as_bytes())
        .await
        .expect_err("reset must surface as an error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    let mut stream = TcpStream::connect(mock.addr).await.expect("connect");
    stream
        .write_all(get("/?mock_fail=hang").as_bytes())
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let hung = timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
    assert!(hung.is_err(), "a hung request must not answer");
    assert_eq!(mock.stats.in_flight(), 1);
    assert_eq!(mock.stats.requests(), 4);

    // Shutdown releases the hung connection.
    timeout(STEP, mock.shutdown())
        .await
        .expect("shutdown in time");
    let n = timeout(STEP, stream.read(&mut byte))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn runtime_fail_switch_applies_to_every_request() {
    let mock = start(threaded("switch")).await;
    mock.set_fail(Some(Fail::Garbage));
    let out = exchange(mock.addr, get("/anything").as_bytes()).await;
    assert_eq!(out.expect("garbage"), b"this is not http\r\n\r\n");
    mock.set_fail(None);
    assert_eq!(send(mock.addr, &get("/anything")).await.status, 200);

    let res = send(mock.addr, &get("/__mock/fail?mode=close")).await;
    assert_eq!(res.json(), serde_json::json!({"fail": "close"}));
    assert_eq!(mock.stats.fail(), Some(Fail::Close));
    let out = exchange(mock.addr, get("/web/health").as_bytes()).await;
    assert!(out.expect("clean close").is_empty());
    assert_eq!(
        send(mock.addr, &get("/__mock/fail?mode=bogus"))
            .await
            .status,
        400
    );
    send(mock.addr, &get("/__mock/fail?mode=none")).await;
    assert_eq!(send(mock.addr, &get("/web/health")).await.status, 200);
}

#[tokio::test]
async fn seen_counts_requests_by_id() {
    let mock = start(threaded("seen")).await;
    let req = "GET / HTTP/1.1\r\nHost: h\r\nX-Mock-Request-Id: abc\r\nConnection: close\r\n\r\n";
    send(mock.addr, req).await;
    send(mock.addr, req).await;
    assert_eq!(mock.stats.seen("abc"), 2);
    assert_eq!(mock.stats.seen("other"), 0);
}

#[tokio::test]
async fn declared_200_mib_body_gets_413_without_being_read() {
    let mock = start(prefork("big", 1)).await;
    let req = format!(
        "POST /web/binary/upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        200 * 1024 * 1024
    );
    let res = send(mock.addr, &req).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.reason, "Request Entity Too Large");
    assert_eq!(res.version, 0);
}

#[tokio::test]
async fn mock_stats_reports_counters() {
    let mock = start(threaded("stats")).await;
    let req = "GET / HTTP/1.1\r\nHost: h\r\nX-Mock-Request-Id: r1\r\nConnection: close\r\n\r\n";
    send(mock.addr, req).await;
    let json = send(mock.addr, &get("/__mock/stats")).await.json();
    assert_eq!(json["node"], "stats");
    assert_eq!(json["requests"], 1, "control requests are not counted");
    assert_eq!(json["connections"], 2);
    assert_eq!(json["in_flight"], 0);
    assert_eq!(json["max_in_flight"], 1);
    assert_eq!(json["read_timeouts"], 0);
    assert_eq!(json["websockets_open"], 0);
    assert_eq!(json["seen"], serde_json::json!({"r1": 1}));
}

#[tokio::test]
async fn size_status_and_cookie_knobs() {
    let mock = start(threaded("knobs")).await;
    let size = 200_000;
    let res = send(
        mock.addr,
        &get(&format!("/blob?mock_size={size}&mock_status=404")),
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    assert_eq!(res.body.len(), size);
    assert!(
        res.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == PATTERN[i % 64])
    );

    let res = send(mock.addr, &get("/web/login")).await;
    let cookie = res.header("set-cookie").expect("session cookie");
    let (sid, attrs) = cookie
        .strip_prefix("session_id=")
        .and_then(|c| c.split_once("; "))
        .expect("session_id first");
    assert_eq!(sid.len(), 40);
    assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        attrs.starts_with("Expires=") && attrs.ends_with(" GMT; Max-Age=604800; HttpOnly; Path=/")
    );
    let other = send(mock.addr, &get("/x?mock_cookie=1")).await;
    assert_ne!(other.header("set-cookie"), res.header("set-cookie"));
    assert!(
        send(mock.addr, &get("/x"))
            .await
            .header("set-cookie")
            .is_none()
    );
}

#[tokio::test]
async fn limit_time_real_closes_without_reply() {
    let cfg = threaded("watchdog").with_limit_time_real(Some(Duration::from_millis(100)));
    let mock = start(cfg).await;
    let started = Instant::now();
    let out = exchange(mock.addr, get("/report?mock_sleep=5000").as_bytes()).await;
    assert!(out.expect("clean close").is_empty());
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(90) && elapsed < Duration::from_secs(4));
    assert_eq!(
        send(mock.addr, &get("/fast?mock_sleep=10")).await.status,
        200
    );
}

#[tokio::test]
async fn garbage_request_gets_400_and_close() {
    let mock = start(threaded("bad")).await;
    let res = send(mock.addr, "NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(mock.stats.requests(), 0);
}

#[tokio::test]
async fn latency_delays_replies_but_not_control_endpoints() {
    let mock = start(threaded("lat").with_latency(Duration::from_millis(200))).await;
    let started = Instant::now();
    send(mock.addr, &get("/__mock/stats")).await;
    assert!(started.elapsed() < Duration::from_millis(150));
    let started = Instant::now();
    send(mock.addr, &get("/")).await;
    assert!(started.elapsed() >= Duration::from_millis(190));
}

// === static files and the filestore ===

/// An mtime every fixture file gets, so `Last-Modified` and ETags are known in advance.
const MTIME_SECS: u64 = 784_111_777;
const MTIME_HTTP: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// Writes `content` at `root/rel` (creating directories) with mtime [`MTIME_SECS`].
fn write_file(root: &Path, rel: &str, content: &[u8]) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
    std::fs::write(&path, content).expect("write fixture");
    let mtime = UNIX_EPOCH + Duration::from_secs(MTIME_SECS);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    path
}

/// zlib's Adler-32, written again here so the test does not trust the mock's copy.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn static_etag(path: &Path, size: usize) -> String {
    let check = adler32(path.to_str().expect("UTF-8 path").as_bytes());
    format!("\"{MTIME_SECS}-{size}-{check}\"")
}

/// A GET with extra header lines, closing after the reply.
fn get_with(path: &str, headers: &[&str]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: odoo.test\r\nConnection: close\r\n");
    for header in headers {
        req.push_str(header);
        req.push_str("\r\n");
    }
    req + "\r\n"
}

/// Sends `request` and reads to the close; asserts that nothing follows the one reply, so
/// a reply announced with a Content-Length of 0 (or a 304) really carried no body.
async fn exactly_one_reply(addr: SocketAddr, request: &str) -> Response {
    let out = exchange(addr, request.as_bytes()).await.expect("exchange");
    let head_only = request.starts_with("HEAD ");
    let (res, used) = parse(&out, head_only).expect("a complete reply");
    assert_eq!(used, out.len(), "bytes after the reply to {request:?}");
    res
}

/// Header names of a reply, lowercased and sorted.
fn header_names(res: &Response) -> Vec<String> {
    let mut names: Vec<String> = res.headers.iter().map(|(n, _)| n.to_lowercase()).collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn static_file_carries_every_odoo_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let css = write_file(
        dir.path(),
        "addons/web/static/src/app.css",
        b"body { color: red }",
    );
    let png = write_file(
        dir.path(),
        "addons/web/static/img/logo.png",
        b"\x89PNG fake",
    );
    let mock = start(threaded("static").with_addons_paths([dir.path().join("addons")])).await;

    let res = send(mock.addr, &get("/web/static/src/app.css")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"body { color: red }");
    assert_eq!(res.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(res.header("content-length"), Some("19"));
    assert_eq!(res.header("cache-control"), Some("public, max-age=604800"));
    let expires = res.header("expires").expect("Expires");
    assert!(expires.ends_with(" GMT") && Some(expires) != res.header("date"));
    assert_eq!(res.header("etag"), Some(static_etag(&css, 19).as_str()));
    assert_eq!(res.header("last-modified"), Some(MTIME_HTTP));
    assert_eq!(
        res.header("content-disposition"),
        Some("inline; filename=app.css")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        res.header("content-security-policy"),
        None,
        "CSP is for images"
    );
    assert_eq!(
        res.header("accept-ranges"),
        None,
        "werkzeug sends it on 206 only"
    );

    let res = send(mock.addr, &get("/web/static/img/logo.png")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"\x89PNG fake");
    assert_eq!(res.header("content-type"), Some("image/png"));
    assert_eq!(
        res.header("content-security-policy"),
        Some("default-src 'none'")
    );
    assert_eq!(res.header("etag"), Some(static_etag(&png, 9).as_str()));
    assert_eq!(mock.stats.static_hits(), 2);
    assert_eq!(mock.stats.filestore_hits(), 0);
}

#[tokio::test]
async fn static_file_not_modified_is_304_without_entity_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "a/web/static/app.js", b"console.log(1);");
    let mock = start(threaded("static304").with_addons_paths([dir.path().join("a")])).await;
    let etag = static_etag(&path, 15);

    let weak_in_list = format!("If-None-Match: \"nope\", W/{etag}");
    let since = format!("If-Modified-Since: {MTIME_HTTP}");
    for condition in [format!("If-None-Match: {etag}"), weak_in_list, since] {
        let req = get_with("/web/static/app.js", &[&condition]);
        let res = exactly_one_reply(mock.addr, &req).await;
        assert_eq!(res.status, 304, "{condition}");
        assert_eq!(res.reason, "Not Modified");
        assert!(res.body.is_empty());
        assert_eq!(res.header("etag"), Some(etag.as_str()));
        assert_eq!(res.header("cache-control"), Some("public, max-age=604800"));
        assert!(res.header("expires").is_some(), "werkzeug keeps Expires");
        for gone in ["content-type", "content-length", "last-modified"] {
            assert_eq!(res.header(gone), None, "{gone} on a 304");
        }
    }

    // A stale tag, or a date before the mtime, gets the file.
    for condition in [
        "If-None-Match: \"1-2-3\"",
        "If-Modified-Since: Sat, 05 Nov 1994 08:49:37 GMT",
    ] {
        let res = send(mock.addr, &get_with("/web/static/app.js", &[condition])).await;
        assert_eq!(res.status, 200, "{condition}");
        assert_eq!(res.body, b"console.log(1);");
    }
}

#[tokio::test]
async fn static_range_is_206_and_unsatisfiable_range_is_416() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "a/web/static/digits.txt", b"0123456789");
    let mock = start(threaded("range").with_addons_paths([dir.path().join("a")])).await;

    let cases = [
        ("bytes=2-5", "bytes 2-5/10", &b"2345"[..]),
        ("bytes=7-", "bytes 7-9/10", b"789"),
        ("bytes=-3", "bytes 7-9/10", b"789"),
        ("bytes=8-100", "bytes 8-9/10", b"89"),
    ];
    for (range, content_range, body) in cases {
        let req = get_with("/web/static/digits.txt", &[&format!("Range: {range}")]);
        let res = exactly_one_reply(mock.addr, &req).await;
        assert_eq!(res.status, 206, "{range}");
        assert_eq!(res.reason, "Partial Content");
        assert_eq!(res.header("content-range"), Some(content_range));
        assert_eq!(res.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            res.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(res.body, body, "{range}");
    }

    for range in [
        "bytes=10-",
        "bytes=5-2",
        "bytes=0-1,4-5",
        "bytes=-11",
        "lines=1-2",
    ] {
        let req = get_with("/web/static/digits.txt", &[&format!("Range: {range}")]);
        let res = send(mock.addr, &req).await;
        assert_eq!(res.status, 416, "{range}");
        assert_eq!(res.reason, "Requested Range Not Satisfiable");
        assert_eq!(res.header("content-range"), Some("bytes */10"));
    }

    // If-Range with a stale validator: the whole file, 200.
    let req = get_with(
        "/web/static/digits.txt",
        &["Range: bytes=0-1", "If-Range: \"stale\""],
    );
    let res = send(mock.addr, &req).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"0123456789");
    // ...and with the current one, the range.
    let if_range = format!("If-Range: {}", static_etag(&path, 10));
    let req = get_with("/web/static/digits.txt", &["Range: bytes=0-1", &if_range]);
    assert_eq!(send(mock.addr, &req).await.body, b"01");
}

#[tokio::test]
async fn static_head_has_the_get_headers_and_no_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Larger than one socket write, so the file is streamed in pieces.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let path = write_file(dir.path(), "a/web/static/lib/big.js", &big);
    let mock = start(prefork("head", 1).with_addons_paths([dir.path().join("a")])).await;

    let req = "HEAD /web/static/lib/big.js HTTP/1.1\r\nHost: h\r\n\r\n";
    let res = exactly_one_reply(mock.addr, req).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("300000"));
    assert_eq!(
        res.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        res.header("etag"),
        Some(static_etag(&path, big.len()).as_str())
    );

    let res = exactly_one_reply(mock.addr, &get("/web/static/lib/big.js")).await;
    assert_eq!(res.status, 200);
    assert!(res.body == big, "streamed body differs from the file");
}

#[tokio::test]
async fn static_not_found_texts_match_odoo() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "a/web/static/src/app.js", b"x");
    std::fs::create_dir_all(dir.path().join("a/web/static/src/dir")).expect("mkdir");
    let mock = start(threaded("nf").with_addons_paths([dir.path().join("a")])).await;

    let res = send(mock.addr, &get("/nope/static/src/app.js")).await;
    assert_eq!(res.status, 404);
    assert!(
        res.text().contains("<p>Module \"nope\" not found.</p>"),
        "{}",
        res.text()
    );

    for (path, text) in [
        (
            "/web/static/src/missing.js",
            "File \"src/missing.js\" not found in module web.",
        ),
        // A directory is not a file.
        (
            "/web/static/src/dir",
            "File \"src/dir\" not found in module web.",
        ),
        // The name is percent-decoded before the lookup, as werkzeug does.
        (
            "/web/static/src/no%20such.js",
            "File \"src/no such.js\" not found in module web.",
        ),
    ] {
        let res = send(mock.addr, &get(path)).await;
        assert_eq!(res.status, 404, "{path}");
        assert!(res.text().contains(text), "{path}: {}", res.text());
    }
    assert_eq!(mock.stats.static_hits(), 4);
}

#[tokio::test]
async fn first_addons_path_holding_the_file_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "community/web/static/both.txt", b"community");
    write_file(dir.path(), "enterprise/web/static/both.txt", b"enterprise");
    write_file(
        dir.path(),
        "enterprise/web/static/only_second.txt",
        b"second",
    );
    write_file(dir.path(), "enterprise/web_studio/static/s.txt", b"studio");
    let roots = ["community", "enterprise"].map(|r| dir.path().join(r));
    let mock = start(threaded("order").with_addons_paths(roots)).await;

    for (path, body) in [
        ("/web/static/both.txt", &b"community"[..]),
        ("/web/static/only_second.txt", b"second"),
        ("/web_studio/static/s.txt", b"studio"),
    ] {
        let res = send(mock.addr, &get(path)).await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.body, body, "{path}");
    }

    // Reversed order: the other copy.
    let roots = ["enterprise", "community"].map(|r| dir.path().join(r));
    let mock = start(threaded("order2").with_addons_paths(roots)).await;
    assert_eq!(
        send(mock.addr, &get("/web/static/both.txt")).await.body,
        b"enterprise"
    );
}

#[tokio::test]
async fn static_traversal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "secret.txt", b"TOP SECRET");
    write_file(dir.path(), "a/web/static/ok.txt", b"ok");
    write_file(dir.path(), "a/web/secret.txt", b"TOP SECRET");
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("a/web/static/link.txt"),
    )
    .expect("symlink");
    let mock = start(threaded("trav").with_addons_paths([dir.path().join("a")])).await;

    let attacks = [
        "/web/static/../secret.txt",
        "/web/static/../../secret.txt",
        "/web/static/%2e%2e/secret.txt",
        "/web/static/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/web/static/./ok.txt",
        "/web/static//ok.txt",
        "/web/static/..%5csecret.txt",
        "/web/static/ok.txt%00",
        "/web/static/lib/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/web/static/%2fetc%2fpasswd",
        "/%2e%2e/static/secret.txt",
        "/web/static/link.txt",
    ];
    for path in attacks {
        let res = send(mock.addr, &get(path)).await;
        assert_eq!(res.status, 404, "{path}");
        assert!(!res.text().contains("TOP SECRET"), "{path} leaked");
    }
    assert_eq!(
        send(mock.addr, &get("/web/static/ok.txt")).await.body,
        b"ok"
    );
}

#[tokio::test]
async fn static_paths_echo_without_addons_but_are_counted() {
    let mock = start(threaded("plain")).await;
    let res = send(mock.addr, &get("/web/static/src/app.js")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["path"], "/web/static/src/app.js");
    // Not the static form: neither served nor counted.
    send(mock.addr, &get("/web/statics/x")).await;
    send(mock.addr, &get("/web/static/")).await;
    assert_eq!(mock.stats.static_hits(), 1);
    let json = send(mock.addr, &get("/__mock/stats")).await.json();
    assert_eq!(json["static_hits"], 1);
    assert_eq!(json["filestore_hits"], 0);
}

/// A filestore with one attachment for database `db`; returns (tempdir, id, file path).
fn filestore_with(db: &str, content: &[u8]) -> (tempfile::TempDir, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = mock_odoo::store_attachment(dir.path(), db, content).expect("store attachment");
    assert_eq!(id.len(), 40);
    let path = write_file(dir.path(), &format!("{db}/{}/{id}", &id[..2]), content);
    (dir, id, path)
}

#[tokio::test]
async fn x_sendfile_reply_has_exactly_odoos_headers_and_no_body() {
    let (fs, id, path) = filestore_with("prod", b"%PDF-1.4 attachment");
    let mock = start(threaded("xs").with_x_sendfile(fs.path()).with_db("prod")).await;

    let res = exactly_one_reply(mock.addr, &get(&format!("/web/content/{id}"))).await;
    assert_eq!(res.status, 200);
    assert!(res.body.is_empty());
    let expected = [
        ("content-length", "0".to_owned()),
        ("content-type", "application/octet-stream".to_owned()),
        ("content-disposition", format!("inline; filename={id}")),
        ("etag", format!("\"{id}\"")),
        ("last-modified", MTIME_HTTP.to_owned()),
        ("cache-control", "no-cache, private".to_owned()),
        ("x-sendfile", path.to_str().expect("UTF-8").to_owned()),
        (
            "x-accel-redirect",
            format!("/web/filestore/prod/{}/{id}", &id[..2]),
        ),
        ("x-content-type-options", "nosniff".to_owned()),
        ("content-security-policy", "default-src 'none'".to_owned()),
        ("connection", "close".to_owned()),
        ("server", "mock-odoo".to_owned()),
        ("x-mock-node", "xs".to_owned()),
    ];
    for (name, value) in &expected {
        assert_eq!(res.header(name), Some(value.as_str()), "{name}");
    }
    let mut names: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    names.push("date".into());
    names.sort_unstable();
    assert_eq!(header_names(&res), names);

    // HEAD: the same reply.
    let head = format!("HEAD /web/content/{id} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let res = exactly_one_reply(mock.addr, &head).await;
    assert_eq!(res.header("content-length"), Some("0"));
    assert!(res.header("x-accel-redirect").is_some());
}

#[tokio::test]
async fn x_sendfile_range_is_206_with_content_range_and_no_body() {
    let (fs, id, _) = filestore_with("odoo", b"0123456789abcdef");
    let mock = start(threaded("xs206").with_x_sendfile(fs.path())).await;
    let url = format!("/web/content/{id}");

    let res = exactly_one_reply(mock.addr, &get_with(&url, &["Range: bytes=4-7"])).await;
    assert_eq!(res.status, 206);
    assert_eq!(res.header("content-range"), Some("bytes 4-7/16"));
    assert_eq!(res.header("accept-ranges"), Some("bytes"));
    assert_eq!(res.header("content-length"), Some("0"));
    assert!(res.body.is_empty());
    let accel = format!("/web/filestore/odoo/{}/{id}", &id[..2]);
    assert_eq!(res.header("x-accel-redirect"), Some(accel.as_str()));
    assert!(res.header("x-sendfile").is_some());

    // Unsatisfiable: werkzeug's 416 page, no delegation.
    let res = send(mock.addr, &get_with(&url, &["Range: bytes=16-"])).await;
    assert_eq!(res.status, 416);
    assert_eq!(res.header("content-range"), Some("bytes */16"));
    assert_eq!(res.header("x-accel-redirect"), None);
}

#[tokio::test]
async fn x_sendfile_not_modified_is_a_bare_304() {
    let (fs, id, _) = filestore_with("odoo", b"cached attachment");
    let mock = start(threaded("xs304").with_x_sendfile(fs.path())).await;
    let url = format!("/web/content/{id}");
    let inm = format!("If-None-Match: \"{id}\"");

    let res = exactly_one_reply(mock.addr, &get_with(&url, &[&inm])).await;
    assert_eq!(res.status, 304);
    assert!(res.body.is_empty());
    for gone in [
        "x-sendfile",
        "x-accel-redirect",
        "content-length",
        "content-type",
        "last-modified",
    ] {
        assert_eq!(res.header(gone), None, "{gone} on a 304");
    }
    assert_eq!(res.header("etag"), Some(format!("\"{id}\"").as_str()));
    assert_eq!(res.header("cache-control"), Some("no-cache, private"));

    // `*` matches too; another tag does not.
    let res = send(mock.addr, &get_with(&url, &["If-None-Match: *"])).await;
    assert_eq!(res.status, 304);
    let res = send(mock.addr, &get_with(&url, &["If-None-Match: \"other\""])).await;
    assert_eq!(res.status, 200);
    assert!(res.header("x-accel-redirect").is_some());
}

#[tokio::test]
async fn x_sendfile_finds_the_legacy_three_hex_layout() {
    let fs = tempfile::tempdir().expect("tempdir");
    let id = "abcdef0123456789abcdef0123456789abcdef01";
    let legacy = write_file(fs.path(), &format!("odoo/abc/{id}"), b"legacy");
    let mock = start(threaded("legacy").with_x_sendfile(fs.path())).await;

    let res = exactly_one_reply(mock.addr, &get(&format!("/web/content/{id}"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("x-accel-redirect"),
        Some(format!("/web/filestore/odoo/abc/{id}").as_str())
    );
    assert_eq!(res.header("x-sendfile"), legacy.to_str());

    // The two-hex layout wins when both exist.
    write_file(fs.path(), &format!("odoo/ab/{id}"), b"current");
    let res = send(mock.addr, &get(&format!("/web/content/{id}"))).await;
    assert_eq!(
        res.header("x-accel-redirect"),
        Some(format!("/web/filestore/odoo/ab/{id}").as_str())
    );
}

#[tokio::test]
async fn content_knobs_download_unique_mimetype_filename_cookie() {
    let (fs, id, _) = filestore_with("odoo", b"knobs");
    let mock = start(threaded("knobs").with_x_sendfile(fs.path())).await;

    let res = send(mock.addr, &get(&format!("/web/content/{id}?download=1"))).await;
    assert_eq!(
        res.header("content-disposition"),
        Some(format!("attachment; filename={id}").as_str())
    );

    let res = send(mock.addr, &get(&format!("/web/content/{id}?unique=1a2b3c"))).await;
    assert_eq!(
        res.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(res.header("expires").is_some());

    let path = format!("/web/content/{id}/My%20Report.pdf?mimetype=application%2Fpdf");
    let res = send(mock.addr, &get(&path)).await;
    assert_eq!(res.header("content-type"), Some("application/pdf"));
    assert_eq!(
        res.header("content-disposition"),
        Some("inline; filename=\"My Report.pdf\"")
    );
    // Text types get werkzeug's charset.
    let res = send(
        mock.addr,
        &get(&format!("/web/content/{id}?mimetype=text/plain")),
    )
    .await;
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let res = send(mock.addr, &get(&format!("/web/content/{id}?mock_cookie=1"))).await;
    let cookie = res.header("set-cookie").expect("Set-Cookie");
    assert!(cookie.starts_with("session_id=") && cookie.ends_with("; HttpOnly; Path=/"));
    assert!(res.header("x-accel-redirect").is_some());
    let res = send(mock.addr, &get(&format!("/web/content/{id}"))).await;
    assert_eq!(res.header("set-cookie"), None);
}

#[tokio::test]
async fn mock_accel_sends_exactly_the_given_target() {
    let (fs, id, _) = filestore_with("odoo", b"accel");
    let mock = start(threaded("accel").with_x_sendfile(fs.path())).await;

    for (knob, target) in [
        (
            "%2Fweb%2Ffilestore%2F..%2F..%2Fetc%2Fpasswd",
            "/web/filestore/../../etc/passwd",
        ),
        (
            "/web/filestore/odoo/zz/missing",
            "/web/filestore/odoo/zz/missing",
        ),
        ("not-a-path", "not-a-path"),
        ("/elsewhere/x", "/elsewhere/x"),
    ] {
        let url = format!("/web/content/{id}?mock_accel={knob}");
        let res = exactly_one_reply(mock.addr, &get(&url)).await;
        assert_eq!(res.status, 200, "{knob}");
        assert_eq!(res.header("x-accel-redirect"), Some(target), "{knob}");
        assert_eq!(res.header("content-length"), Some("0"));
        assert!(res.body.is_empty());
    }
    // A knob cannot inject header lines.
    let url = format!("/web/content/{id}?mock_accel=%2Fx%0D%0AX-Evil:%201");
    let res = send(mock.addr, &get(&url)).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("x-evil"), None);
}

#[tokio::test]
async fn web_filestore_reaching_odoo_is_404_and_counted() {
    let (fs, _, _) = filestore_with("odoo", b"x");
    let mock = start(threaded("bad-accel").with_x_sendfile(fs.path())).await;
    for path in [
        "/web/filestore/odoo/ab/abcdef",
        "/web/filestore/../etc/passwd",
    ] {
        let res = send(mock.addr, &get(path)).await;
        assert_eq!(res.status, 404, "{path}");
    }
    assert_eq!(mock.stats.filestore_hits(), 2);
    let json = send(mock.addr, &get("/__mock/stats")).await.json();
    assert_eq!(json["filestore_hits"], 2);

    // Without x_sendfile Odoo's route still answers 404 (without the error log).
    let plain = start(threaded("plain")).await;
    assert_eq!(
        send(plain.addr, &get("/web/filestore/odoo/ab/cd"))
            .await
            .status,
        404
    );
    assert_eq!(plain.stats.filestore_hits(), 1);
}

#[tokio::test]
async fn unknown_attachment_is_404() {
    let (fs, id, _) = filestore_with("odoo", b"known");
    let mock = start(threaded("unknown").with_x_sendfile(fs.path())).await;
    let upper = id.to_uppercase();
    for path in [
        "/web/content/0000000000000000000000000000000000000000".to_owned(),
        "/web/content/42".to_owned(),
        format!("/web/content/{upper}"),
        format!("/web/content/{}", &id[..39]),
        "/web/content/".to_owned(),
    ] {
        let res = send(mock.addr, &get(&path)).await;
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.header("x-accel-redirect"), None);
    }
    // Another database's filestore is not searched.
    let other = start(
        threaded("otherdb")
            .with_x_sendfile(fs.path())
            .with_db("other"),
    )
    .await;
    assert_eq!(
        send(other.addr, &get(&format!("/web/content/{id}")))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn without_x_sendfile_the_attachment_bytes_are_served() {
    let content = b"the attachment itself";
    let (fs, id, _) = filestore_with("odoo", content);
    let mock = start(prefork("bytes", 1).with_filestore(fs.path())).await;
    let url = format!("/web/content/{id}");

    let res = exactly_one_reply(mock.addr, &get(&url)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, content);
    assert_eq!(
        res.header("content-length"),
        Some(content.len().to_string().as_str())
    );
    assert_eq!(res.header("x-sendfile"), None);
    assert_eq!(res.header("x-accel-redirect"), None);
    assert_eq!(res.header("etag"), Some(format!("\"{id}\"").as_str()));

    let res = exactly_one_reply(mock.addr, &get_with(&url, &["Range: bytes=4-13"])).await;
    assert_eq!(res.status, 206);
    assert_eq!(res.body, b"attachment");
    assert_eq!(res.header("content-range"), Some("bytes 4-13/21"));

    // mock_accel means nothing without x_sendfile.
    let res = send(mock.addr, &get(&format!("{url}?mock_accel=/x"))).await;
    assert_eq!(res.header("x-accel-redirect"), None);
    assert_eq!(res.body, content);
}

#[tokio::test]
async fn web_content_still_echoes_on_nodes_without_a_filestore() {
    let mock = start(threaded("echo-content")).await;
    let res = send(mock.addr, &get("/web/content/42?mock_size=10")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, &PATTERN[..10]);
}
