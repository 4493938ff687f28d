//! The access log: one line per request, written when the reply has been sent
//! (or the client left), as JSON or in nginx's `combined` format with the
//! edge's own fields appended.
//!
//! Lines go to a writer thread through a bounded channel, so a slow disk
//! never stalls a request: when the channel is full (in lines or in bytes)
//! the line is dropped and counted (`odoo_edge_access_log_dropped_total`), as
//! is a line the file refuses (a full disk; logged when it starts). The file
//! is opened in append mode and reopened on every reload (SIGHUP), which is
//! what logrotate's `postrotate systemctl reload odoo-edge` expects;
//! `path = "-"` is standard output (the journal under systemd, `docker logs`
//! in a container).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::metrics::Metrics;

/// Lines waiting for the writer before new ones are dropped.
const BACKLOG: usize = 16 * 1024;

/// Longest the stop waits for queued lines to be written.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Bytes of lines waiting for the writer before new ones are dropped.
const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

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

enum Message {
    Line(String),
    /// Look at [`AccessLog::reopen`].
    Reopen,
}

/// The access log of a running edge; kept across reloads.
pub struct AccessLog {
    format: Mutex<AccessLogFormat>,
    tx: SyncSender<Message>,
    /// The file a reload asked for, until the writer has reopened it. Kept
    /// out of the queue: a reload must not wait for a queue full behind a
    /// stalled disk, nor lose the request.
    reopen: Arc<Mutex<Option<PathBuf>>>,
    /// Bytes of the lines in the queue: a count of lines alone would let
    /// large request heads queue gigabytes behind a stalled writer.
    queued: Arc<AtomicUsize>,
    /// How far the writer has got, for [`AccessLog::drain`].
    progress: Arc<Progress>,
}

/// Lines handed to the writer, and lines it has written.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    written: Mutex<u64>,
    /// Notified when `written` grows.
    wrote: Condvar,
}

impl AccessLog {
    /// Starts the writer thread. A file that cannot be opened is an error here,
    /// at start; at a reload it is logged and the old file kept.
    /// Lines the file refuses (a full disk) count as dropped in `metrics`.
    pub fn new(config: &AccessLogConfig, metrics: &Metrics) -> io::Result<AccessLog> {
        AccessLog::with_output(config.format, open(&config.path)?, metrics)
    }

    /// The writer thread on `out`, as already opened.
    fn with_output(format: AccessLogFormat, out: Out, metrics: &Metrics) -> io::Result<AccessLog> {
        let (tx, rx) = sync_channel(BACKLOG);
        let reopen = Arc::new(Mutex::new(None));
        let queued = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Progress::default());
        let (wanted, written, writer) = (reopen.clone(), queued.clone(), progress.clone());
        let refused = metrics.access_log_dropped_counter();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, &wanted, &written, &writer, &refused))?;
        Ok(AccessLog {
            format: Mutex::new(format),
            tx,
            reopen,
            queued,
            progress,
        })
    }

    /// Takes a reload's settings: the format now, the file reopened (also
    /// when unchanged: logrotate moved it).
    pub fn reconfigure(&self, config: &AccessLogConfig) {
        if let Ok(mut format) = self.format.lock() {
            *format = config.format;
        }
        if let Ok(mut path) = self.reopen.lock() {
            *path = Some(config.path.clone());
        }
        // Never blocks: a full queue means the writer is busy, and it looks
        // at `reopen` after each line anyway.
        let _ = self.tx.try_send(Message::Reopen);
    }

    pub fn enabled(&self) -> bool {
        self.format() != AccessLogFormat::Off
    }

    fn format(&self) -> AccessLogFormat {
        self.format
            .lock()
            .map_or(AccessLogFormat::Off, |format| *format)
    }

    /// Waits, up to `limit`, until the lines queued so far are written: at
    /// the stop, so that the process does not exit with lines in the queue.
    /// Blocks the calling thread. True when they all were.
    pub fn drain(&self, limit: Duration) -> bool {
        let sent = self.progress.sent.load(Ordering::Acquire);
        let written = self
            .progress
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (_written, waited) = self
            .progress
            .wrote
            .wait_timeout_while(written, limit, |written| *written < sent)
            .unwrap_or_else(PoisonError::into_inner);
        !waited.timed_out()
    }

    /// Queues one line; never blocks.
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
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            metrics.access_log_dropped();
            return;
        }
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {
                self.progress.sent.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                metrics.access_log_dropped();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
            }
        }
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

