//! `odoo-edge demo`: the edge in front of built-in mock Odoo nodes.
//!
//! Two interactive nodes (prefork, 4 workers each), one gevent node and one
//! cron node, all on 127.0.0.1 with ports chosen by the system. The cron node
//! is only a listener that counts connections: the edge never opens one, and
//! the demo says so when it stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config;
use crate::mock_odoo::{self, MockConfig, Mode, Role};

/// The demo's configuration, before the node addresses are filled in.
pub const TEMPLATE: &str = include_str!("../config/demo.toml");

/// Runs the demo until `stop` resolves.
pub async fn run(
    listen: SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let prefork = Mode::Prefork { workers: 4 };
    let web1 = mock_odoo::bind(
        local,
        MockConfig::new("odoo-web-1", Role::Interactive).with_mode(prefork),
    )
    .await
    .context("starting mock node odoo-web-1")?;
    let web2 = mock_odoo::bind(
        local,
        MockConfig::new("odoo-web-2", Role::Interactive).with_mode(prefork),
    )
    .await
    .context("starting mock node odoo-web-2")?;
    let bus = mock_odoo::bind(
        local,
        MockConfig::new("odoo-bus", Role::Gevent).with_mode(Mode::Threaded),
    )
    .await
    .context("starting mock node odoo-bus")?;
    let cron = TcpListener::bind(local)
        .await
        .context("starting the cron sentinel")?;
    let cron_addr = cron.local_addr()?;
    let cron_connections = Arc::new(AtomicU64::new(0));
    let counter = cron_connections.clone();
    let cron_task = tokio::spawn(async move {
        while let Ok((_stream, _)) = cron.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let text = TEMPLATE
        .replace("${listen}", &listen.to_string())
        .replace("${web1}", &web1.addr.to_string())
        .replace("${web2}", &web2.addr.to_string())
        .replace("${bus}", &bus.addr.to_string())
        .replace("${cron}", &cron_addr.to_string());
    let config = config::parse(&text).context("the embedded demo configuration")?;
    let running = crate::start(&config)?;
    let edge = running.addrs[0];

    println!("odoo-edge demo: the edge listens on http://{edge}");
    println!(
        "  odoo-web-1  interactive  {}  (prefork, 4 workers)",
        web1.addr
    );
    println!(
        "  odoo-web-2  interactive  {}  (prefork, 4 workers)",
        web2.addr
    );
    println!("  odoo-bus    gevent       {}", bus.addr);
    println!("  odoo-cron   cron         {cron_addr}  (never sent anything)");
    if let Some(admin) = running.admin {
        println!("The admin API listens on http://{admin}:");
        println!("  curl -s http://{admin}/status    # nodes: role, health, workers, in flight");
        println!("  curl -s http://{admin}/metrics   # Prometheus metrics");
        println!("  curl -s -X POST http://{admin}/nodes/odoo-web-2/drain   # then DELETE to undo");
    }
    println!(
        "Each request writes one access log line below (nginx's combined format, then the edge's fields)."
    );
    println!();
    println!("Try (each mock node answers JSON naming itself and echoing what it received):");
    println!("  curl -s http://{edge}/web/login          # twice: odoo-web-1, then odoo-web-2");
    println!("  curl -s http://{edge}/web/health");
    println!(
        "  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"jsonrpc\":\"2.0\",\"method\":\"call\",\"params\":{{}}}}' http://{edge}/web/dataset/call_kw"
    );
    println!("  curl -s http://{edge}/websocket/health   # goes to odoo-bus");
    println!(
        "  curl -si --max-time 2 -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Origin: http://{edge}' http://{edge}/websocket"
    );
    println!("      # 101 Switching Protocols from odoo-bus (then the tunnel waits for frames)");
    println!("  curl -s 'http://{edge}/web?mock_fail=garbage'   # a node replying garbage: 502");
    println!("Press Ctrl-C to stop.");

    stop.await;
    running.shutdown(Duration::from_secs(5)).await;
    cron_task.abort();
    let served: Vec<String> = [
        ("odoo-web-1", &web1),
        ("odoo-web-2", &web2),
        ("odoo-bus", &bus),
    ]
    .iter()
    .map(|(name, h)| format!("{name} {}", h.stats.requests()))
    .collect();
    println!(
        "odoo-edge demo stopped. Requests per node (health probes included): {}; connections to odoo-cron: {}",
        served.join(", "),
        cron_connections.load(Ordering::Relaxed)
    );
    web1.shutdown().await;
    web2.shutdown().await;
    bus.shutdown().await;
    Ok(())
}
