//! The edge in front of in-process mock Odoo nodes, over real sockets on
//! 127.0.0.1: routing, forwarded headers, body limits and buffering, retries
//! and the error pages.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Call, Cluster, RawReply, STEP, get, localhost, post, raw_request, read_to_close, sha256_hex,
    ws_connect, ws_echo,
};
use hyper::Method;
use odoo_edge::mock_odoo::{Fail, PATTERN};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

// === routing and connections ===

/// A deterministic, non-repeating-looking body of `len` bytes.
fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn ordinary_requests_alternate_over_the_interactive_nodes() {
    let cluster = Cluster::standard().start().await;
    let mut names = Vec::new();
    for i in 0..10 {
        let reply = get(cluster.edge, &format!("/web/action/{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        names.push(reply.echo().node().to_owned());
    }
    for pair in names.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "consecutive requests go to different nodes: {names:?}"
        );
    }
    let web1 = names.iter().filter(|n| *n == "web1").count();
    let web2 = names.iter().filter(|n| *n == "web2").count();
    assert_eq!((web1, web2), (5, 5), "{names:?}");
    assert_eq!(
        cluster.node("bus").stats.requests(),
        0,
        "the gevent node gets no ordinary request"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_the_workers_wait_for_a_worker_and_all_succeed() {
    let cluster = Cluster::standard().start().await;
    let edge = cluster.edge;
    // 40 requests of 100 ms at once on 2 x 4 prefork workers.
    let calls = (0..40).map(|i| async move {
        Call::new(edge, Method::GET, &format!("/web/slow/{i}?mock_sleep=100"))
            .send()
            .await
    });
    let replies = timeout(STEP, futures_util::future::join_all(calls))
        .await
        .expect("40 requests in time");
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    for web in ["web1", "web2"] {
        let requests = cluster.node(web).stats.requests();
        assert_eq!(requests, 20, "{web}: round robin splits evenly");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_cron_node_never_gets_a_connection() {
    let cluster = Cluster::standard().start().await;
    for i in 0..12 {
        assert_eq!(get(cluster.edge, &format!("/web?i={i}")).await.status, 200);
        let reply = post(
            cluster.edge,
            "/web/dataset/call_kw",
            format!("{{\"id\": {i}}}"),
        )
        .await;
        assert_eq!(reply.status, 200);
        let health = get(cluster.edge, "/websocket/health").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.header("x-mock-node"), Some("bus"));
        let (mut ws, response) = ws_connect(cluster.edge, "/websocket?version=17.0-1").await;
        assert_eq!(response.status(), 101);
        let echo = ws_echo(&mut ws, &format!("hello {i}")).await;
        assert_eq!(echo["node"], "bus");
        ws.close(None).await.expect("close the websocket");
    }
    // Two more ordinary requests make 50.
    assert_eq!(get(cluster.edge, "/web/login").await.status, 200);
    assert_eq!(post(cluster.edge, "/jsonrpc", "{}").await.status, 200);
    assert_eq!(
        cluster.cron_connections(),
        0,
        "the cron node must never be contacted"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_path_and_query_reach_the_node_unchanged() {
    let cluster = Cluster::standard().start().await;
    let target =
        "/web/image/res.partner/3/avatar_128?unique=2024-01-01%2012%3A00&x=a+b&x=%E2%82%AC";
    let echo = get(cluster.edge, target).await.echo();
    assert_eq!(echo.0["path"], "/web/image/res.partner/3/avatar_128");
    assert_eq!(
        echo.0["query"],
        "unique=2024-01-01%2012%3A00&x=a+b&x=%E2%82%AC"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_kept_alive_client_connection_carries_several_requests() {
    let cluster = Cluster::standard().start().await;
    let mut conn = common::KeptAlive::connect(cluster.edge).await;
    let mut names = Vec::new();
    for i in 0..6 {
        let reply = conn
            .send(
                Call::new(cluster.edge, Method::POST, "/web/dataset/call_kw").body(format!("{i}")),
            )
            .await;
        assert_eq!(reply.status, 200);
        names.push(reply.echo().node().to_owned());
    }
    let health = conn
        .send(Call::new(cluster.edge, Method::GET, "/websocket/health"))
        .await;
    assert_eq!(health.header("x-mock-node"), Some("bus"));
    assert_eq!(
        names.iter().filter(|n| *n == "web1").count(),
        3,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "web2").count(),
        3,
        "{names:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let cluster = Cluster::standard().start().await;
    let host = cluster.edge;
    let request = format!(
        "GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /second HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc\
         GET /third HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    for path in ["/first", "/second", "/third"] {
        let reply = common::read_one_reply(&mut stream, &mut buf).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.echo().0["path"], path);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_http_1_0_client_gets_a_complete_reply_and_a_close() {
    let cluster = Cluster::standard().start().await;
    let raw = raw_request(
        cluster.edge,
        format!(
            "GET /web/content?mock_size=300000 HTTP/1.0\r\nHost: {}\r\n\r\n",
            cluster.edge
        )
        .as_bytes(),
    )
    .await;
    let reply = RawReply::parse(&raw);
    assert_eq!(reply.status, 200);
    assert!(
        raw.starts_with("HTTP/1.0 200"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    assert_eq!(reply.body.len(), 300_000);
    cluster.shutdown().await;
}

// === forwarded and hop-by-hop headers ===

#[tokio::test]
async fn spoofed_forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let cluster = Cluster::standard().start().await;
    let reply = Call::new(cluster.edge, Method::GET, "/web/login")
        .header("Host", "shop.example.com:8443")
        .header("X-Forwarded-For", "203.0.113.66")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Real-IP", "203.0.113.66")
        .send()
        .await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        echo.header("x-forwarded-host"),
        Some("shop.example.com:8443")
    );
    assert_eq!(echo.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(echo.header("host"), Some("shop.example.com:8443"));
    assert_eq!(
        echo.odoo(),
        &serde_json::json!({
            "remote_addr": "127.0.0.1",
            "scheme": "http",
            "host": "shop.example.com:8443",
        })
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_odoo_sees_the_real_client_and_https_secures_the_session_cookie() {
    let cluster = Cluster::standard()
        .config("[forwarding]\ntrusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    let reply = Call::new(cluster.edge, Method::GET, "/web/login")
        .header("Host", "shop.example.com")
        .header("X-Forwarded-For", "198.51.100.7")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("198.51.100.7, 198.51.100.7"),
        "the real client goes last, where Odoo reads it"
    );
    assert_eq!(echo.odoo()["remote_addr"], "198.51.100.7");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-real-ip"), Some("198.51.100.7"));
    assert_eq!(echo.header("x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(echo.odoo()["scheme"], "https");
    let cookies = reply.header_all("set-cookie");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("session_id="), "{cookies:?}");
    assert!(
        cookies[0].ends_with("; HttpOnly; Path=/; Secure; SameSite=Lax"),
        "an HTTPS session cookie gets Secure and SameSite: {cookies:?}"
    );

    // The trusted proxy's X-Forwarded-Host is believed; Host stays as it is.
    let reply = Call::new(cluster.edge, Method::GET, "/web")
        .header("Host", "edge.internal:8080")
        .header("X-Forwarded-Host", "shop.example.com")
        .send()
        .await;
    let echo = reply.echo();
    assert_eq!(echo.header("x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(echo.header("host"), Some("edge.internal:8080"));
    assert_eq!(echo.odoo()["host"], "shop.example.com");
    cluster.shutdown().await;

    // Plain HTTP from an untrusted peer, even claiming https: Odoo's cookie as it is.
    let cluster = Cluster::standard().start().await;
    let reply = Call::new(cluster.edge, Method::GET, "/web/login")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await;
    let cookie = reply
        .header("set-cookie")
        .expect("Odoo sets a session cookie");
    assert!(cookie.ends_with("; HttpOnly; Path=/"), "{cookie}");
    assert!(
        !cookie.contains("Secure") && !cookie.contains("SameSite"),
        "{cookie}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let cluster = Cluster::standard().start().await;
    let request = format!(
        "GET /web/hop HTTP/1.1\r\nHost: {}\r\nConnection: close, x-foo\r\nX-Foo: secret\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
         X-Kept: yes\r\n\r\n",
        cluster.edge
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, request.as_bytes()).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    for name in [
        "connection",
        "x-foo",
        "keep-alive",
        "te",
        "proxy-connection",
    ] {
        assert!(
            echo.header_all(name).is_empty(),
            "{name} reached the node: {:?}",
            echo.0
        );
    }
    assert_eq!(
        echo.header("x-kept"),
        Some("yes"),
        "end-to-end headers are kept"
    );
    let mut names = echo.header_names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-kept",
            "x-real-ip",
            "x-request-id"
        ],
        "exactly the client's end-to-end headers, the forwarded set and the request id"
    );

    // A prefork node answers `Connection: close`; a kept-alive client must not see it.
    let reply = get(cluster.edge, "/web/other").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-mock-node").map(|n| n.starts_with("web")),
        Some(true)
    );
    assert!(reply.header("connection").is_none(), "{:?}", reply.headers);
    assert!(reply.header("keep-alive").is_none(), "{:?}", reply.headers);
    cluster.shutdown().await;
}

// === request bodies and heads ===

#[tokio::test]
async fn a_declared_body_above_the_cap_gets_413_without_touching_a_node() {
    let cluster = Cluster::standard()
        .config("[limits]\nmax_request_body = \"1KiB\"")
        .start()
        .await;
    // The head alone: the edge must answer before any body byte.
    let head = format!(
        "POST /web/binary/upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 2048\r\n\r\n",
        cluster.edge
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, head.as_bytes()).await);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply.text().contains("413"), "{}", reply.text());
    assert_eq!(cluster.mock_connections(), 0, "no node may be contacted");
    assert_eq!(cluster.cron_connections(), 0);

    // Exactly at the cap is fine.
    let reply = post(cluster.edge, "/web/binary/upload", body_of(1024)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echo().body_len(), 1024);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_growing_past_the_cap_gets_413_without_touching_a_node() {
    let cluster = Cluster::standard()
        .config("[limits]\nmax_request_body = \"1KiB\"")
        .start()
        .await;
    let mut request = format!(
        "POST /web/binary/upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        cluster.edge
    )
    .into_bytes();
    // 1.5 KiB in three chunks and no last chunk: the edge must stop on its own.
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'x'; 512]);
        request.extend_from_slice(b"\r\n");
    }
    let reply = RawReply::parse(&raw_request(cluster.edge, &request).await);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(cluster.mock_connections(), 0, "no node may be contacted");
    cluster.shutdown().await;
}

#[tokio::test]
async fn expect_continue_above_the_cap_gets_413_instead_of_100() {
    let cluster = Cluster::standard()
        .config("[limits]\nmax_request_body = \"1KiB\"")
        .start()
        .await;
    let head = format!(
        "POST /web/binary/upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 4096\r\n\
         Expect: 100-continue\r\n\r\n",
        cluster.edge
    );
    let text = raw_request(cluster.edge, head.as_bytes()).await;
    assert!(
        text.starts_with("HTTP/1.1 413 "),
        "no 100 Continue first: {text:?}"
    );
    assert_eq!(cluster.mock_connections(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn expect_continue_is_answered_by_the_edge_and_not_forwarded() {
    let cluster = Cluster::standard().start().await;
    let body = body_of(3000);
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    let head = format!(
        "POST /web/dataset/call_kw HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        cluster.edge,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut interim = [0u8; 25];
    timeout(
        STEP,
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut interim),
    )
    .await
    .expect("100 Continue in time")
    .expect("read 100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&body).await.expect("write body");
    let reply = RawReply::parse(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    assert!(
        echo.header_all("expect").is_empty(),
        "Expect reached the node"
    );
    assert_eq!(echo.body_len(), body.len() as u64);
    assert_eq!(echo.body_sha256(), sha256_hex(&body));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_body_larger_than_the_request_buffer_is_spooled_and_arrives_whole() {
    let cluster = Cluster::standard()
        .config("[limits]\nrequest_buffer = \"4KiB\"")
        .start()
        .await;
    let body = body_of(200 * 1024);
    let reply = post(cluster.edge, "/web/binary/upload_attachment", body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    assert_eq!(echo.body_len(), body.len() as u64);
    assert_eq!(echo.body_sha256(), sha256_hex(&body));
    assert_eq!(echo.header("content-length"), Some("204800"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_trickled_body_reaches_the_node_as_one_complete_request() {
    let cluster = Cluster::standard().start().await;
    let body = b"{\"jsonrpc\":\"2.0\",\"params\":[1]}";
    assert_eq!(body.len(), 30);
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    let head = format!(
        "POST /web/dataset/call_kw HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 30\r\nConnection: close\r\n\r\n",
        cluster.edge
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // 30 bytes, one every 100 ms: 3 s, beyond the prefork node's 2 s read timeout.
    for byte in body {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&[*byte]).await.expect("write one byte");
    }
    assert_eq!(
        cluster.mock_connections(),
        0,
        "no node is held while the body trickles in"
    );
    let reply = RawReply::parse(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    assert_eq!(echo.body_len(), 30);
    assert_eq!(echo.body_sha256(), sha256_hex(body));
    for (name, mock) in cluster.mocks() {
        assert_eq!(mock.stats.read_timeouts(), 0, "{name} timed out on a read");
    }
    assert_eq!(cluster.mock_connections(), 1);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_chunked_request_body_reaches_the_node_with_a_content_length() {
    let cluster = Cluster::standard().start().await;
    let request = format!(
        "POST /web/dataset/call_kw HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n5\r\nhello\r\n6\r\n, odoo\r\n0\r\n\r\n",
        cluster.edge
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, request.as_bytes()).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    assert!(
        echo.header_all("transfer-encoding").is_empty(),
        "werkzeug wants a length"
    );
    assert_eq!(echo.header("content-length"), Some("11"));
    assert_eq!(echo.body_len(), 11);
    assert_eq!(echo.body_sha256(), sha256_hex(b"hello, odoo"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_body_framed_twice_reaches_the_node_framed_once() {
    let cluster = Cluster::standard().start().await;
    // Chunked wins over Content-Length (RFC 9112 §6.3); the node must get one framing.
    let request = format!(
        "POST /web/dataset/call_kw HTTP/1.1\r\nHost: {}\r\nContent-Length: 50\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        cluster.edge
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, request.as_bytes()).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    assert_eq!(echo.header_all("content-length"), ["5"]);
    assert!(echo.header_all("transfer-encoding").is_empty());
    assert_eq!(echo.body_sha256(), sha256_hex(b"hello"));

    // Two different lengths: refused before any node is chosen.
    let before = cluster.mock_connections();
    let request = format!(
        "POST /web/dataset/call_kw HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\
         Content-Length: 6\r\nConnection: close\r\n\r\nhello!",
        cluster.edge
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, request.as_bytes()).await);
    assert_eq!(reply.status, 400);
    assert_eq!(
        cluster.mock_connections(),
        before,
        "no node sees an ambiguous request"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_without_touching_a_node() {
    let cluster = Cluster::standard()
        .config("[timeouts]\nclient_body = \"1s\"")
        .start()
        .await;
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    let started = Instant::now();
    let head = format!(
        "POST /web/dataset/call_kw HTTP/1.1\r\nHost: {}\r\nContent-Length: 10\r\n\r\nab",
        cluster.edge
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let reply = RawReply::parse(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cluster.mock_connections(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_request_head_above_max_header_bytes_gets_431() {
    let cluster = Cluster::standard()
        .config("[limits]\nmax_header_bytes = \"8KiB\"")
        .start()
        .await;
    let request = format!(
        "GET /web HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        cluster.edge,
        "a".repeat(12 * 1024)
    );
    let reply = RawReply::parse(&raw_request(cluster.edge, request.as_bytes()).await);
    assert_eq!(reply.status, 431, "{}", reply.text());
    assert_eq!(cluster.mock_connections(), 0);

    // Just under the limit is forwarded.
    let reply = Call::new(cluster.edge, Method::GET, "/web")
        .header("Cookie", &"a".repeat(6 * 1024))
        .send()
        .await;
    assert_eq!(reply.status, 200);
    cluster.shutdown().await;
}

// === failures and retries ===

#[tokio::test]
async fn a_node_that_refuses_connections_is_skipped() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .refused("dead")
        .gevent("bus")
        .start()
        .await;
    for i in 0..20 {
        let reply = get(cluster.edge, &format!("/web?i={i}")).await;
        assert_eq!(reply.status, 200, "GET {i}: {}", reply.text());
        assert_eq!(reply.echo().node(), "web1");
        let reply = post(
            cluster.edge,
            "/web/dataset/call_kw",
            format!("{{\"i\": {i}}}"),
        )
        .await;
        assert_eq!(reply.status, 200, "POST {i}: {}", reply.text());
        assert_eq!(reply.echo().method(), "POST");
    }
    assert_eq!(cluster.node("web1").stats.requests(), 40);
    cluster.shutdown().await;
}

#[tokio::test]
async fn every_node_refusing_gives_the_502_page() {
    let cluster = Cluster::builder()
        .refused("dead1")
        .refused("dead2")
        .start()
        .await;
    get(cluster.edge, "/web").await.assert_error_page(502);
    post(cluster.edge, "/web/dataset/call_kw", "{}")
        .await
        .assert_error_page(502);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_post_answered_with_garbage_gets_502() {
    let cluster = Cluster::standard().start().await;
    let reply = post(cluster.edge, "/web/dataset/call_kw?mock_fail=garbage", "{}").await;
    reply.assert_error_page(502);
    let served: u64 = ["web1", "web2"]
        .iter()
        .map(|n| cluster.node(n).stats.requests())
        .sum();
    assert_eq!(served, 1, "a POST is not replayed after garbage");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_get_gets_502_when_every_node_answers_garbage() {
    let cluster = Cluster::standard().start().await;
    cluster.node("web1").set_fail(Some(Fail::Garbage));
    cluster.node("web2").set_fail(Some(Fail::Garbage));
    for _ in 0..4 {
        get(cluster.edge, "/web").await.assert_error_page(502);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_get_is_replayed_on_the_other_node_when_one_answers_garbage() {
    let cluster = Cluster::standard().start().await;
    cluster.node("web1").set_fail(Some(Fail::Garbage));
    for i in 0..10 {
        let reply = get(cluster.edge, &format!("/web?i={i}")).await;
        assert_eq!(reply.status, 200, "GET {i}: {}", reply.text());
        assert_eq!(reply.echo().node(), "web2");
    }
    assert!(cluster.node("web1").stats.requests() >= 1, "web1 was tried");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_get_is_replayed_at_most_max_replays_times() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .interactive("web3")
        .start()
        .await;
    for node in ["web1", "web2", "web3"] {
        cluster.node(node).set_fail(Some(Fail::Close));
    }
    let reply = Call::new(cluster.edge, Method::GET, "/web")
        .header("X-Mock-Request-Id", "replayed")
        .send()
        .await;
    reply.assert_error_page(502);
    assert_eq!(cluster.seen("replayed"), 2, "the first try and one replay");
    cluster.shutdown().await;

    let cluster = Cluster::standard()
        .config("[retries]\nmax_replays = 0")
        .start()
        .await;
    cluster.node("web1").set_fail(Some(Fail::Close));
    cluster.node("web2").set_fail(Some(Fail::Close));
    let reply = Call::new(cluster.edge, Method::GET, "/web")
        .header("X-Mock-Request-Id", "not-replayed")
        .send()
        .await;
    reply.assert_error_page(502);
    assert_eq!(
        cluster.seen("not-replayed"),
        1,
        "max_replays = 0 never replays"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn no_reply_within_upstream_response_is_a_504() {
    let cluster = Cluster::standard()
        .config("[timeouts]\nupstream_response = \"1s\"")
        .start()
        .await;
    let started = Instant::now();
    let reply = get(cluster.edge, "/report/pdf?mock_sleep=3000").await;
    reply.assert_error_page(504);
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the edge gave up before the node answered: {:?}",
        started.elapsed()
    );
    let served: u64 = ["web1", "web2"]
        .iter()
        .map(|n| cluster.node(n).stats.requests())
        .sum();
    assert_eq!(served, 1, "a timed-out request is not replayed");
    cluster.shutdown().await;
}

/// Node `web1` fails every request with `fail`; `web2` is healthy.
async fn assert_post_never_sent_twice(fail: Fail) {
    let cluster = Cluster::standard().start().await;
    cluster.node("web1").set_fail(Some(fail));
    let mut statuses = HashMap::new();
    for i in 0..20 {
        let id = format!("post-{}-{i}", fail.as_str());
        let reply = Call::new(cluster.edge, Method::POST, "/web/dataset/call_kw")
            .header("X-Mock-Request-Id", &id)
            .body(format!("{{\"id\": {i}}}"))
            .send()
            .await;
        let on_web1 = cluster.node("web1").stats.seen(&id);
        let on_web2 = cluster.node("web2").stats.seen(&id);
        assert_eq!(
            on_web1 + on_web2,
            1,
            "{id} reached the nodes {on_web1} + {on_web2} times"
        );
        if on_web1 == 1 {
            reply.assert_error_page(502);
        } else {
            assert_eq!(reply.status, 200, "{id}: {}", reply.text());
            assert_eq!(reply.echo().node(), "web2");
        }
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    // Round robin alternates until web1 has failed `fall` (3) requests in a
    // row; passive checks then take it out of the pool.
    assert_eq!(
        statuses.get(&502),
        Some(&3),
        "web1 leaves the pool after 3 failures: {statuses:?}"
    );

    for i in 0..10 {
        let id = format!("get-{}-{i}", fail.as_str());
        let reply = Call::new(cluster.edge, Method::GET, "/web")
            .header("X-Mock-Request-Id", &id)
            .send()
            .await;
        assert_eq!(reply.status, 200, "{id}: {}", reply.text());
        assert_eq!(reply.echo().node(), "web2");
        assert_eq!(cluster.node("web2").stats.seen(&id), 1);
        assert!(cluster.seen(&id) <= 2, "a GET is replayed at most once");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_post_is_never_sent_twice_when_a_node_closes_without_reply() {
    assert_post_never_sent_twice(Fail::Close).await;
}

#[tokio::test]
async fn a_post_is_never_sent_twice_when_a_node_resets() {
    assert_post_never_sent_twice(Fail::Reset).await;
}

#[tokio::test]
async fn an_odoo_error_status_is_relayed_as_is_and_not_replayed() {
    let cluster = Cluster::standard().start().await;
    let reply = Call::new(cluster.edge, Method::GET, "/web?mock_status=500")
        .header("X-Mock-Request-Id", "server-error")
        .send()
        .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let echo = reply.echo();
    assert_eq!(reply.header("x-mock-node"), Some(echo.node()));
    assert_eq!(
        cluster.seen("server-error"),
        1,
        "a reply, even a 500, is final"
    );
    cluster.shutdown().await;
}

// === replies ===

#[tokio::test]
async fn a_large_reply_arrives_byte_exact() {
    let cluster = Cluster::standard().start().await;
    let size = 5_000_000;
    let reply = get(cluster.edge, &format!("/web/content/42?mock_size={size}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), size);
    let expected: Vec<u8> = PATTERN.iter().copied().cycle().take(size).collect();
    let first_difference = reply.body.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the reply differs from the node's");
    cluster.shutdown().await;
}

#[tokio::test]
async fn head_keeps_status_and_content_length_without_a_body() {
    let cluster = Cluster::standard().start().await;
    let length = get(cluster.edge, "/web/head")
        .await
        .header("content-length")
        .expect("an echo has a Content-Length")
        .to_owned();
    let request = format!(
        "HEAD /web/head HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        cluster.edge
    );
    let raw = raw_request(cluster.edge, request.as_bytes()).await;
    let reply = RawReply::parse(&raw);
    assert_eq!(reply.status, 200, "{raw}");
    let head_length: usize = reply
        .header("content-length")
        .expect("HEAD keeps Content-Length")
        .parse()
        .expect("numeric Content-Length");
    // The echo of a HEAD differs from the GET's only by the method name.
    let get_length: usize = length.parse().expect("numeric Content-Length");
    assert_eq!(
        head_length,
        get_length + 1,
        "HEAD {head_length} vs GET {get_length}"
    );
    assert!(reply.body.is_empty(), "a HEAD reply has no body: {raw:?}");

    let reply = Call::new(cluster.edge, Method::HEAD, "/web/head?mock_size=1000")
        .send()
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("1000"));
    assert!(reply.body.is_empty());
    cluster.shutdown().await;
}

/// Asks for `size` bytes on a socket with a tiny receive window, and reads nothing yet.
async fn start_slow_download(cluster: &Cluster, size: usize) -> TcpStream {
    // The kernel cannot absorb the reply on the client's behalf.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stream = socket.connect(cluster.edge).await.expect("connect");
    let request = format!(
        "GET /web/content/big?mock_size={size} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        cluster.edge
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

/// Whether the nodes got `requests` requests in all and answered them completely, within `limit`.
async fn nodes_finished_within(cluster: &Cluster, requests: u64, limit: Duration) -> bool {
    common::wait_until(limit, || {
        let seen: u64 = cluster.mocks().map(|(_, m)| m.stats.requests()).sum();
        let in_flight: usize = cluster.mocks().map(|(_, m)| m.stats.in_flight()).sum();
        seen == requests && in_flight == 0
    })
    .await
}

/// Reads the rest of a `mock_size` reply and checks it byte for byte.
async fn assert_pattern_reply(stream: &mut TcpStream, size: usize) {
    let raw = timeout(STEP, async {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(stream, &mut out)
            .await
            .map(|_| out)
    })
    .await
    .expect("the reply in time")
    .expect("read the reply");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head")
        + 4;
    let body = &raw[head_end..];
    assert_eq!(body.len(), size, "the client gets the whole reply");
    assert!(
        body.chunks(64).all(|c| c == &PATTERN[..c.len()]),
        "the reply is the node's, byte for byte"
    );
}

#[tokio::test]
async fn spool_files_leave_nothing_in_the_spool_dir() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cluster = Cluster::standard()
        .config(&format!(
            "[limits]\nrequest_buffer = \"4KiB\"\nresponse_buffer = \"4KiB\"\nspool_dir = \"{}\"",
            dir.path().display()
        ))
        .start()
        .await;
    let entries = || {
        std::fs::read_dir(dir.path())
            .expect("list the spool dir")
            .count()
    };
    let body = body_of(100 * 1024);
    let reply = post(cluster.edge, "/web/binary/upload_attachment", body.clone()).await;
    assert_eq!(reply.echo().body_sha256(), sha256_hex(&body));
    assert_eq!(entries(), 0, "a spooled request body leaves no file");

    // A reply spooled for a slow client: its file is already unlinked while in use.
    let size = 8 * 1024 * 1024;
    let mut stream = start_slow_download(&cluster, size).await;
    assert!(
        nodes_finished_within(&cluster, 2, STEP).await,
        "the node must finish while the client reads nothing"
    );
    assert_eq!(
        entries(),
        0,
        "a spooled reply leaves no file, even while in use"
    );
    assert_pattern_reply(&mut stream, size).await;
    cluster.shutdown().await;
}

/// A hand-written node: for every connection, reads a request head, writes
/// `parts` 50 ms apart, then closes. Runs until the test ends.
async fn fake_node(parts: Vec<Vec<u8>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(localhost())
        .await
        .expect("bind the fake node");
    let addr = listener.local_addr().expect("fake node address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let parts = parts.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                // Bounded by the head size a test sends, and by the test's own timeouts.
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                for part in parts {
                    if stream.write_all(&part).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    addr
}

/// Everything the edge sends until it closes or resets, within STEP.
async fn read_lenient(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = timeout(STEP, async {
        let mut chunk = [0u8; 16 * 1024];
        // Bounded by STEP.
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    out
}

/// Whether a raw reply is framed as complete: a chunked body with its last
/// chunk, or a body as long as its Content-Length.
fn framed_as_complete(raw: &[u8]) -> bool {
    let Some((reply, _)) = RawReply::parse_framed(raw) else {
        return false;
    };
    match reply.header("content-length") {
        Some(len) => reply.body.len() == len.parse::<usize>().expect("numeric length"),
        None => true,
    }
}

/// A node that sends `parts` (a reply cut short) and closes: the client must
/// learn that the reply is broken, by a 502 or by a reply that is visibly cut.
async fn assert_cut_reply_is_not_completed(parts: Vec<Vec<u8>>) {
    let node = fake_node(parts).await;
    let cluster = Cluster::builder()
        .external("fake", node, "interactive")
        .start()
        .await;
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    let request = format!(
        "POST /web/content HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        cluster.edge
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let raw = read_lenient(&mut stream).await;
    let text = String::from_utf8_lossy(&raw);
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    if text.starts_with("HTTP/1.1 502 ") {
        assert!(
            framed_as_complete(&raw),
            "the 502 page itself is whole: {text}"
        );
    } else {
        assert!(text.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(
            !framed_as_complete(&raw),
            "a reply the node cut short reached the client framed as complete: {head:?}, \
             {} bytes in all",
            raw.len()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_chunked_reply_cut_short_by_the_node_is_not_completed_for_the_client() {
    // One whole 1 KiB chunk, then a 1 KiB chunk of which 100 bytes arrive.
    let mut first = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
        Transfer-Encoding: chunked\r\n\r\n400\r\n"
        .to_vec();
    first.extend_from_slice(&[b'x'; 1024]);
    first.extend_from_slice(b"\r\n400\r\n");
    assert_cut_reply_is_not_completed(vec![first, vec![b'y'; 100]]).await;
}

/// A reply head declaring `length` bytes, then 2 KiB of them in two writes.
fn cut_reply_parts(length: usize) -> Vec<Vec<u8>> {
    let mut first = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes();
    first.extend_from_slice(&[b'x'; 1024]);
    vec![first, vec![b'y'; 1024]]
}

#[tokio::test]
async fn a_small_reply_shorter_than_its_content_length_is_not_completed_for_the_client() {
    assert_cut_reply_is_not_completed(cut_reply_parts(4096)).await;
}

#[tokio::test]
async fn a_large_reply_shorter_than_its_content_length_is_not_completed_for_the_client() {
    assert_cut_reply_is_not_completed(cut_reply_parts(512 * 1024)).await;
}

// === start and shutdown ===

#[tokio::test]
async fn a_listener_that_cannot_bind_names_its_key_and_address() {
    let taken = std::net::TcpListener::bind(localhost()).expect("hold a port");
    let addr = taken.local_addr().expect("held address");
    let text = format!(
        "[[listeners]]\naddress = \"{addr}\"\n\n[[nodes]]\nname = \"web1\"\n\
         address = \"127.0.0.1:8069\"\nrole = \"interactive\"\nworkers = 2\n"
    );
    let config = odoo_edge::config::parse(&text).expect("a valid config");
    let Err(err) = odoo_edge::start(&config) else {
        panic!("binding {addr} twice must fail");
    };
    let message = err.to_string();
    assert!(message.contains("listeners[0].address"), "{message}");
    assert!(message.contains(&addr.to_string()), "{message}");
    let odoo_edge::StartError::Bind(err) = err else {
        panic!("expected a bind error, got {err}");
    };
    assert_eq!(err.what, "listeners[0].address");
    assert_eq!(err.address, addr);
    drop(taken);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_then_refuses_connections() {
    let mut cluster = Cluster::standard().start().await;
    let edge = cluster.edge;
    let slow = tokio::spawn(async move { get(edge, "/web?mock_sleep=500").await });
    let started = common::wait_until(STEP, || {
        cluster.mocks().any(|(_, m)| m.stats.in_flight() == 1)
    })
    .await;
    assert!(started, "the request must reach a node");
    cluster.stop_edge(Duration::from_secs(5)).await;
    let reply = timeout(STEP, slow)
        .await
        .expect("the request ends in time")
        .expect("the client task");
    assert_eq!(reply.status, 200, "an in-flight request finishes");
    let refused = TcpStream::connect(edge).await;
    assert!(refused.is_err(), "a stopped edge accepts no connection");
    cluster.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_still_open_at_the_deadline() {
    let mut cluster = Cluster::standard().start().await;
    let mut stream = TcpStream::connect(cluster.edge).await.expect("connect");
    let request = format!(
        "GET /report?mock_sleep=3000 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        cluster.edge
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let started = common::wait_until(STEP, || {
        cluster.mocks().any(|(_, m)| m.stats.in_flight() == 1)
    })
    .await;
    assert!(started, "the request must reach a node");
    let stopping = Instant::now();
    cluster.stop_edge(Duration::from_millis(300)).await;
    // The node answers at 3 s; a connection closed at the deadline ends well before.
    let mut byte = [0u8; 1];
    let read = timeout(
        Duration::from_millis(1500),
        tokio::io::AsyncReadExt::read(&mut stream, &mut byte),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection must be closed by {:?} after the shutdown began (read: {read:?})",
        stopping.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_kept_alive_connections_at_once() {
    let mut cluster = Cluster::standard().start().await;
    let mut conn = common::KeptAlive::connect(cluster.edge).await;
    let reply = conn
        .send(Call::new(cluster.edge, Method::GET, "/web"))
        .await;
    assert_eq!(reply.status, 200);
    let started = Instant::now();
    cluster.stop_edge(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an idle connection must not hold the shutdown: {:?}",
        started.elapsed()
    );
    assert!(
        common::wait_until(Duration::from_secs(1), || conn.is_closed()).await,
        "the idle connection must be closed"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_http_1_1_request_without_host_gets_400_without_touching_a_node() {
    let cluster = Cluster::standard().start().await;
    let reply = raw_request(
        cluster.edge,
        b"GET /web HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(cluster.mock_connections(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn connection_cannot_strip_host_so_odoo_always_gets_x_forwarded_host() {
    let cluster = Cluster::standard().start().await;
    let reply = Call::new(cluster.edge, Method::GET, "/web")
        .header("Host", "erp.example.com")
        .header("Connection", "Host")
        .send()
        .await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(echo.header("host"), Some("erp.example.com"));
    assert_eq!(echo.header("x-forwarded-host"), Some("erp.example.com"));
    assert_eq!(echo.odoo()["remote_addr"], "127.0.0.1");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_client_request_for_the_internal_filestore_is_404_and_never_forwarded() {
    let cluster = Cluster::standard().start().await;
    for path in [
        "/web/filestore/odoo/3f/3f786850e387550fdab836ed7e6dc881de23001b",
        "/web/filestore",
        "/web/filestore/",
    ] {
        let reply = get(cluster.edge, path).await;
        assert_eq!(reply.status, 404, "{path}");
    }
    assert_eq!(cluster.mock_connections(), 0, "never forwarded to a node");
    cluster.shutdown().await;
}
