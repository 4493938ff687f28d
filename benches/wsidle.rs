//! `wsidle`: opens many idle websockets through a proxy and holds them, so the
//! harness (`benches/run.sh`) can read the proxy's memory per idle tunnel.
//!
//! Each connection is a raw HTTP/1.1 websocket handshake over a `TcpStream`
//! (Upgrade, Connection, Sec-WebSocket-Key/Version and an `Origin`, which
//! Odoo's handshake requires); a `101` with a `Sec-WebSocket-Accept` header
//! counts as open. No frame is ever sent: the tunnels stay idle.
//!
//! Connections are opened in bounded batches, each handshake under its own
//! timeout, and the whole opening phase under a deadline. When every
//! connection has been attempted the program prints one line
//! `READY ok=<n> failed=<n>` on stdout, then holds the sockets until stdin
//! reaches EOF or `--hold` elapses, whichever comes first, checks how many are
//! still open, closes them all and exits.
//!
//! Built and run by the harness as a release bench target:
//!
//! ```sh
//! cargo build --release --bench wsidle
//! cargo bench --bench wsidle -- --addr 127.0.0.1:18080 --count 5000
//! ```
//!
//! Only loopback addresses are accepted.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Parser;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Opens idle websockets through a proxy and holds them.
#[derive(Debug, Parser)]
#[command(name = "wsidle")]
struct Args {
    /// Proxy address (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    /// Request path of the handshake.
    #[arg(long, default_value = "/websocket")]
    path: String,
    /// Number of websockets to open.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    count: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    batch: u32,
    /// Timeout of one handshake (connect + request + reply head), in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// No new batch is started after this many seconds of opening.
    #[arg(long, default_value_t = 120.0)]
    open_deadline: f64,
    /// Hold the sockets at most this many seconds (stdin EOF ends the hold earlier).
    #[arg(long, default_value_t = 300.0)]
    hold: f64,
    /// Hold for the full --hold even if stdin is closed.
    #[arg(long)]
    ignore_stdin: bool,
    /// Origin header; default `http://<addr>`.
    #[arg(long)]
    origin: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Why one handshake did not give an open websocket.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Timeout,
    Status(String),
    Io(String),
}

impl Failure {
    fn kind(&self) -> usize {
        match self {
            Failure::Connect(_) => 0,
            Failure::Timeout => 1,
            Failure::Status(_) => 2,
            Failure::Io(_) => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Status(line) => write!(f, "not a websocket: {line}"),
            Failure::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

const KINDS: [&str; 4] = ["connect", "timeout", "status", "io"];

/// Largest reply head accepted.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsidle: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsidle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.addr.ip().is_loopback() {
        bail!("--addr {} is not a loopback address", args.addr);
    }
    for (name, v) in [
        ("--timeout", args.timeout),
        ("--open-deadline", args.open_deadline),
        ("--hold", args.hold),
    ] {
        if !(0.0..=86_400.0).contains(&v) {
            bail!("{name} {v}: expected seconds between 0 and 86400");
        }
    }
    let origin = args
        .origin
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.addr));
    let timeout = Duration::from_secs_f64(args.timeout);
    let open_deadline = Duration::from_secs_f64(args.open_deadline);

    println!(
        "wsidle: opening {} websockets to {}{} in batches of {} ({}s per handshake)",
        args.count, args.addr, args.path, args.batch, args.timeout
    );
    let started = Instant::now();
    let mut open: Vec<TcpStream> = Vec::with_capacity(args.count as usize);
    let mut failed = [0u32; 4];
    let mut not_attempted = 0u32;
    let mut shown = 0;
    let mut next = 0u32;
    while next < args.count {
        if started.elapsed() > open_deadline {
            not_attempted = args.count - next;
            eprintln!(
                "wsidle: open deadline ({}s) reached; {not_attempted} not attempted",
                args.open_deadline
            );
            break;
        }
        let end = next.saturating_add(args.batch).min(args.count);
        let mut set = JoinSet::new();
        for i in next..end {
            let (addr, path, origin) = (args.addr, args.path.clone(), origin.clone());
            set.spawn(async move {
                match tokio::time::timeout(timeout, open_one(addr, &path, &origin, i)).await {
                    Ok(result) => result,
                    Err(_) => Err(Failure::Timeout),
                }
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(stream)) => open.push(stream),
                Ok(Err(failure)) => {
                    failed[failure.kind()] += 1;
                    if shown < 5 {
                        shown += 1;
                        eprintln!("wsidle: handshake failed: {failure}");
                    }
                }
                Err(e) => {
                    failed[3] += 1;
                    eprintln!("wsidle: handshake task failed: {e}");
                }
            }
        }
        next = end;
    }
    let total_failed: u32 = failed.iter().sum::<u32>() + not_attempted;
    let detail: Vec<String> = KINDS
        .iter()
        .zip(failed)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!(
        "wsidle: opened ok={} failed={} ({} not_attempted={}) in {:.2}s",
        open.len(),
        total_failed,
        detail.join(" "),
        not_attempted,
        started.elapsed().as_secs_f64()
    );
    println!("READY ok={} failed={}", open.len(), total_failed);

    // Hold: until stdin reaches EOF or --hold elapses. Stdin is read on a plain
    // thread: a blocked read there does not keep the process alive at exit.
    let (eof_tx, eof_rx) = oneshot::channel::<()>();
    if !args.ignore_stdin {
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                use std::io::Read as _;
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 256];
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = eof_tx.send(());
            })
            .context("cannot start the stdin thread")?;
    } else {
        std::mem::forget(eof_tx);
    }
    let hold = Duration::from_secs_f64(args.hold);
    let why = tokio::select! {
        _ = eof_rx => "stdin closed",
        () = tokio::time::sleep(hold) => "hold elapsed",
    };

    let still_open = open.iter().filter(|s| is_open(s)).count();
    println!(
        "wsidle: {why}; still open {still_open}/{} after {:.1}s; closing",
        open.len(),
        started.elapsed().as_secs_f64()
    );
    drop(open);
    Ok(())
}

/// One handshake; `Ok` is an upgraded, idle socket.
async fn open_one(
    addr: SocketAddr,
    path: &str,
    origin: &str,
    index: u32,
) -> Result<TcpStream, Failure> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wsidle\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n",
        key = websocket_key(index)
    );
    let io = |e: std::io::Error| Failure::Io(e.to_string());
    stream.write_all(request.as_bytes()).await.map_err(io)?;

    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Failure::Io(format!(
                "closed after {} byte(s) of reply head",
                head.len()
            )));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if head.len() > MAX_HEAD {
            return Err(Failure::Io("reply head too large".into()));
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("101") {
        return Err(Failure::Status(status_line.to_owned()));
    }
    let has_accept = lines.any(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
    });
    if !has_accept {
        return Err(Failure::Status(format!(
            "{status_line} without Sec-WebSocket-Accept"
        )));
    }
    Ok(stream)
}

/// A distinct, valid (16 bytes, base64) Sec-WebSocket-Key per connection.
fn websocket_key(index: u32) -> String {
    let digest = Sha256::new()
        .chain_update(b"wsidle")
        .chain_update(std::process::id().to_le_bytes())
        .chain_update(index.to_le_bytes())
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(&digest[..16])
}

/// Not closed by the peer: nothing to read (or data, such as a ping) rather than EOF or an error.
fn is_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.try_read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}
