//! `odoo-edge run` under systemd's `Type=notify`: the test plays the service
//! manager's notify socket and checks READY, RELOADING (with MONOTONIC_USEC),
//! READY again after a reload (also a refused one), and STOPPING.

#![cfg(unix)]

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use odoo_edge::systemd;

/// The whole conversation with the edge must fit in this.
const OVERALL: Duration = Duration::from_secs(10);

/// The edge process, with the socket it notifies; killed if a test fails
/// before it stops it.
struct Edge {
    child: Child,
    notify: UnixDatagram,
    deadline: Instant,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Edge {
    fn start(config: &Path, socket: &Path) -> Edge {
        let notify = UnixDatagram::bind(socket).expect("bind the notify socket");
        let child = Command::new(env!("CARGO_BIN_EXE_odoo-edge"))
            .args(["run", "-c", config.to_str().expect("utf-8 path")])
            .env("NOTIFY_SOCKET", socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start odoo-edge");
        Edge {
            child,
            notify,
            deadline: Instant::now() + OVERALL,
        }
    }

    /// The next notification (one datagram), before the overall deadline.
    fn next(&self) -> String {
        let left = self.deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "out of time waiting for a notification");
        self.notify
            .set_read_timeout(Some(left))
            .expect("set the read timeout");
        let mut buf = [0; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .expect("a notification before the deadline");
        String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8")
    }

    /// Reads notifications up to the first with `field` as one of its lines;
    /// returns that one and the ones before it.
    fn until(&self, field: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let message = self.next();
            if message.lines().any(|l| l == field) {
                return (message, before);
            }
            before.push(message);
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }

    /// The exit status, before the overall deadline.
    fn wait(&mut self) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(Instant::now() < self.deadline, "odoo-edge did not stop");
            std::thread::sleep(Duration::from_millis(20));
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

#[test]
fn run_reports_ready_reloading_and_stopping_to_the_notify_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("odoo-edge.toml");
    std::fs::write(&config_path, config()).expect("write config");
    let mut edge = Edge::start(&config_path, &dir.path().join("notify"));

    let (_, before) = edge.until("READY=1");
    let status = last_status(&before);
    assert!(
        status.starts_with("serving 1 listener(s): 127.0.0.1:"),
        "{status}"
    );

    // A reload: RELOADING=1 with the time it started, then READY=1.
    let sent_at = systemd::monotonic_usec();
    edge.signal(libc::SIGHUP);
    let (reloading, _) = edge.until("RELOADING=1");
    let started = monotonic_usec(&reloading);
    assert!(
        (sent_at..=systemd::monotonic_usec()).contains(&started),
        "MONOTONIC_USEC={started} is not CLOCK_MONOTONIC now (sent at {sent_at})"
    );
    let (_, between) = edge.until("READY=1");
    assert!(
        last_status(&between).contains("reloaded: nothing to change"),
        "{between:?}"
    );

    // A broken file is refused, and the edge is ready again on the old one.
    std::fs::write(&config_path, "[[listeners]\nbroken").expect("break config");
    edge.signal(libc::SIGHUP);
    let (reloading, _) = edge.until("RELOADING=1");
    monotonic_usec(&reloading);
    let (_, between) = edge.until("READY=1");
    let status = last_status(&between);
    assert!(status.contains("reload refused: "), "{status}");
    assert!(!status.contains('\n'), "STATUS is one line: {status:?}");

    edge.signal(libc::SIGTERM);
    edge.until("STOPPING=1");
    let status = edge.wait();
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
