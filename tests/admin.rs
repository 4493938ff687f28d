//! The admin API: `/healthz`, `/readyz`, `/status`, and node drain.

mod common;

use std::net::SocketAddr;

use common::{Call, Cluster, get};
use hyper::Method;

async fn admin_cluster() -> (Cluster, SocketAddr) {
    let cluster = Cluster::builder()
        .interactive("web1")
        .interactive("web2")
        .gevent("bus")
        .cron("cron1")
        .config("[admin]\naddress = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let admin = cluster.running().admin.expect("the admin API is on");
    (cluster, admin)
}

fn status_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn node<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["nodes"]
        .as_array()
        .expect("a nodes array")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {status}"))
}

#[tokio::test]
async fn health_readiness_and_status_describe_the_cluster() {
    let (cluster, admin) = admin_cluster().await;
    let healthz = get(admin, "/healthz").await;
    assert_eq!(healthz.status, 200);
    assert_eq!(healthz.text(), "ok\n");
    assert_eq!(get(admin, "/readyz").await.status, 200);

    let status = get(admin, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let json = status_json(&status.text());
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(4), "{json}");
    let web1 = node(&json, "web1");
    assert_eq!(web1["role"], "interactive");
    assert_eq!(web1["health"], "up");
    assert_eq!(web1["draining"], false);
    assert_eq!(web1["in_flight"], 0);
    assert!(web1["workers"].as_u64().is_some_and(|w| w > 0), "{web1}");
    assert_eq!(node(&json, "bus")["role"], "gevent");
    assert_eq!(node(&json, "cron1")["health"], "unchecked");
    assert_eq!(json["queued"], 0);

    assert_eq!(get(admin, "/nope").await.status, 404);
    let post = Call::new(admin, Method::POST, "/status").send().await;
    assert_eq!(post.status, 405);
    assert_eq!(cluster.cron_connections(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn drain_through_the_api_stops_new_requests_and_readiness_follows() {
    let (cluster, admin) = admin_cluster().await;
    let drained = Call::new(admin, Method::POST, "/nodes/web1/drain")
        .send()
        .await;
    assert_eq!(drained.status, 200, "{}", drained.text());
    assert_eq!(status_json(&drained.text())["draining"], true);
    for i in 0..6 {
        let reply = get(cluster.edge, &format!("/web?i={i}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.echo().node(),
            "web2",
            "a drained node gets nothing new"
        );
    }
    assert_eq!(cluster.node("web1").stats.requests(), 0);
    assert_eq!(get(admin, "/readyz").await.status, 200, "web2 still serves");

    let both = Call::new(admin, Method::POST, "/nodes/web2/drain")
        .send()
        .await;
    assert_eq!(both.status, 200);
    assert_eq!(get(admin, "/readyz").await.status, 503);
    assert_eq!(get(cluster.edge, "/web").await.status, 503);

    for name in ["web1", "web2"] {
        let back = Call::new(admin, Method::DELETE, &format!("/nodes/{name}/drain"))
            .send()
            .await;
        assert_eq!(back.status, 200);
        assert_eq!(status_json(&back.text())["draining"], false);
    }
    assert_eq!(get(admin, "/readyz").await.status, 200);
    let mut served = std::collections::HashSet::new();
    for i in 0..4 {
        served.insert(
            get(cluster.edge, &format!("/web?again={i}"))
                .await
                .echo()
                .node()
                .to_owned(),
        );
    }
    assert!(served.contains("web1"), "web1 is back: {served:?}");

    let unknown = Call::new(admin, Method::POST, "/nodes/ghost/drain")
        .send()
        .await;
    assert_eq!(unknown.status, 404);
    let cron = Call::new(admin, Method::POST, "/nodes/cron1/drain")
        .send()
        .await;
    assert_eq!(cron.status, 409);
    let wrong = get(admin, "/nodes/web1/drain").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("POST, DELETE"));
    cluster.shutdown().await;
}

#[test]
fn the_admin_api_stays_on_loopback_unless_allowed() {
    let base = "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[nodes]]\nname = \"web1\"\n\
                address = \"127.0.0.1:8069\"\nrole = \"interactive\"\nworkers = 2\n\n[admin]\n";
    let err = odoo_edge::config::parse(&format!("{base}address = \"0.0.0.0:9901\"\n"))
        .expect_err("a public admin address is refused")
        .to_string();
    assert!(
        err.contains("admin.address = \"0.0.0.0:9901\" (line 11)"),
        "{err}"
    );
    assert!(err.contains("allow_remote"), "{err}");
    let config = odoo_edge::config::parse(&format!(
        "{base}address = \"0.0.0.0:9901\"\nallow_remote = true\n"
    ))
    .expect("allowed explicitly");
    assert_eq!(config.admin, Some("0.0.0.0:9901".parse().expect("address")));
    let config = odoo_edge::config::parse(base).expect("no address: off");
    assert_eq!(config.admin, None);
}

/// `odoo-edge health` as a container HEALTHCHECK runs it.
fn health_command(admin: SocketAddr, ready: bool) -> std::process::Output {
    let admin = admin.to_string();
    let mut args = vec!["health", "--admin", admin.as_str()];
    if ready {
        args.push("--ready");
    }
    std::process::Command::new(env!("CARGO_BIN_EXE_odoo-edge"))
        .args(&args)
        .output()
        .expect("run odoo-edge health")
}

#[tokio::test]
async fn the_health_command_reports_liveness_and_readiness_by_exit_code() {
    let (cluster, admin) = admin_cluster().await;
    let ok = tokio::task::spawn_blocking(move || health_command(admin, false))
        .await
        .expect("task");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for name in ["web1", "web2"] {
        let drained = Call::new(admin, Method::POST, &format!("/nodes/{name}/drain"))
            .send()
            .await;
        assert_eq!(drained.status, 200);
    }
    let not_ready = tokio::task::spawn_blocking(move || health_command(admin, true))
        .await
        .expect("task");
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&not_ready.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&not_ready.stderr)
    );
    cluster.shutdown().await;
    // Nothing listens any more: a clear failure, not a hang.
    let gone = tokio::task::spawn_blocking(move || health_command(admin, false))
        .await
        .expect("task");
    assert_eq!(gone.status.code(), Some(1));
}
