//! The README's first command: `odoo-edge demo` starts, serves through its
//! built-in mock nodes, and stops cleanly on Ctrl-C (SIGINT) with exit 0.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request with `Connection: close` and returns the whole reply.
async fn fetch(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the demo");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the demo must answer in time")
        .expect("read reply");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn demo_serves_through_its_mock_nodes_and_stops_on_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odoo-edge"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo must start");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));

    // The first line names the address the edge listens on.
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the first line");
    let addr: SocketAddr = first
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in the first line: {first:?}"));

    let mut nodes = Vec::new();
    for _ in 0..2 {
        let reply = fetch(
            addr,
            "GET /web/login HTTP/1.1\r\nHost: demo.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let node = ["odoo-web-1", "odoo-web-2"]
            .into_iter()
            .find(|n| reply.contains(&format!("\"node\":\"{n}\"")))
            .unwrap_or_else(|| panic!("no interactive node named in {reply}"));
        nodes.push(node);
    }
    assert_ne!(
        nodes[0], nodes[1],
        "round robin over the two interactive nodes"
    );
    let reply = fetch(
        addr,
        "GET /websocket/health HTTP/1.1\r\nHost: demo.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"status\": \"pass\""), "{reply}");

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the rest");
    assert!(
        rest.contains("connections to odoo-cron: 0"),
        "the cron node must get nothing: {rest}"
    );
    // One access log line per request, in the combined format the demo asks for.
    let logged: Vec<&str> = rest
        .lines()
        .filter(|l| l.contains("\"GET /web/login HTTP/1.1\" 200 "))
        .collect();
    assert_eq!(logged.len(), 2, "two /web/login lines expected in {rest}");
    assert!(
        logged
            .iter()
            .all(|l| l.contains(" kind=proxy node=odoo-web-")),
        "{logged:?}"
    );
    assert!(
        rest.contains("/metrics"),
        "the demo names the metrics URL: {rest}"
    );
}
