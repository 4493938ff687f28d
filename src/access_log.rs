//! The access log: one line per request, written when the reply has been sent
//! (or the client left), as JSON or in nginx's `combined` format with the
//! edge's own fields appended.
//!
//! Lines gather in a bounded memory buffer that a writer thread writes out
//! every 100 ms, so a slow disk never stalls a request and a busy edge makes
//! one write per tick, not one per line (nor a thread wake-up per line). When
//! the buffer is full (8 MiB: the disk is stuck), lines are dropped and
//! counted (`odoo_edge_access_log_dropped_total`); the stop writes what is
//! left. The file is opened in
//! append mode and reopened on every reload (SIGHUP), which is what logrotate's
//! `postrotate systemctl reload odoo-edge` expects; `path = "-"` is standard
//! output (the journal under systemd, `docker logs` in a container).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{AccessLogConfig, AccessLogFormat};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;

/// Bytes of lines waiting for the writer before new ones are dropped.
const BACKLOG: usize = 8 * 1024 * 1024;

/// How often the writer thread writes what has gathered: lines reach the file
/// this late at most, and a busy edge pays one write per tick, not per line.
const TICK: Duration = Duration::from_millis(100);

/// One request, as the access log records it.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub request_id: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    /// Path and query, as the client sent them.
    pub path: &'a str,
    pub protocol: &'static str,
    pub status: u16,
    /// Reply body bytes sent.
    pub bytes: u64,
    /// Seconds from the request head to the last byte of the reply.
    pub duration: f64,
    pub kind: &'static str,
    /// The node that answered; empty when none did.
    pub node: &'a str,
    /// Nodes tried after the first one.
    pub retries: u32,
    /// Seconds spent waiting for a free Odoo worker.
    pub queue_wait: f64,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

/// What the request path hands the writer thread.
#[derive(Default)]
struct Pending {
    /// Lines not written yet.
    lines: Vec<u8>,
    /// Reloads asked for the file to be reopened at these paths, in order;
    /// the lines queued before each (the first so many bytes of `lines`)
    /// go to the file as it was then.
    reopen: Vec<(PathBuf, usize)>,
    /// The edge stops: write what is left and end.
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when there is a reason not to wait for the next tick.
    wake: Condvar,
}

/// The access log of a running edge; kept across reloads.
pub struct AccessLog {
    format: AtomicU8,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// How long the stop waits for the last lines to be written.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl AccessLog {
    /// Starts the writer thread. A file that cannot be opened is an error here,
    /// at start; at a reload it is logged and the old file kept.
    pub fn new(config: &AccessLogConfig, metrics: &Metrics) -> io::Result<AccessLog> {
        AccessLog::with_output(config.format, open(&config.path)?, metrics)
    }

    /// An access log writing to `out`; lines the output refuses (a full
    /// disk) count in `metrics` as dropped.
    pub fn with_output(
        format: AccessLogFormat,
        out: Out,
        metrics: &Metrics,
    ) -> io::Result<AccessLog> {
        let dropped = metrics.access_log_dropped_counter();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_lines(&shared, out, &dropped))?
        };
        Ok(AccessLog {
            format: AtomicU8::new(encode(format)),
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Takes a reload's settings: the format now, the file reopened (also
    /// when unchanged: logrotate moved it).
    pub fn reconfigure(&self, config: &AccessLogConfig) {
        self.format.store(encode(config.format), Ordering::Relaxed);
        let mut pending = self.pending();
        // Lines already queued belong to the file as it was.
        let split = pending.lines.len();
        pending.reopen.push((config.path.clone(), split));
        drop(pending);
        self.shared.wake.notify_one();
    }

    pub fn enabled(&self) -> bool {
        self.format() != AccessLogFormat::Off
    }

    fn format(&self) -> AccessLogFormat {
        match self.format.load(Ordering::Relaxed) {
            1 => AccessLogFormat::Json,
            2 => AccessLogFormat::Combined,
            _ => AccessLogFormat::Off,
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one line; never blocks on the file, never wakes the writer
    /// (it writes what has gathered every [`TICK`]), so a line costs its
    /// formatting and a short lock.
    pub fn write(&self, entry: &Entry<'_>, metrics: &Metrics) {
        let line = match self.format() {
            AccessLogFormat::Off => return,
            AccessLogFormat::Json => match serde_json::to_string(entry) {
                Ok(mut line) => {
                    line.push('\n');
                    line
                }
                Err(_) => return,
            },
            AccessLogFormat::Combined => combined(entry),
        };
        let mut pending = self.pending();
        if pending.closing || pending.lines.len() + line.len() > BACKLOG {
            drop(pending);
            metrics.access_log_dropped();
            return;
        }
        pending.lines.extend_from_slice(line.as_bytes());
    }

    /// Writes what is queued and stops the writer; waits for it at most
    /// `limit`, and says whether it finished. Lines that come later are
    /// dropped (and counted).
    pub fn drain(&self, limit: Duration) -> bool {
        self.pending().closing = true;
        self.shared.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(writer) = writer else { return true };
        let deadline = Instant::now() + limit;
        // Bounded: a file stuck on a dead disk must not hold the stop forever.
        while !writer.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if writer.is_finished() {
            let _ = writer.join();
            return true;
        }
        // Not joined: the thread ends with the process.
        false
    }
}

fn encode(format: AccessLogFormat) -> u8 {
    match format {
        AccessLogFormat::Off => 0,
        AccessLogFormat::Json => 1,
        AccessLogFormat::Combined => 2,
    }
}

/// nginx's `combined` line, then the edge's fields as `key=value`.
fn combined(e: &Entry<'_>) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rt={:.3} id={} kind={} node={} retries={} qw={:.3}\n",
        e.client.ip(),
        clf_time(&e.time),
        e.method,
        quoted(e.path),
        e.protocol,
        e.status,
        e.bytes,
        quoted(&dash(e.referer)),
        quoted(&dash(e.user_agent)),
        e.duration,
        e.request_id,
        e.kind,
        dash(e.node),
        e.retries,
        e.queue_wait,
    )
}

/// Escapes `"` and `\` and control bytes, as nginx does in its log.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-28T07:51:56.123Z` → `28/Nov/2026:07:51:56 +0000`.
fn clf_time(rfc3339: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = rfc3339
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)));
    match (
        rfc3339.get(0..4),
        month,
        rfc3339.get(8..10),
        rfc3339.get(11..19),
    ) {
        (Some(year), Some(month), Some(day), Some(time)) => {
            format!("{day}/{month}/{year}:{time} +0000")
        }
        _ => rfc3339.to_owned(),
    }
}

