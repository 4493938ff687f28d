//! `odoo-edge run` reloads on SIGHUP: `drain = true` on a node stops new
//! requests to it; a broken file is refused and the running config stays.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use odoo_edge::mock_odoo::{self, MockConfig, MockHandle, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The edge process; killed if a test fails before it stops it.
struct Edge {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Edge {
    fn start(config: &std::path::Path) -> Edge {
        let mut child = Command::new(env!("CARGO_BIN_EXE_odoo-edge"))
            .args(["run", "-c", config.to_str().expect("utf-8 path")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start odoo-edge");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut edge = Edge {
            child,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = edge.wait_for("listening");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        edge.addr = strip_ansi(addr).parse().expect("listening address");
        edge
    }

    /// The first log line containing `needle`, within 10 s.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if strip_ansi(&line).contains(needle) => return strip_ansi(&line),
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within 10 s"),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

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
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(config(&web1, &web2, false).as_bytes())
        .expect("write config");
    let mut edge = Edge::start(file.path());

    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(served_by(edge.addr).await);
    }
    assert!(nodes.iter().any(|n| n == "web1"), "{nodes:?}");

    std::fs::write(file.path(), config(&web1, &web2, true)).expect("rewrite config");
    edge.signal(libc::SIGHUP);
    edge.wait_for("reload: node web1: draining");
    for _ in 0..6 {
        assert_eq!(
            served_by(edge.addr).await,
            "web2",
            "a draining node gets nothing new"
        );
    }

    std::fs::write(file.path(), "[[listeners]\nbroken").expect("break config");
    edge.signal(libc::SIGHUP);
    edge.wait_for("reload refused");
    assert_eq!(
        served_by(edge.addr).await,
        "web2",
        "the running config stays"
    );

    std::fs::write(file.path(), config(&web1, &web2, false)).expect("restore config");
    edge.signal(libc::SIGHUP);
    edge.wait_for("reload: node web1: back in service");
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(served_by(edge.addr).await);
    }
    assert!(nodes.iter().any(|n| n == "web1"), "web1 is back: {nodes:?}");

    edge.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = edge.child.try_wait().expect("poll") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "odoo-edge did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    web1.shutdown().await;
    web2.shutdown().await;
}
