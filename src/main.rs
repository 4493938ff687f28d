//! The `odoo-edge` command: `run`, `check`, `health` and `demo`. Parsing the command line,
//! logging set-up and exit codes live here; everything else is the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use odoo_edge::Config;
use odoo_edge::config::{self, ConfigError, Role};

#[derive(Parser)]
#[command(name = "odoo-edge", version, about = "An Odoo-aware HTTP edge proxy")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0, or print every problem and exit 1.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running edge's admin API whether it is up (`GET /healthz`):
    /// exit 0 if so, else 1. For container health checks (no curl needed).
    Health {
        /// The admin API's address (`[admin] address`).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// `readyz` instead: an interactive node is up and in service.
        #[arg(long)]
        ready: bool,
    },
    /// Start the edge in front of built-in mock Odoo nodes (2 interactive, 1 gevent, 1 cron).
    Demo {
        /// Where the edge listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config: path } => {
            let Some(config) = load_or_report(&path) else {
                return ExitCode::FAILURE;
            };
            report(
                runtime(config.worker_threads)
                    .and_then(|rt| rt.block_on(serve_until_stopped(&path, &config))),
            )
        }
        Command::Health { admin, ready } => health(admin, ready),
        Command::Demo { listen } => report(
            runtime(None).and_then(|rt| rt.block_on(odoo_edge::demo::run(listen, stop_signal()))),
        ),
    }
}

fn check(path: &Path) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    for warning in &config.warnings {
        eprintln!("odoo-edge: warning: {warning}");
    }
    let count = |role| config.nodes_with_role(role).count();
    let workers: u32 = config
        .nodes_with_role(Role::Interactive)
        .map(|n| n.workers)
        .sum();
    println!(
        "odoo-edge: {} is valid: {} listener(s); nodes: {} interactive ({} workers), {} gevent, {} cron",
        path.display(),
        config.listeners.len(),
        count(Role::Interactive),
        workers,
        count(Role::Gevent),
        count(Role::Cron),
    );
    for (i, listener) in config.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls {
            // Problems and warnings were reported while loading; this lists
            // what each listener will serve.
            let check = odoo_edge::tls::check(tls, std::time::SystemTime::now());
            for report in &check.certificates {
                println!("odoo-edge: listeners[{i}] ({}): {report}", listener.address);
            }
        } else if let Some(redirect) = &listener.redirect {
            println!(
                "odoo-edge: listeners[{i}] ({}): redirects to HTTPS ({})",
                listener.address,
                redirect.status.as_u16()
            );
        }
    }
    let draining: Vec<&str> = config
        .nodes
        .iter()
        .filter(|n| n.drain)
        .map(|n| n.name.as_str())
        .collect();
    if !draining.is_empty() {
        println!("odoo-edge: draining: {}", draining.join(", "));
    }
    let health = &config.health;
    let admission = &config.admission;
    println!(
        "odoo-edge: health: {} every {} (rise {}, fall {}); when all nodes are down: {}; \
         queue: {} requests, {} at most",
        health.interactive.path,
        humantime::format_duration(health.interactive.interval),
        health.interactive.rise,
        health.interactive.fall,
        match health.when_all_down {
            odoo_edge::config::WhenAllDown::Open => "route anyway (open)",
            odoo_edge::config::WhenAllDown::Closed => "503 (closed)",
        },
        admission.queue_length,
        humantime::format_duration(admission.queue_timeout),
    );
    ExitCode::SUCCESS
}

/// `odoo-edge health`: one GET to the admin API, bounded to 5 s.
fn health(admin: SocketAddr, ready: bool) -> ExitCode {
    use std::io::{Read as _, Write as _};
    let path = if ready { "/readyz" } else { "/healthz" };
    let limit = std::time::Duration::from_secs(5);
    let status = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&admin, limit)?;
        stream.set_read_timeout(Some(limit))?;
        stream.set_write_timeout(Some(limit))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut reply)?;
        let text = String::from_utf8_lossy(&reply);
        Ok(text.lines().next().unwrap_or_default().to_owned())
    })();
    match status {
        Ok(line) if line.split_whitespace().nth(1) == Some("200") => {
            println!("odoo-edge: {admin}{path}: {line}");
            ExitCode::SUCCESS
        }
        Ok(line) => {
            eprintln!("odoo-edge: {admin}{path}: {line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("odoo-edge: {admin}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a config, printing what is wrong with it (like `nginx -t`) on failure.
fn load_or_report(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(config) => Some(config),
        Err(ConfigError::Invalid(problems)) => {
            eprintln!(
                "odoo-edge: {}: {} problem(s):",
                path.display(),
                problems.len()
            );
            for p in problems {
                eprintln!("  {p}");
            }
            None
        }
        Err(e) => {
            eprintln!("odoo-edge: {}: {e}", path.display());
            None
        }
    }
}

fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker thread: a current-thread runtime does the same work without
    // the work-stealing machinery.
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odoo-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP re-reads the file and, if it is
/// valid, swaps in a new generation of the edge built from it (see
/// `odoo_edge::reload`); a file that is not is refused and counted. Under systemd
/// (`Type=notify`) it reports READY, RELOADING, STOPPING and a STATUS line
/// (see `odoo_edge::systemd`).
async fn serve_until_stopped(path: &Path, config: &Config) -> anyhow::Result<()> {
    use odoo_edge::systemd;

    let running = odoo_edge::start(config)?;
    let stop = stop_signal();
    tokio::pin!(stop);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // The first poll installs the SIGINT/SIGTERM handlers. Do it before READY=1:
    // from then on systemd may signal at any moment, and a signal without a
    // handler would kill the process instead of stopping it gracefully.
    let mut stopping = futures_util::poll!(&mut stop).is_ready();
    let serving = format!(
        "serving {} listener(s): {}",
        running.addrs.len(),
        running
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    systemd::status(&serving);
    systemd::ready();
    while !stopping {
        #[cfg(unix)]
        let hup = hangup.recv();
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut stop => stopping = true,
            _ = hup => {
                systemd::reloading();
                tracing::info!(path = %path.display(), "reloading the configuration");
                match config::load(path) {
                    Ok(new) => {
                        // Logs each line itself.
                        let lines = running.reload(&new);
                        if lines.is_empty() {
                            tracing::info!("reload: nothing to change");
                            systemd::status(&format!("{serving}; reloaded: nothing to change"));
                        } else {
                            systemd::status(&format!("{serving}; reloaded: {}", lines.join("; ")));
                        }
                    }
                    Err(e) => {
                        running.reload_refused(&e.to_string());
                        systemd::status(&format!("{serving}; reload refused: {e}"));
                    }
                }
                // Ready again either way: a refused file leaves the running
                // configuration serving.
                systemd::ready();
            }
        }
    }
    tracing::info!("shutting down");
    // The deadline of the configuration running now (a reload may have changed it).
    let deadline = running.edge().timeouts.shutdown;
    systemd::stopping();
    systemd::status(&format!(
        "stopping: finishing requests in flight ({} at most)",
        humantime::format_duration(deadline)
    ));
    running.shutdown(deadline).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rustls warns once per connection about clients that send an IP
        // address as the TLS server name (wrk, curl to an IP): not news.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