/// Now, for [`Entry::time`].
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Seconds with millisecond precision, for the JSON fields.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Where lines go: standard output or a file (or a test's writer).
pub type Out = Box<dyn Write + Send>;

fn open(path: &PathBuf) -> io::Result<Out> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdout()));
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(file))
}

/// The writer thread: every [`TICK`] (or at once for a reopen or the
/// stop) it takes what has gathered and writes it in one go.
fn write_lines(shared: &Shared, out: Out, dropped: &Counter) {
    let mut out = out;
    let mut batch = Vec::new();
    let mut failing = false;
    loop {
        let (reopen, closing) = {
            let mut pending = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.reopen.is_empty() && !pending.closing {
                pending = shared
                    .wake
                    .wait_timeout(pending, TICK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            (std::mem::take(&mut pending.reopen), pending.closing)
        };
        let mut written = 0;
        for (path, split) in reopen {
            let split = split.clamp(written, batch.len());
            write_batch(&mut out, &batch[written..split], dropped, &mut failing);
            written = split;
            match open(&path) {
                Ok(file) => out = file,
                Err(e) => tracing::error!(
                    path = %path.display(),
                    cause = %e,
                    "cannot reopen the access log; writing to the old file"
                ),
            }
        }
        write_batch(&mut out, &batch[written..], dropped, &mut failing);
        batch.clear();
        if batch.capacity() > BACKLOG / 4 {
            batch.shrink_to(BACKLOG / 4);
        }
        if closing {
            return;
        }
    }
}

/// Writes `lines` out; what the output refuses is counted as dropped, and
/// logged when writes start failing (not per tick).
fn write_batch(out: &mut Out, lines: &[u8], dropped: &Counter, failing: &mut bool) {
    if lines.is_empty() {
        return;
    }
    match out.write_all(lines).and_then(|()| out.flush()) {
        Ok(()) => *failing = false,
        Err(e) => {
            dropped.inc_by(bytecount(lines) as u64);
            if !*failing {
                tracing::error!(cause = %e, "cannot write the access log; its lines are dropped (and counted) until it can");
            }
            *failing = true;
        }
    }
}

fn bytecount(batch: &[u8]) -> usize {
    batch.iter().filter(|b| **b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Kind;

    fn entry() -> Entry<'static> {
        Entry {
            time: "2026-11-28T07:51:56.123Z".into(),
            request_id: "abc",
            client: "10.0.0.7:5555".parse().expect("address"),
            method: "POST",
            path: "/web/dataset/call_kw?x=\"1\"",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 1234,
            duration: 0.0125,
            kind: Kind::Proxy.as_str(),
            node: "web1",
            retries: 1,
            queue_wait: 0.002,
            referer: "",
            user_agent: "Mozilla/5.0",
        }
    }

    #[test]
    fn combined_line_is_nginx_combined_then_edge_fields() {
        assert_eq!(
            combined(&entry()),
            "10.0.0.7 - - [28/Nov/2026:07:51:56 +0000] \"POST /web/dataset/call_kw?x=\\\"1\\\" HTTP/1.1\" \
             200 1234 \"-\" \"Mozilla/5.0\" rt=0.013 id=abc kind=proxy node=web1 retries=1 qw=0.002\n"
        );
    }

    #[test]
    fn close_writes_what_is_queued_and_later_lines_are_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("access.log");
        let metrics = Metrics::new();
        let log = AccessLog::new(
            &AccessLogConfig {
                format: AccessLogFormat::Combined,
                path: path.clone(),
            },
            &metrics,
        )
        .expect("open");
        for _ in 0..3 {
            log.write(&entry(), &metrics);
        }
        assert!(log.drain(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3, "{text}");
        log.write(&entry(), &metrics);
        let text = metrics.render(&crate::pool::Topology::new(&crate::config::parse(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[nodes]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\nrole = \"interactive\"\nworkers = 1\n",
        ).expect("config")));
        assert!(
            text.contains("odoo_edge_access_log_dropped_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn control_bytes_never_reach_a_line_raw() {
        assert_eq!(quoted("a\nb\u{1b}"), "a\\x0Ab\\x1B");
        assert_eq!(clf_time("garbage"), "garbage");
    }

    #[test]
    fn lines_queued_before_a_reopen_go_to_the_old_file_and_later_ones_to_the_new() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new) = (dir.path().join("old.log"), dir.path().join("new.log"));
        let config = |path: &std::path::Path| AccessLogConfig {
            format: AccessLogFormat::Combined,
            path: path.to_path_buf(),
        };
        let metrics = Metrics::new();
        let log = AccessLog::new(&config(&old), &metrics).expect("open");
        let mut line = entry();
        for round in 0..50 {
            line.request_id = "before";
            log.write(&line, &metrics);
            log.reconfigure(&config(if round % 2 == 0 { &new } else { &old }));
            line.request_id = "after";
            log.write(&line, &metrics);
            // Back to `old` for the next round, with nothing queued.
            if round % 2 == 0 {
                log.reconfigure(&config(&old));
            }
        }
        assert!(log.drain(Duration::from_secs(5)));
        let new_text = std::fs::read_to_string(&new).expect("new file");
        assert!(!new_text.contains("id=before"), "{new_text}");
        assert_eq!(new_text.lines().count(), 25, "{new_text}");
    }

    /// An output whose writes block until `release` is dropped: a stalled
    /// disk, or a standard output nobody reads.
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `odoo_edge_access_log_dropped_total` as `/metrics` shows it.
    fn dropped(metrics: &Metrics) -> u64 {
        let config = crate::config::parse(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
             [[nodes]]\nname = \"web1\"\naddress = \"127.0.0.1:8069\"\nrole = \"interactive\"\nworkers = 1\n",
        )
        .expect("config");
        let text = metrics.render(&crate::pool::Topology::new(&config));
        text.lines()
            .find_map(|l| l.strip_prefix("odoo_edge_access_log_dropped_total "))
            .and_then(|n| n.parse().ok())
            .expect("the dropped counter")
    }

    #[test]
    fn a_stalled_writer_neither_blocks_a_reload_nor_holds_more_than_the_backlog() {
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let metrics = Metrics::new();
        let log = Arc::new(
            AccessLog::with_output(
                AccessLogFormat::Combined,
                Box::new(Stalled(stalled)),
                &metrics,
            )
            .expect("writer thread"),
        );
        // Heads as large as `limits.max_header_bytes` allows: 64 MiB in all
        // if nothing bounds the bytes.
        let path = format!("/{}", "a".repeat(64 * 1024));
        let mut line = entry();
        line.path = &path;
        for _ in 0..1024 {
            log.write(&line, &metrics);
        }
        let queued = log.pending().lines.len();
        assert!(queued <= BACKLOG, "{queued} bytes queued");
        // One batch may be in the stalled writer's hands, the rest dropped.
        assert!(
            dropped(&metrics) >= 1024 - 2 * (BACKLOG / (64 * 1024)) as u64,
            "{} dropped",
            dropped(&metrics)
        );
        let (done_tx, done) = std::sync::mpsc::channel();
        let reloading = log.clone();
        let reload = std::thread::spawn(move || {
            reloading.reconfigure(&AccessLogConfig {
                format: AccessLogFormat::Json,
                path: "-".into(),
            });
            let _ = done_tx.send(());
        });
        let returned = done.recv_timeout(Duration::from_secs(5)).is_ok();
        drop(release);
        reload.join().expect("reload thread");
        assert!(returned, "reconfigure blocked behind a stalled writer");
    }

    /// An output on a full disk.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28)) // ENOSPC
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn lines_a_full_disk_refuses_are_counted_as_dropped() {
        let metrics = Metrics::new();
        let log = AccessLog::with_output(AccessLogFormat::Json, Box::new(Full), &metrics)
            .expect("writer thread");
        for _ in 0..1000 {
            log.write(&entry(), &metrics);
        }
        assert!(log.drain(Duration::from_secs(5)), "the writer must finish");
        assert_eq!(dropped(&metrics), 1000);
    }
}