type Out = Box<dyn Write + Send>;

fn open(path: &PathBuf) -> io::Result<Out> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdout()));
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(file))
}

/// The writer thread: batches what is queued, flushes when the queue is empty.
fn write_lines(
    rx: Receiver<Message>,
    out: Out,
    reopen: &Mutex<Option<PathBuf>>,
    queued: &AtomicUsize,
    progress: &Progress,
    refused: &Counter,
) {
    // A failing file is logged when it starts failing, not once per line.
    let mut failing = false;
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut lines = 0;
        while let Some(message) = next {
            if let Message::Line(line) = message {
                queued.fetch_sub(line.len(), Ordering::Relaxed);
                match out.write_all(line.as_bytes()) {
                    Ok(()) => failing = false,
                    Err(e) => {
                        refused.inc();
                        if !failing {
                            tracing::error!(cause = %e, "cannot write the access log; dropping lines");
                        }
                        failing = true;
                    }
                }
                lines += 1;
            }
            // A reload's request, taken after the line it came behind.
            if let Some(path) = reopen.lock().ok().and_then(|mut path| path.take()) {
                let _ = out.flush();
                match open(&path) {
                    Ok(file) => out = io::BufWriter::with_capacity(64 * 1024, file),
                    Err(e) => tracing::error!(
                        path = %path.display(),
                        cause = %e,
                        "cannot reopen the access log; writing to the old file"
                    ),
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        let mut written = progress
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *written += lines;
        progress.wrote.notify_all();
    }
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
    fn control_bytes_never_reach_a_line_raw() {
        assert_eq!(quoted("a\nb\u{1b}"), "a\\x0Ab\\x1B");
        assert_eq!(clf_time("garbage"), "garbage");
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

    #[test]
    fn a_reload_does_not_wait_for_a_stalled_writer() {
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let log = std::sync::Arc::new(
            AccessLog::with_output(
                AccessLogFormat::Json,
                Box::new(Stalled(stalled)),
                &Metrics::new(),
            )
            .expect("writer thread"),
        );
        let metrics = Metrics::new();
        // Fill the queue behind the stalled writer.
        let mut full = false;
        for _ in 0..4 * BACKLOG {
            log.write(&entry(), &metrics);
            if let Err(TrySendError::Full(_)) = log.tx.try_send(Message::Line(String::new())) {
                full = true;
                break;
            }
        }
        assert!(full, "the queue must fill behind a stalled writer");
        let (done_tx, done) = std::sync::mpsc::channel();
        let reloading = log.clone();
        let reload = std::thread::spawn(move || {
            reloading.reconfigure(&AccessLogConfig {
                format: AccessLogFormat::Combined,
                path: "-".into(),
            });
            let _ = done_tx.send(());
        });
        let returned = done.recv_timeout(Duration::from_secs(5)).is_ok();
        drop(release);
        reload.join().expect("reload thread");
        assert!(returned, "reconfigure blocked on the full access log queue");
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
    fn lines_queued_behind_a_stalled_writer_are_bounded_in_bytes() {
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let log = AccessLog::with_output(
            AccessLogFormat::Combined,
            Box::new(Stalled(stalled)),
            &Metrics::new(),
        )
        .expect("writer thread");
        let metrics = Metrics::new();
        // Heads as large as `limits.max_header_bytes` allows, far fewer than
        // BACKLOG lines: 64 MiB in all if nothing bounds the bytes.
        let path = format!("/{}", "a".repeat(64 * 1024));
        let mut line = entry();
        line.path = &path;
        for _ in 0..1024 {
            log.write(&line, &metrics);
        }
        let dropped = dropped(&metrics);
        drop(release);
        assert!(
            dropped >= 1024 - (MAX_QUEUED_BYTES / (64 * 1024)) as u64 - 2,
            "{dropped} lines dropped"
        );
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
        let path = format!("/{}", "a".repeat(1000));
        let mut line = entry();
        line.path = &path;
        for _ in 0..1000 {
            log.write(&line, &metrics);
        }
        assert!(log.drain(Duration::from_secs(5)), "the writer must go on");
        // What fits in the writer's buffer (64 KiB) is not refused yet.
        assert!(
            dropped(&metrics) >= 1000 - 64,
            "{} dropped",
            dropped(&metrics)
        );
    }
}
