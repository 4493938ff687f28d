//! `odoo-edge run` under systemd's `Type=notify`: the test plays the service
//! manager's notify socket and checks READY, RELOADING (with MONOTONIC_USEC),
//! READY again after a reload (also a refused one), and STOPPING.

#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::process::EdgeProcess;
use odoo_edge::systemd;
use tokio::time::{Instant, timeout};

/// The whole conversation with the edge must fit in this.
const OVERALL: Duration = Duration::from_secs(10);

/// The notify socket, played by the test as the service manager holds it.
struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    deadline: Instant,
}

impl NotifySocket {
    /// Binds the socket at `path`; the conversation must end within [`OVERALL`].
    fn bind(path: &Path) -> NotifySocket {
        NotifySocket {
            socket: tokio::net::UnixDatagram::bind(path).expect("bind the notify socket"),
            deadline: Instant::now() + OVERALL,
        }
    }

    /// What is left of the overall deadline.
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The next notification (one datagram), before the overall deadline.
    async fn next(&self) -> String {
        let left = self.left();
        assert!(!left.is_zero(), "out of time waiting for a notification");
        let mut buf = [0; 4096];
        let n = timeout(left, self.socket.recv(&mut buf))
            .await
            .expect("a notification before the deadline")
            .expect("read a notification");
        String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8")
    }

    /// Reads notifications up to the first with `field` as one of its lines;
    /// returns that one and the ones before it.
    async fn until(&self, field: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        // Bounded by the overall deadline of `next`.
        loop {
            let message = self.next().await;
            if message.lines().any(|l| l == field) {
                return (message, before);
            }
            before.push(message);
        }
    }
}

/// A config with one listener on a free port and one interactive node on a
/// port nobody listens on (never probed within the test: interval 1h).
fn config() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"{closed}\"\nrole = \"interactive\"\nworkers = 1\n\n\
         [health.interactive]\ninterval = \"1h\"\n"
    )
}

/// The `MONOTONIC_USEC=` value of a notification.
fn monotonic_usec(message: &str) -> u64 {
    message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("MONOTONIC_USEC is not a number in {message:?}: {e}"))
}

/// The `STATUS=` text among `messages`, the last one.
fn last_status(messages: &[String]) -> String {
    messages
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .next_back()
        .unwrap_or_else(|| panic!("no STATUS in {messages:?}"))
        .to_owned()
}

#[tokio::test]
async fn run_reports_ready_reloading_and_stopping_to_the_notify_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("odoo-edge.toml");
    std::fs::write(&config_path, config()).expect("write config");
    let socket = dir.path().join("notify");
    let notify = NotifySocket::bind(&socket);
    let mut edge = EdgeProcess::with_config(&config_path)
        .env("NOTIFY_SOCKET", &socket)
        .start()
        .await;

    let (_, before) = notify.until("READY=1").await;
    let status = last_status(&before);
    assert!(
        status.starts_with("serving 1 listener(s): 127.0.0.1:"),
        "{status}"
    );

    // A reload: RELOADING=1 with the time it started, then READY=1.
    let sent_at = systemd::monotonic_usec();
    edge.signal(libc::SIGHUP);
    let (reloading, _) = notify.until("RELOADING=1").await;
    let started = monotonic_usec(&reloading);
    assert!(
        (sent_at..=systemd::monotonic_usec()).contains(&started),
        "MONOTONIC_USEC={started} is not CLOCK_MONOTONIC now (sent at {sent_at})"
    );
    let (_, between) = notify.until("READY=1").await;
    assert!(
        last_status(&between).contains("reloaded: nothing to change"),
        "{between:?}"
    );

    // A broken file is refused, and the edge is ready again on the old one.
    std::fs::write(&config_path, "[[listeners]\nbroken").expect("break config");
    edge.signal(libc::SIGHUP);
    let (reloading, _) = notify.until("RELOADING=1").await;
    monotonic_usec(&reloading);
    let (_, between) = notify.until("READY=1").await;
    let status = last_status(&between);
    assert!(status.contains("reload refused: "), "{status}");
    assert!(!status.contains('\n'), "STATUS is one line: {status:?}");

    edge.signal(libc::SIGTERM);
    notify.until("STOPPING=1").await;
    let status = edge.exited(notify.left()).await;
    assert!(status.success(), "{status:?}");
}

#[test]
fn send_reaches_a_socket_by_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind");
    systemd::send(path.as_os_str(), "READY=1").expect("send");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0; 64];
    let n = socket.recv(&mut buf).expect("a datagram");
    assert_eq!(&buf[..n], b"READY=1");
}

#[cfg(target_os = "linux")]
#[test]
fn send_reaches_an_abstract_socket_named_with_an_at_sign() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("odoo-edge-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind");
    systemd::send(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0; 64];
    let n = socket.recv(&mut buf).expect("a datagram");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn send_fails_without_panicking_on_a_missing_or_relative_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nobody-listens");
    assert!(systemd::send(missing.as_os_str(), "READY=1").is_err());
    assert!(systemd::send(OsStr::new("relative/notify"), "READY=1").is_err());
}

#[test]
fn messages_follow_the_sd_notify_format() {
    assert_eq!(
        systemd::reloading_message(1_234_567),
        "RELOADING=1\nMONOTONIC_USEC=1234567"
    );
    assert_eq!(
        systemd::status_message("reload refused: line 1\n  |\n1 | [[x]\n"),
        "STATUS=reload refused: line 1 | 1 | [[x]"
    );
}
