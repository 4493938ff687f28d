//! The real binary as a child process: `odoo-edge run -c <file>`, for what
//! only the process does (signals, its exit status, its log lines).
//!
//! The edge logs at `RUST_LOG=info` to its standard error; a thread forwards
//! each line into a channel. Waits poll that channel and the child with a
//! tokio sleep between tries, so the test's other tasks keep running, and
//! every wait is bounded.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::NamedTempFile;
use tokio::time::Instant;

use super::STEP;

/// How long [`EdgeProcess::stop`] gives the edge to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Between two looks at the log channel or the child.
const POLL: Duration = Duration::from_millis(10);

/// A temp `.toml` file holding `text`, removed when dropped.
pub fn config_file(text: &str) -> NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a temp file");
    file.write_all(text.as_bytes())
        .expect("write the temp file");
    file
}

/// `text` without terminal colour sequences.
pub fn strip_ansi(text: &str) -> String {
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

/// The `address=` field of a log line.
fn address_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("no socket address in {line:?}: {e}"))
}

// === impl Launch ===

/// `odoo-edge run -c <file>` about to start: [`EdgeProcess::with_config`].
pub struct Launch {
    command: Command,
    /// The config file when the test gave its text; the process holds it.
    file: Option<NamedTempFile>,
}

impl Launch {
    /// Sets an environment variable for the edge (such as `NOTIFY_SOCKET`).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Where the edge's standard output goes; by default nowhere.
    pub fn stdout(mut self, stdout: Stdio) -> Self {
        self.command.stdout(stdout);
        self
    }

    /// Starts the edge and waits (within [`STEP`]) for its `listening` line.
    pub async fn start(mut self) -> EdgeProcess {
        let mut child = self
            .command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start odoo-edge");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        // Ends when the edge closes its stderr or the process handle is dropped.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut edge = EdgeProcess {
            child,
            lines,
            addr: super::localhost(),
            _file: self.file,
        };
        let line = edge.wait_for("listening").await;
        edge.addr = address_in(&line);
        edge
    }
}

// === impl EdgeProcess ===

/// `odoo-edge run`; killed if a test fails before it exits.
pub struct EdgeProcess {
    child: Child,
    /// The edge's log lines, read from its stderr by a thread.
    lines: mpsc::Receiver<String>,
    /// Where its first listener listens, from its `listening` line.
    pub addr: SocketAddr,
    /// A config file made from text lives as long as the process.
    _file: Option<NamedTempFile>,
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EdgeProcess {
    /// The edge with the config file at `path`, before it starts.
    pub fn with_config(path: &Path) -> Launch {
        let mut command = Command::new(env!("CARGO_BIN_EXE_odoo-edge"));
        command
            .args(["run", "-c", path.to_str().expect("utf-8 path")])
            .stdout(Stdio::null());
        Launch {
            command,
            file: None,
        }
    }

    /// The edge with a temp config file holding `text`, before it starts.
    pub fn with_config_text(text: &str) -> Launch {
        let file = config_file(text);
        let mut launch = EdgeProcess::with_config(file.path());
        launch.file = Some(file);
        launch
    }

    /// Starts the edge with the config file at `path`.
    pub async fn start(path: &Path) -> EdgeProcess {
        EdgeProcess::with_config(path).start().await
    }

    /// Starts the edge with a temp config file holding `text`.
    pub async fn start_text(text: &str) -> EdgeProcess {
        EdgeProcess::with_config_text(text).start().await
    }

    /// The edge's standard output, when [`Launch::stdout`] piped it.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout piped")
    }

    /// The first log line from now on containing `needle` (colours
    /// stripped), within [`STEP`].
    pub async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            match self.lines.try_recv().map(|l| strip_ansi(&l)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("odoo-edge ended without a log line with {needle:?}")
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {STEP:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The admin API's address, from its log line (it follows the listeners').
    pub async fn admin(&mut self) -> SocketAddr {
        address_in(&self.wait_for("admin API listening").await)
    }

    /// Sends `signal` (`libc::SIGHUP`, `libc::SIGTERM`...) to the edge.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }

    /// The exit status, within `limit`.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "odoo-edge did not exit within {limit:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM and waits (15 s at most) for a clean exit.
    pub async fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.exited(STOP_LIMIT).await;
        assert!(status.success(), "{status:?}");
    }
}
