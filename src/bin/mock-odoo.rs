//! `mock-odoo`: runs one fake Odoo node (see `odoo_edge::mock_odoo`) until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use odoo_edge::mock_odoo::{self, Fail, MockConfig, Mode, Role};
use tracing_subscriber::EnvFilter;

/// A fake Odoo HTTP node for testing odoo-edge.
#[derive(Debug, Parser)]
#[command(name = "mock-odoo", version)]
struct Args {
    /// Node name, reported in every reply.
    #[arg(long)]
    name: String,
    /// Which Odoo process to play: interactive (8069) or gevent (8072).
    #[arg(long, default_value = "interactive")]
    role: Role,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8069")]
    listen: SocketAddr,
    /// Prefork with N workers (one request per connection, HTTP/1.0).
    #[arg(long, conflicts_with = "threaded", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Threaded server: every connection at once, keep-alive (Odoo's workers = 0).
    #[arg(long)]
    threaded: bool,
    /// Delay added before every reply, e.g. 50ms.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Per-read socket timeout (Odoo's ODOO_HTTP_SOCKET_TIMEOUT).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    read_timeout: Duration,
    /// Close without reply when a request is delayed longer than this.
    #[arg(long, value_parser = humantime::parse_duration)]
    limit_time_real: Option<Duration>,
    /// Report the database as down on /web/health?db_server_status.
    #[arg(long)]
    db_down: bool,
    /// Fail every request: garbage, reset, close or hang.
    #[arg(long)]
    fail: Option<Fail>,
    /// An addons directory for /<module>/static/<path>; repeat it or separate with commas,
    /// in Odoo's addons_path order (the first holding the file wins).
    #[arg(long = "addons-path", value_name = "DIR", value_delimiter = ',')]
    addons_paths: Vec<PathBuf>,
    /// The filestore root (Odoo's <data_dir>/filestore): /web/content/<sha> serves
    /// <DIR>/<db>/<sha[:2]>/<sha> (or the legacy <sha[:3]>/<sha>).
    #[arg(long, value_name = "DIR")]
    filestore: Option<PathBuf>,
    /// Odoo 16+'s x_sendfile: /web/content replies carry X-Sendfile and X-Accel-Redirect
    /// with no body.
    #[arg(long, requires = "filestore")]
    x_sendfile: bool,
    /// Database name: the filestore subdirectory and part of X-Accel-Redirect.
    #[arg(long, value_name = "NAME", default_value = "odoo")]
    db: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let mut cfg = MockConfig::new(args.name.clone(), args.role)
        .with_read_timeout(args.read_timeout)
        .with_latency(args.latency)
        .with_limit_time_real(args.limit_time_real)
        .with_db_up(!args.db_down)
        .with_fail(args.fail)
        .with_addons_paths(args.addons_paths)
        .with_db(args.db);
    if let Some(filestore) = args.filestore {
        cfg = if args.x_sendfile {
            cfg.with_x_sendfile(filestore)
        } else {
            cfg.with_filestore(filestore)
        };
    }
    if args.threaded {
        cfg = cfg.with_mode(Mode::Threaded);
    } else if let Some(workers) = args.workers {
        cfg = cfg.with_mode(Mode::Prefork {
            workers: usize::from(workers),
        });
    }
    let (role, mode) = (cfg.role, cfg.mode);

    let handle = match mock_odoo::bind(args.listen, cfg).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("mock-odoo: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "mock-odoo {} ({role}, {mode}) listening on {}",
        args.name, handle.addr
    );
    if let Err(err) = stop_signal().await {
        eprintln!("mock-odoo: cannot wait for signals: {err}");
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
