//! Client-side timeouts: idle keep-alive, slow request heads, and no timeout
//! at all while a request is being served (a report may take minutes).

mod common;

use std::time::Duration;

use common::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

async fn setup() -> Cluster {
    Cluster::builder()
        .interactive("odoo-web-1")
        .config("[timeouts]\nclient_keepalive = \"300ms\"\nclient_header = \"500ms\"")
        .start()
        .await
}

/// Reads until EOF or error; returns what was read. Bounded by `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match timeout(deadline - Instant::now(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(cluster: &Cluster) -> TcpStream {
    TcpStream::connect(cluster.edge)
        .await
        .expect("connect to the edge")
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_client_keepalive() {
    let cluster = setup().await;
    let mut stream = connect(&cluster).await;
    stream
        .write_all(b"GET /web/health HTTP/1.1\r\nHost: erp.example.com\r\n\r\n")
        .await
        .expect("send");
    let started = Instant::now();
    let seen = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the edge must close the idle connection");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_after_client_header() {
    let cluster = setup().await;
    let mut stream = connect(&cluster).await;
    let head =
        b"GET /web HTTP/1.1\r\nHost: erp.example.com\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut = false;
    for byte in head.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    if !cut {
        let rest = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        cut = rest.is_some_and(|r| !String::from_utf8_lossy(&r).contains(" 200 "));
    }
    assert!(cut, "a head trickled over 4 s must be refused");
    assert_eq!(
        cluster.node("odoo-web-1").stats.requests(),
        0,
        "the node must never see it"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_request_served_longer_than_the_idle_timeouts_completes() {
    let cluster = setup().await;
    let mut stream = connect(&cluster).await;
    stream
        .write_all(b"GET /report?mock_sleep=1200 HTTP/1.1\r\nHost: erp.example.com\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let seen = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("reply within the bound");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"path\":\"/report\""), "{text}");
    cluster.shutdown().await;
}
