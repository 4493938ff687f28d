//! Reply buffering: a slow client never holds an Odoo worker.
//!
//! One prefork mock node with a single worker stands for a busy Odoo. A client
//! asks for a large reply and then reads nothing; the edge must take the whole
//! reply off the node (memory, then its spool file) so that the worker is free
//! for the next request at once, and the slow client must still get every byte.

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use common::Cluster;
use odoo_edge::mock_odoo::{self, MockConfig, Mode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One prefork node with a single worker, behind an edge with `limits`.
async fn one_worker_cluster(limits: &str) -> Cluster {
    Cluster::builder()
        .node(
            MockConfig::new("odoo-web-1", Role::Interactive)
                .with_mode(Mode::Prefork { workers: 1 }),
        )
        .config(&format!("[limits]\n{limits}"))
        .start()
        .await
}

/// Sends a GET and returns the socket without reading anything.
async fn send_get(edge: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(edge).await.expect("connect to the edge");
    let request = format!("GET {path} HTTP/1.1\r\nHost: erp.example.com\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    stream
}

/// Reads a whole `Connection: close`-free response with a Content-Length.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = stream.read(&mut buf).await.expect("read response");
        assert!(n > 0, "connection closed before the head ended");
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(data.len() < 64 * 1024, "head too long");
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("response has a Content-Length");
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.expect("read body");
        assert!(
            n > 0,
            "connection closed after {} of {length} bytes",
            body.len()
        );
        body.extend_from_slice(&buf[..n]);
    }
    (head, body)
}

fn expected_pattern(len: usize) -> Vec<u8> {
    mock_odoo::PATTERN
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Polls `cond` every 20 ms for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn slow_client_does_not_hold_the_worker_and_still_gets_every_byte() {
    let cluster = one_worker_cluster(r#"response_buffer = "64KiB""#).await;
    let node = cluster.node("odoo-web-1");
    let addr = cluster.edge;
    const SIZE: usize = 24 * 1024 * 1024;

    let mut slow = send_get(addr, &format!("/web/content/big?mock_size={SIZE}")).await;
    // The node finishes its reply although the client has read nothing.
    assert!(
        eventually(Duration::from_secs(10), || node.stats.requests() == 1
            && node.stats.in_flight() == 0)
        .await,
        "the node's only worker is still busy with the slow client's reply"
    );
    // So the next request gets the worker at once.
    let mut next = send_get(addr, "/web/webclient/version_info").await;
    let (head, body) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut next))
        .await
        .expect("a second request must not wait for the slow client");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("odoo-web-1"));

    // The slow client now reads everything, byte-exact, through memory and spool.
    let (head, body) = tokio::time::timeout(Duration::from_secs(30), read_response(&mut slow))
        .await
        .expect("the slow client must get its reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), SIZE);
    assert!(
        body == expected_pattern(SIZE),
        "reply bytes differ from what the node sent"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn without_spooling_the_node_waits_for_the_client() {
    let cluster =
        one_worker_cluster("response_buffer = \"64KiB\"\nmax_response_spool = \"0B\"").await;
    let node = cluster.node("odoo-web-1");
    const SIZE: usize = 48 * 1024 * 1024;

    let mut slow = send_get(cluster.edge, &format!("/big?mock_size={SIZE}")).await;
    assert!(
        eventually(Duration::from_secs(5), || node.stats.in_flight() == 1).await,
        "the node never started the reply"
    );
    // Far more than memory and socket buffers can hold: the node must still be sending.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.stats.in_flight(),
        1,
        "with spooling off the edge must apply back-pressure"
    );
    let (_, body) = tokio::time::timeout(Duration::from_secs(30), read_response(&mut slow))
        .await
        .expect("the reply must complete once the client reads");
    assert_eq!(body.len(), SIZE);
    assert!(body == expected_pattern(SIZE));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_spool_cap_smaller_than_a_chunk_does_not_stall_the_reply() {
    let cluster =
        one_worker_cluster("response_buffer = \"1KiB\"\nmax_response_spool = \"32KiB\"").await;
    const SIZE: usize = 4 * 1024 * 1024;
    let mut client = send_get(cluster.edge, &format!("/big?mock_size={SIZE}")).await;
    // Let the node get ahead of the client, so the spool is used.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), read_response(&mut client))
        .await
        .expect("the reply must not stall");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        body == expected_pattern(SIZE),
        "reply bytes differ from what the node sent"
    );
    cluster.shutdown().await;
}
