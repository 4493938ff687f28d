//! The configuration file: the shipped example, the exact wording of every
//! problem (key, value, line, reason), and `odoo-edge check`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::process::config_file;
use odoo_edge::config::{self, ConfigError, Probe, Role, WhenAllDown};

const EXAMPLE: &str = include_str!("../config/odoo-edge.example.toml");

/// Listener on line 2, one interactive node on lines 4 to 8.
const BASE: &str = r#"[[listeners]]
address = "127.0.0.1:8080"

[[nodes]]
name = "web"
address = "10.0.0.11:8069"
role = "interactive"
workers = 4
"#;

/// Every problem's Display, in order; panics unless the text is valid TOML with problems.
fn problems(text: &str) -> Vec<String> {
    match config::parse(text) {
        Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected problems, got another error: {other}"),
        Ok(_) => panic!("expected problems, the config is valid:\n{text}"),
    }
}

/// The text of a syntax error; panics on anything else.
fn syntax_error(text: &str) -> String {
    match config::parse(text) {
        Err(err @ ConfigError::Syntax(_)) => err.to_string(),
        Err(other) => panic!("expected a syntax error, got: {other}"),
        Ok(_) => panic!("expected a syntax error, the config is valid:\n{text}"),
    }
}

#[test]
fn the_example_config_parses_with_the_four_documented_nodes() {
    let config = config::parse(EXAMPLE).expect("the example must be valid");
    let nodes: Vec<(&str, &str, Role, u32)> = config
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address.as_str(), n.role, n.workers))
        .collect();
    assert_eq!(
        nodes,
        [
            ("odoo-web-1", "10.0.0.11:8069", Role::Interactive, 8),
            ("odoo-web-2", "10.0.0.12:8069", Role::Interactive, 8),
            ("odoo-bus", "10.0.0.11:8072", Role::Gevent, 0),
            ("odoo-cron", "10.0.0.13:8069", Role::Cron, 0),
        ]
    );
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].address.to_string(), "0.0.0.0:8080");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn the_example_shows_every_default() {
    // The same cluster with no optional section must configure exactly the same edge.
    let minimal = config::parse(&format!(
        "{BASE}\n[[nodes]]\nname = \"bus\"\naddress = \"10.0.0.11:8072\"\nrole = \"gevent\"\n"
    ))
    .expect("a valid minimal config");
    let example = config::parse(EXAMPLE).expect("the example must be valid");
    assert_eq!(
        format!("{:?}", example.timeouts),
        format!("{:?}", minimal.timeouts)
    );
    assert_eq!(
        format!("{:?}", example.limits),
        format!("{:?}", minimal.limits)
    );
    assert_eq!(
        format!("{:?}", example.forwarding),
        format!("{:?}", minimal.forwarding)
    );
    assert_eq!(
        format!("{:?}", example.cookies),
        format!("{:?}", minimal.cookies)
    );
    assert_eq!(
        format!("{:?}", example.retries),
        format!("{:?}", minimal.retries)
    );
    assert_eq!(example.worker_threads, minimal.worker_threads);
    assert_eq!(
        format!("{:?}", example.health),
        format!("{:?}", minimal.health)
    );
    assert_eq!(
        format!("{:?}", example.admission),
        format!("{:?}", minimal.admission)
    );
    for node in example.nodes.iter().filter(|n| n.role != Role::Cron) {
        let same_role = minimal
            .nodes
            .iter()
            .find(|n| n.role == node.role)
            .expect("the minimal config has every routed role");
        assert_eq!(node.probe, same_role.probe, "node {}", node.name);
        assert_eq!(node.drain, same_role.drain, "node {}", node.name);
    }
    assert_eq!(
        example.timeouts.upstream_response,
        config::DEFAULT_UPSTREAM_RESPONSE
    );
}

#[test]
fn a_listener_without_port_is_named_with_value_and_line() {
    let text = BASE.replace("127.0.0.1:8080", "0.0.0.0");
    assert_eq!(
        problems(&text),
        [r#"listeners[0].address = "0.0.0.0" (line 2): expected IP:port, such as 0.0.0.0:8080"#]
    );
}

#[test]
fn a_node_address_without_port_is_named_with_value_and_line() {
    let text = BASE.replace("10.0.0.11:8069", "10.0.0.1");
    assert_eq!(
        problems(&text),
        [
            r#"nodes[0].address = "10.0.0.1" (line 6): missing port: expected host:port, such as 10.0.0.11:8069"#
        ]
    );
}

#[test]
fn a_duplicate_node_name_is_reported_on_the_second_node() {
    let text = format!(
        "{BASE}\n[[nodes]]\nname = \"web\"\naddress = \"10.0.0.12:8069\"\nrole = \"interactive\"\nworkers = 4\n"
    );
    assert_eq!(
        problems(&text),
        [r#"nodes[1].name = "web" (line 11): another node already has this name"#]
    );
}

#[test]
fn an_unknown_role_lists_the_roles() {
    let text = format!(
        "{BASE}\n[[nodes]]\nname = \"w2\"\naddress = \"10.0.0.12:8069\"\nrole = \"worker\"\n"
    );
    assert_eq!(
        problems(&text),
        [r#"nodes[1].role = "worker" (line 13): expected "interactive", "gevent" or "cron""#]
    );
}

#[test]
fn an_interactive_node_without_workers_is_reported_at_its_name() {
    let text = BASE.replace("workers = 4\n", "");
    assert_eq!(
        problems(&text),
        [
            "nodes[0].workers (line 5): interactive node \"web\" needs `workers` \
             (its odoo.conf `workers`, or 1 for a threaded Odoo)"
        ]
    );
}

#[test]
fn a_websocket_idle_below_odoos_ping_interval_is_refused() {
    let text = format!("{BASE}\n[timeouts]\nwebsocket_idle = \"30s\"\n");
    assert_eq!(
        problems(&text),
        [
            "timeouts.websocket_idle = \"30s\" (line 11): must be longer than 60s: Odoo pings \
             an idle websocket only after 45s and waits 15s for the pong"
        ]
    );
}

#[test]
fn a_zero_duration_is_refused() {
    let text = format!("{BASE}\n[timeouts]\nclient_body = \"60s\"\nupstream_connect = \"0s\"\n");
    assert_eq!(
        problems(&text),
        [r#"timeouts.upstream_connect = "0s" (line 12): must be longer than 0s"#]
    );
}

#[test]
fn a_zero_shutdown_deadline_is_refused() {
    let text = format!("{BASE}\n[timeouts]\nshutdown = \"0s\"\n");
    assert_eq!(
        problems(&text),
        [r#"timeouts.shutdown = "0s" (line 11): must be longer than 0s"#]
    );
    let text = format!("{BASE}\n[timeouts]\nshutdown = \"2m\"\n");
    let config = config::parse(&text).expect("a 2m deadline is valid");
    assert_eq!(config.timeouts.shutdown, Duration::from_secs(120));
}

#[test]
fn post_in_retry_methods_is_refused() {
    let text = format!("{BASE}\n[retries]\nmethods = [\"GET\", \"POST\"]\n");
    assert_eq!(
        problems(&text),
        [
            "retries.methods[1] = \"POST\" (line 11): not a safe method: replaying it could apply \
             a write twice (every Odoo JSON-RPC call is a POST); only GET, HEAD, OPTIONS and \
             TRACE may be replayed"
        ]
    );
}

#[test]
fn a_cluster_without_an_interactive_node_is_refused() {
    let text = BASE.replace("role = \"interactive\"", "role = \"gevent\"");
    assert_eq!(
        problems(&text),
        [r#"nodes: no node has role = "interactive": nothing could serve ordinary requests"#]
    );
}

#[test]
fn a_bad_trusted_proxy_is_named_by_index() {
    let text =
        format!("{BASE}\n[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300\"]\n");
    assert_eq!(
        problems(&text),
        [
            r#"forwarding.trusted_proxies[1] = "10.0.0.300" (line 11): expected an IP address or CIDR such as 10.0.0.0/8"#
        ]
    );
}

#[test]
fn samesite_none_without_secure_is_refused() {
    let text = format!("{BASE}\n[cookies]\nsession_secure = false\nsession_samesite = \"None\"\n");
    assert_eq!(
        problems(&text),
        [
            r#"cookies.session_samesite = "None" (line 12): SameSite=None needs session_secure = true (browsers reject it otherwise)"#
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"[[listeners]]
address = "0.0.0.0"

[[nodes]]
name = "web"
address = "10.0.0.1"
role = "interactive"
workers = 4

[[nodes]]
name = "web"
address = "10.0.0.12:8069"
role = "interactive"

[retries]
methods = ["GET", "POST"]
"#;
    assert_eq!(
        problems(text),
        [
            r#"listeners[0].address = "0.0.0.0" (line 2): expected IP:port, such as 0.0.0.0:8080"#,
            r#"nodes[0].address = "10.0.0.1" (line 6): missing port: expected host:port, such as 10.0.0.11:8069"#,
            r#"nodes[1].name = "web" (line 11): another node already has this name"#,
            "nodes[1].workers (line 11): interactive node \"web\" needs `workers` \
             (its odoo.conf `workers`, or 1 for a threaded Odoo)",
            "retries.methods[1] = \"POST\" (line 16): not a safe method: replaying it could apply \
             a write twice (every Odoo JSON-RPC call is a POST); only GET, HEAD, OPTIONS and \
             TRACE may be replayed",
        ]
    );
    let Err(err) = config::parse(text) else {
        panic!("the config has problems");
    };
    assert_eq!(
        err.to_string().lines().count(),
        5,
        "one line per problem: {err}"
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let text = BASE.replace("workers = 4", "workers = = 4");
    let message = syntax_error(&text);
    assert!(message.contains("line 8"), "{message}");
    assert!(
        message.contains("workers = = 4"),
        "the snippet shows the line: {message}"
    );
}

#[test]
fn an_unknown_key_names_the_key_and_its_line() {
    let text = BASE.replace(
        "address = \"10.0.0.11:8069\"",
        "adress = \"10.0.0.11:8069\"",
    );
    let message = syntax_error(&text);
    assert!(message.contains("line 6"), "{message}");
    assert!(message.contains("adress"), "{message}");
}

#[test]
fn a_duration_written_as_a_number_names_its_line() {
    let message = syntax_error(&format!("{BASE}\n[timeouts]\nwebsocket_idle = 300\n"));
    assert!(message.contains("line 11"), "{message}");
    assert!(message.contains("websocket_idle"), "{message}");
}

// === the binary ===

/// Runs `odoo-edge` with `args`; kills it and fails if it runs longer than 10 s.
fn odoo_edge(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odoo-edge"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start odoo-edge");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded by the deadline; polls every 20 ms.
    loop {
        if child.try_wait().expect("poll odoo-edge").is_some() {
            return child.wait_with_output().expect("collect odoo-edge output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect odoo-edge output");
            panic!(
                "odoo-edge {args:?} still running after 10 s; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[test]
fn check_accepts_the_example_and_summarises_it() {
    let file = config_file(EXAMPLE);
    let output = odoo_edge(&["check", "-c", path_str(file.path())]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(
        stdout.contains("nodes: 2 interactive (16 workers), 1 gevent, 1 cron"),
        "{stdout}"
    );
}

#[test]
fn check_prints_every_problem_and_exits_1() {
    let text = format!(
        "{}\n[retries]\nmethods = [\"GET\", \"POST\"]\n",
        BASE.replace("10.0.0.11:8069", "10.0.0.1")
    );
    let file = config_file(&text);
    let path = path_str(file.path());
    let output = odoo_edge(&["check", "-c", path]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("odoo-edge: {path}: 2 problem(s):")),
        "{stderr}"
    );
    for problem in problems(&text) {
        assert!(
            stderr.lines().any(|l| l == format!("  {problem}")),
            "missing `{problem}` in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_warns_about_a_cluster_without_gevent_node() {
    let file = config_file(BASE);
    let output = odoo_edge(&["check", "-c", path_str(file.path())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("warning: no gevent node"), "{stderr}");
}

#[test]
fn check_reports_a_syntax_error_with_its_line_and_exits_1() {
    let file = config_file(&BASE.replace("address = \"10.0.0.11:8069\"", "adress = \"x\""));
    let output = odoo_edge(&["check", "-c", path_str(file.path())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("line 6") && stderr.contains("adress"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_on_a_missing_file_exits_1_with_a_clear_message() {
    let output = odoo_edge(&["check", "-c", "/nonexistent/odoo-edge.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/odoo-edge.toml"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_with_a_taken_listener_exits_1_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = taken.local_addr().expect("held address");
    let file = config_file(&BASE.replace("127.0.0.1:8080", &addr.to_string()));
    let output = odoo_edge(&["run", "-c", path_str(file.path())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("listeners[0].address"), "{stderr}");
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}

#[test]
fn absurd_durations_and_a_connect_timeout_above_the_reply_timeout_are_refused() {
    let text = format!(
        "{BASE}\n[timeouts]\nclient_keepalive = \"300000y\"\nupstream_connect = \"30m\"\nupstream_response = \"10m\"\n"
    );
    assert_eq!(
        problems(&text),
        [
            "timeouts.client_keepalive = \"300000years\" (line 11): must be at most 7 days",
            "timeouts.upstream_connect = \"30m\" (line 12): must be shorter than \
             timeouts.upstream_response, or a node that does not answer would give a 504 \
             instead of moving on to the next node",
        ]
    );
}

#[test]
fn put_and_delete_are_refused_as_retry_methods() {
    let text = format!("{BASE}\n[retries]\nmethods = [\"GET\", \"PUT\", \"DELETE\"]\n");
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("retries.methods[1] = \"PUT\" (line 11): not a safe method"));
    assert!(found[1].starts_with("retries.methods[2] = \"DELETE\" (line 11): not a safe method"));
}

// === health checks, admission control, drain ===

/// `BASE` plus a gevent node on lines 10 to 13, so that neither pool is empty.
fn with_bus(extra: &str) -> String {
    format!(
        "{BASE}\n[[nodes]]\nname = \"bus\"\naddress = \"10.0.0.11:8072\"\nrole = \"gevent\"\n{extra}"
    )
}

/// The probe a role gets when the file says nothing about it.
fn default_probe(path: &str) -> Probe {
    Probe {
        path: path.into(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(3),
        status: 200,
        rise: 2,
        fall: 3,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The one problem of `BASE` followed by `extra` (from line 9 on).
fn only_problem(extra: &str) -> String {
    let found = problems(&format!("{BASE}{extra}"));
    assert_eq!(
        found.len(),
        1,
        "one problem expected for {extra:?}: {found:?}"
    );
    found.into_iter().next().expect("one problem")
}

#[test]
fn without_health_or_admission_sections_the_defaults_apply() {
    let config = config::parse(&with_bus("")).expect("a valid config");
    let health = &config.health;
    assert_eq!(health.interactive, default_probe("/web/health"));
    assert_eq!(health.gevent, default_probe("/websocket/health"));
    assert_eq!(health.when_all_down, WhenAllDown::Open);
    assert!(health.maintenance_page.is_none());
    assert_eq!(health.retry_after, secs(30));
    assert_eq!(config.admission.queue_length, 1000);
    assert_eq!(config.admission.queue_timeout, secs(60));
    assert_eq!(config.admission.retry_after, secs(5));
    let nodes: Vec<(&str, bool, &Probe)> = config
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.drain, &n.probe))
        .collect();
    assert_eq!(
        nodes,
        [
            ("web", false, &default_probe("/web/health")),
            ("bus", false, &default_probe("/websocket/health")),
        ]
    );
}

#[test]
fn every_key_is_read_and_node_overrides_merge_key_by_key() {
    let page = config_file("<h1>Back soon</h1>");
    let text = format!(
        r#"[[listeners]]
address = "127.0.0.1:8080"

[health]
when_all_down = "closed"
maintenance_page = "{page}"
retry_after = "2m"

[health.interactive]
path = "/web/health?db_server_status=1"
interval = "10s"
timeout = "4s"
status = 204
rise = 4
fall = 5

[health.gevent]
path = "/websocket/health"
interval = "20s"
timeout = "2s"
status = 200
rise = 1
fall = 2

[admission]
queue_length = 0
queue_timeout = "90s"
retry_after = "7s"

[[nodes]]
name = "web1"
address = "10.0.0.11:8069"
role = "interactive"
workers = 4

[[nodes]]
name = "web2"
address = "10.0.0.12:8069"
role = "interactive"
workers = 4
drain = true
[nodes.health]
interval = "30s"
fall = 9

[[nodes]]
name = "bus"
address = "10.0.0.11:8072"
role = "gevent"
health = {{ path = "/websocket/health?x=1", timeout = "15s" }}

[[nodes]]
name = "cron"
address = "10.0.0.13:8069"
role = "cron"
drain = false
"#,
        page = path_str(page.path())
    );
    let config = config::parse(&text).expect("a valid config");
    let web = Probe {
        path: "/web/health?db_server_status=1".into(),
        interval: secs(10),
        timeout: secs(4),
        status: 204,
        rise: 4,
        fall: 5,
    };
    let bus = Probe {
        path: "/websocket/health".into(),
        interval: secs(20),
        timeout: secs(2),
        status: 200,
        rise: 1,
        fall: 2,
    };
    assert_eq!(config.health.interactive, web);
    assert_eq!(config.health.gevent, bus);
    assert_eq!(config.health.when_all_down, WhenAllDown::Closed);
    assert_eq!(
        config.health.maintenance_page.as_deref(),
        Some(&b"<h1>Back soon</h1>"[..])
    );
    assert_eq!(config.health.retry_after, secs(120));
    assert_eq!(config.admission.queue_length, 0);
    assert_eq!(config.admission.queue_timeout, secs(90));
    assert_eq!(config.admission.retry_after, secs(7));

    let nodes: Vec<(&str, bool, Probe)> = config
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.drain, n.probe.clone()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("web1", false, web.clone()),
            (
                "web2",
                true,
                Probe {
                    interval: secs(30),
                    fall: 9,
                    ..web
                }
            ),
            (
                "bus",
                false,
                Probe {
                    path: "/websocket/health?x=1".into(),
                    timeout: secs(15),
                    ..bus
                }
            ),
            // Never probed: the interactive defaults, not [health.interactive].
            ("cron", false, default_probe("/web/health")),
        ]
    );
}

#[test]
fn an_inline_node_health_table_is_the_same_as_a_sub_table() {
    let inline = config::parse(&format!(
        "{BASE}health = {{ interval = \"10s\", rise = 3 }}\n"
    ))
    .expect("inline form is valid");
    let table = config::parse(&format!(
        "{BASE}[nodes.health]\ninterval = \"10s\"\nrise = 3\n"
    ))
    .expect("table form is valid");
    let expected = Probe {
        interval: secs(10),
        rise: 3,
        ..default_probe("/web/health")
    };
    assert_eq!(inline.nodes[0].probe, expected);
    assert_eq!(table.nodes[0].probe, expected);
}

#[test]
fn health_and_admission_values_at_their_bounds_are_accepted() {
    for extra in [
        "[health]\nretry_after = \"1s\"\n[admission]\nretry_after = \"1day\"\n",
        "[health]\nretry_after = \"1day\"\n[admission]\nretry_after = \"1s\"\n",
        "[health.interactive]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
        "[health.interactive]\ninterval = \"1h\"\ntimeout = \"1h\"\n",
        "[health.interactive]\nstatus = 100\nrise = 1\nfall = 100\n",
        "[health.interactive]\nstatus = 599\nrise = 100\nfall = 1\n",
        "[health.gevent]\npath = \"/\"\n",
        "[admission]\nqueue_length = 0\nqueue_timeout = \"7days\"\n",
        "[admission]\nqueue_length = 1000000\nqueue_timeout = \"1ms\"\n",
    ] {
        let text = format!("{BASE}\n{extra}");
        if let Err(err) = config::parse(&text) {
            panic!("{extra:?} must be accepted: {err}");
        }
    }
}

#[test]
fn each_probe_rule_names_key_value_and_line() {
    let cases = [
        (
            "[health.interactive]\npath = \"web/health\"\n",
            r#"health.interactive.path = "web/health" (line 11): must start with '/', such as "/web/health""#,
        ),
        (
            "[health.interactive]\npath = \"/web/health check\"\n",
            r#"health.interactive.path = "/web/health check" (line 11): not a valid path and query (no spaces, no '#')"#,
        ),
        (
            "[health.gevent]\npath = \"/websocket/health#x\"\n",
            r#"health.gevent.path = "/websocket/health#x" (line 11): not a valid path and query (no spaces, no '#')"#,
        ),
        (
            "[health.interactive]\ninterval = \"50ms\"\ntimeout = \"10ms\"\n",
            r#"health.interactive.interval = "50ms" (line 11): must be 100ms to 1h"#,
        ),
        (
            "[health.gevent]\ninterval = \"2h\"\n",
            r#"health.gevent.interval = "2h" (line 11): must be 100ms to 1h"#,
        ),
        (
            "[health.interactive]\ntimeout = \"0s\"\n",
            r#"health.interactive.timeout = "0s" (line 11): must be longer than 0s"#,
        ),
        (
            "[health.interactive]\ntimeout = \"6s\"\n",
            r#"health.interactive.timeout = "6s" (line 11): must be at most the interval, 5s (default)"#,
        ),
        (
            "[health.gevent]\ntimeout = \"2s\"\ninterval = \"1s\"\n",
            r#"health.gevent.timeout = "2s" (line 11): must be at most the interval, 1s (health.gevent.interval)"#,
        ),
        (
            "[health.interactive]\ninterval = \"1s\"\n",
            r#"health.interactive.interval = "1s" (line 11): must be at least the timeout, 3s (default)"#,
        ),
        (
            "[health.interactive]\nstatus = 99\n",
            "health.interactive.status = 99 (line 11): must be 100 to 599",
        ),
        (
            "[health.gevent]\nstatus = 600\n",
            "health.gevent.status = 600 (line 11): must be 100 to 599",
        ),
        (
            "[health.interactive]\nrise = 0\n",
            "health.interactive.rise = 0 (line 11): must be 1 to 100",
        ),
        (
            "[health.interactive]\nfall = 101\n",
            "health.interactive.fall = 101 (line 11): must be 1 to 100",
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(
            only_problem(&format!("\n{extra}")),
            expected,
            "for {extra:?}"
        );
    }
}

#[test]
fn each_health_and_admission_rule_names_key_value_and_line() {
    let cases = [
        (
            "[health]\nwhen_all_down = \"fail\"\n",
            r#"health.when_all_down = "fail" (line 11): expected "open" or "closed""#,
        ),
        (
            "[health]\nretry_after = \"500ms\"\n",
            r#"health.retry_after = "500ms" (line 11): must be whole seconds: Retry-After is sent as a number of seconds"#,
        ),
        (
            "[health]\nretry_after = \"0s\"\n",
            r#"health.retry_after = "0s" (line 11): must be 1s to 1 day"#,
        ),
        (
            "[health]\nretry_after = \"25h\"\n",
            r#"health.retry_after = "1day 1h" (line 11): must be 1s to 1 day"#,
        ),
        (
            "[admission]\nqueue_length = -1\n",
            "admission.queue_length = -1 (line 11): must be 0 (no queue) to 1000000",
        ),
        (
            "[admission]\nqueue_length = 1000001\n",
            "admission.queue_length = 1000001 (line 11): must be 0 (no queue) to 1000000",
        ),
        (
            "[admission]\nqueue_timeout = \"0s\"\n",
            r#"admission.queue_timeout = "0s" (line 11): must be longer than 0s"#,
        ),
        (
            "[admission]\nqueue_timeout = \"8days\"\n",
            r#"admission.queue_timeout = "8days" (line 11): must be at most 7 days"#,
        ),
        (
            "[admission]\nretry_after = \"1500ms\"\n",
            r#"admission.retry_after = "1s 500ms" (line 11): must be whole seconds: Retry-After is sent as a number of seconds"#,
        ),
        (
            "[admission]\nretry_after = \"2days\"\n",
            r#"admission.retry_after = "2days" (line 11): must be 1s to 1 day"#,
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(
            only_problem(&format!("\n{extra}")),
            expected,
            "for {extra:?}"
        );
    }
}

#[test]
fn node_overrides_are_checked_and_the_merged_timeout_must_fit_the_interval() {
    let cases = [
        // The node's own value is blamed, with where the other one comes from.
        (
            "[nodes.health]\ntimeout = \"6s\"\n",
            r#"nodes[0].health.timeout = "6s" (line 10): must be at most the interval, 5s (default)"#,
        ),
        (
            "[nodes.health]\ninterval = \"2s\"\n\n[health.interactive]\ntimeout = \"4s\"\n",
            r#"nodes[0].health.interval = "2s" (line 10): must be at least the timeout, 4s (health.interactive.timeout)"#,
        ),
        (
            "[nodes.health]\ntimeout = \"8s\"\n\n[health.interactive]\ninterval = \"6s\"\n",
            r#"nodes[0].health.timeout = "8s" (line 10): must be at most the interval, 6s (health.interactive.interval)"#,
        ),
        (
            "health = { status = 0 }\n",
            "nodes[0].health.status = 0 (line 9): must be 100 to 599",
        ),
        (
            "health = { path = \"health\" }\n",
            r#"nodes[0].health.path = "health" (line 9): must start with '/', such as "/web/health""#,
        ),
        (
            "health = { rise = 0, fall = 3 }\n",
            "nodes[0].health.rise = 0 (line 9): must be 1 to 100",
        ),
        (
            "health = { interval = \"10ms\" }\n",
            r#"nodes[0].health.interval = "10ms" (line 9): must be 100ms to 1h"#,
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(only_problem(extra), expected, "for {extra:?}");
    }
    // A node that shortens the role's interval below the role's timeout
    // breaks the rule only on that node; the role itself is fine.
    let text = format!(
        "{BASE}[nodes.health]\ninterval = \"1s\"\n\n[health.interactive]\ninterval = \"1s\"\ntimeout = \"1s\"\n"
    );
    assert!(
        config::parse(&text).is_ok(),
        "interval 1s = timeout 1s is valid"
    );
}

#[test]
fn a_bad_role_table_is_reported_once_not_again_for_each_node() {
    let text =
        format!("{BASE}[nodes.health]\nrise = 3\n\n[health.interactive]\ntimeout = \"9s\"\n");
    assert_eq!(
        problems(&text),
        [
            r#"health.interactive.timeout = "9s" (line 13): must be at most the interval, 5s (default)"#
        ]
    );
}

#[test]
fn every_health_and_admission_problem_is_reported_at_once() {
    let text = format!(
        r#"{BASE}[nodes.health]
timeout = "0s"
status = 1000

[health]
when_all_down = "maybe"
retry_after = "100ms"

[health.gevent]
path = "websocket/health"
fall = 0

[admission]
queue_length = -5
retry_after = "0s"
"#
    );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            r#"nodes[0].health.timeout = "0s" (line 10): must be longer than 0s"#,
            "nodes[0].health.status = 1000 (line 11): must be 100 to 599",
            r#"health.when_all_down = "maybe" (line 14): expected "open" or "closed""#,
            r#"health.retry_after = "100ms" (line 15): must be whole seconds: Retry-After is sent as a number of seconds"#,
            r#"health.gevent.path = "websocket/health" (line 18): must start with '/', such as "/web/health""#,
            "health.gevent.fall = 0 (line 19): must be 1 to 100",
            "admission.queue_length = -5 (line 22): must be 0 (no queue) to 1000000",
            r#"admission.retry_after = "0s" (line 23): must be 1s to 1 day"#,
        ]
    );
}

#[test]
fn a_maintenance_page_must_be_an_existing_regular_file_of_at_most_1_mib() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.html");
    let large = dir.path().join("large.html");
    std::fs::write(&large, vec![b'x'; 1024 * 1024 + 1]).expect("write the large page");
    let exact = dir.path().join("exact.html");
    std::fs::write(&exact, vec![b'x'; 1024 * 1024]).expect("write the 1 MiB page");
    let page = |path: &Path| format!("\n[health]\nmaintenance_page = \"{}\"\n", path_str(path));

    assert_eq!(
        only_problem(&page(&missing)),
        format!(
            "health.maintenance_page = \"{}\" (line 11): cannot be read: No such file or directory (os error 2)",
            path_str(&missing)
        )
    );
    assert_eq!(
        only_problem(&page(dir.path())),
        format!(
            "health.maintenance_page = \"{}\" (line 11): not a regular file",
            path_str(dir.path())
        )
    );
    assert_eq!(
        only_problem(&page(&large)),
        format!(
            "health.maintenance_page = \"{}\" (line 11): 1048577 bytes: a maintenance page may have at most 1 MiB",
            path_str(&large)
        )
    );
    let config = config::parse(&format!("{BASE}{}", page(&exact))).expect("1 MiB is accepted");
    assert_eq!(
        config.health.maintenance_page.map(|p| p.len()),
        Some(1024 * 1024)
    );
}

#[test]
fn a_cron_node_with_a_health_table_is_refused() {
    let cron = "\n[[nodes]]\nname = \"cron\"\naddress = \"10.0.0.13:8069\"\nrole = \"cron\"\n";
    assert_eq!(
        only_problem(&format!("{cron}[nodes.health]\ninterval = \"10s\"\n")),
        "nodes[1].health (line 14): cron nodes have no HTTP port and are never probed"
    );
    assert_eq!(
        only_problem(&format!("{cron}health = {{ rise = 1 }}\n")),
        "nodes[1].health (line 14): cron nodes have no HTTP port and are never probed"
    );
}

#[test]
fn an_unknown_probe_key_names_the_key_and_its_line() {
    let message = syntax_error(&format!("{BASE}[nodes.health]\nintervall = \"10s\"\n"));
    assert!(message.contains("line 10"), "{message}");
    assert!(message.contains("intervall"), "{message}");
    let message = syntax_error(&format!("{BASE}\n[admission]\nqueue = 10\n"));
    assert!(message.contains("line 11"), "{message}");
    assert!(message.contains("queue"), "{message}");
}

#[test]
fn draining_every_interactive_node_is_a_warning() {
    let drained = config::parse(&format!("{BASE}drain = true\n")).expect("valid");
    assert!(drained.nodes[0].drain);
    assert!(
        drained
            .warnings
            .iter()
            .any(|w| w.starts_with("every interactive node has drain = true")),
        "{:?}",
        drained.warnings
    );
    let two = config::parse(&format!(
        "{BASE}drain = true\n\n[[nodes]]\nname = \"web2\"\naddress = \"10.0.0.12:8069\"\nrole = \"interactive\"\nworkers = 2\n"
    ))
    .expect("valid");
    assert!(
        !two.warnings.iter().any(|w| w.contains("drain")),
        "{:?}",
        two.warnings
    );
}

// === TLS listeners and redirects ===

/// A certificate and its key as PEM files in a temp dir.
struct Pair {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

/// Writes `<name>.pem` and `<name>.key` into `dir`: a self-signed
/// certificate for `names`, with its validity changed by `edit`.
fn write_pair(
    dir: &Path,
    name: &str,
    names: &[&str],
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> Pair {
    let key = rcgen::KeyPair::generate().expect("a P-256 key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("valid names");
    edit(&mut params);
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    let pair = Pair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pair.cert, cert.pem()).expect("the temp dir is writable");
    std::fs::write(&pair.key, key.serialize_pem()).expect("the temp dir is writable");
    pair
}

fn good_pair(dir: &Path, name: &str) -> Pair {
    write_pair(dir, name, &[&format!("{name}.example.com")], |_| {})
}

/// `{ cert = "...", key = "..." }`
fn entry(cert: &Path, key: &Path) -> String {
    format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        path_str(cert),
        path_str(key)
    )
}

/// `BASE` plus a TLS listener on 127.0.0.1:8443: `[[listeners]]` on line 10,
/// `[listeners.tls]` on line 12, `certificates = [` on line 13 with one
/// entry per line from line 14, then `]` and `extra`.
fn with_tls(entries: &[String], extra: &str) -> String {
    let mut text = format!(
        "{BASE}\n[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\ncertificates = [\n"
    );
    for e in entries {
        text.push_str(&format!("  {e},\n"));
    }
    text.push_str("]\n");
    text.push_str(extra);
    text
}

/// The TLS settings of the only TLS listener.
fn tls_of(config: &config::Config) -> &config::TlsConfig {
    let mut tls = config.listeners.iter().filter_map(|l| l.tls.as_ref());
    let first = tls.next().expect("a TLS listener");
    assert!(tls.next().is_none(), "one TLS listener");
    first
}

/// Sets a certificate to expire `days` after today's midnight (UTC).
fn expiring_in(days: u64) -> impl FnOnce(&mut rcgen::CertificateParams) {
    move |params| {
        let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let ymd: Vec<u32> = today[..10]
            .split('-')
            .map(|n| n.parse().expect("an RFC 3339 date"))
            .collect();
        params.not_after =
            rcgen::date_time_ymd(ymd[0] as i32, ymd[1] as u8, ymd[2] as u8) + secs(days * 86400);
    }
}

fn expired(params: &mut rcgen::CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
}

#[test]
fn a_tls_listener_gets_its_certificates_and_the_documented_defaults() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    let text = with_tls(&[entry(&erp.cert, &erp.key)], "");
    let config = config::parse(&text).expect("a valid config");
    let tls = tls_of(&config);
    assert_eq!(config.listeners[1].address.to_string(), "127.0.0.1:8443");
    assert!(config.listeners[0].tls.is_none());
    assert_eq!(
        tls.certificates,
        [config::CertificateFiles {
            cert: erp.cert.clone(),
            key: erp.key.clone(),
        }]
    );
    assert_eq!(tls.default_certificate, 0);
    assert_eq!(tls.unknown_sni, config::UnknownSni::Default);
    assert_eq!(tls.handshake_timeout, secs(10));
    assert_eq!(
        tls.hsts.as_ref().map(|h| h.to_str().expect("ASCII")),
        Some("max-age=31536000; includeSubDomains")
    );
    assert!(tls.http2);
    assert_eq!(
        tls.server.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert!(config.listeners.iter().all(|l| l.redirect.is_none()));
    assert!(
        !config.warnings.iter().any(|w| w.contains("tls")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn every_tls_key_is_read() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    let crm = good_pair(dir.path(), "crm");
    let text = with_tls(
        &[entry(&erp.cert, &erp.key), entry(&crm.cert, &crm.key)],
        "default_certificate = 1
unknown_sni = \"refuse\"
handshake_timeout = \"5s\"
\
         hsts = \"max-age=600\"
http2 = false
",
    );
    let config = config::parse(&text).expect("a valid config");
    let tls = tls_of(&config);
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.certificates[1].key, crm.key);
    assert_eq!(tls.default_certificate, 1);
    assert_eq!(tls.unknown_sni, config::UnknownSni::Refuse);
    assert_eq!(tls.handshake_timeout, secs(5));
    assert_eq!(
        tls.hsts.as_ref().map(|h| h.to_str().expect("ASCII")),
        Some("max-age=600")
    );
    assert!(!tls.http2);
    assert_eq!(tls.server.alpn_protocols, [b"http/1.1".to_vec()]);
    let off = config::parse(&with_tls(&[entry(&erp.cert, &erp.key)], "hsts = \"off\"\n"))
        .expect("a valid config");
    assert!(tls_of(&off).hsts.is_none());
}

#[test]
fn each_tls_rule_names_key_value_and_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    let one = [entry(&erp.cert, &erp.key)];
    // `extra` starts on line 16.
    for (extra, expected) in [
        (
            "default_certificate = 1\n",
            "listeners[1].tls.default_certificate = 1 (line 16): must be 0 to 0: an index \
             into certificates, which lists 1",
        ),
        (
            "default_certificate = -1\n",
            "listeners[1].tls.default_certificate = -1 (line 16): must be 0 to 0: an index \
             into certificates, which lists 1",
        ),
        (
            "unknown_sni = \"ignore\"\n",
            r#"listeners[1].tls.unknown_sni = "ignore" (line 16): expected "default" or "refuse""#,
        ),
        (
            "handshake_timeout = \"0s\"\n",
            r#"listeners[1].tls.handshake_timeout = "0s" (line 16): must be longer than 0s"#,
        ),
        (
            "handshake_timeout = \"61s\"\n",
            r#"listeners[1].tls.handshake_timeout = "1m 1s" (line 16): must be at most 60s: a handshake takes a few round trips"#,
        ),
        (
            "hsts = \"includeSubDomains\"\n",
            r#"listeners[1].tls.hsts = "includeSubDomains" (line 16): must contain max-age=<seconds> (browsers ignore it otherwise), or be "off""#,
        ),
        (
            "hsts = \"max-age=1\\u0001\"\n",
            r#"listeners[1].tls.hsts = "max-age=1\u0001" (line 16): not a valid header value"#,
        ),
    ] {
        let found = problems(&with_tls(&one, extra));
        assert_eq!(found, [expected], "for {extra:?}");
    }
    assert_eq!(
        problems(&with_tls(&[], "")),
        [
            "listeners[1].tls.certificates = [] (line 13): at least one { cert = \"...\", \
          key = \"...\" } is needed"
        ]
    );
}

#[test]
fn every_certificate_problem_is_named_by_entry_and_file_with_its_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    let crm = good_pair(dir.path(), "crm");
    let old = write_pair(dir.path(), "old", &["old.example.com"], expired);
    let missing = dir.path().join("missing.pem");
    let text = with_tls(
        &[
            entry(&missing, &erp.key),
            entry(&erp.cert, &crm.key),
            entry(&erp.key, &erp.key),
            entry(&old.cert, &old.key),
            entry(&erp.cert, &erp.cert),
        ],
        "",
    );
    let q = |p: &Path| format!("{:?}", path_str(p));
    assert_eq!(
        problems(&text),
        [
            format!(
                "listeners[1].tls.certificates[0].cert = {} (line 14): cannot be read: \
                 No such file or directory (os error 2)",
                q(&missing)
            ),
            format!(
                "listeners[1].tls.certificates[1].key = {} (line 15): does not match the \
                 certificate in {}",
                q(&crm.key),
                path_str(&erp.cert)
            ),
            format!(
                "listeners[1].tls.certificates[2].cert = {} (line 16): no certificate in the \
                 file (expected a PEM \"BEGIN CERTIFICATE\" block)",
                q(&erp.key)
            ),
            format!(
                "listeners[1].tls.certificates[3].cert = {} (line 17): expired on \
                 2020-01-01T00:00:00Z",
                q(&old.cert)
            ),
            format!(
                "listeners[1].tls.certificates[4].key = {} (line 18): no private key in the \
                 file (expected a PEM block labelled \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \
                 \"EC PRIVATE KEY\")",
                q(&erp.cert)
            ),
        ]
    );
}

#[test]
fn a_certificate_expiring_within_two_weeks_is_a_warning() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let soon = write_pair(dir.path(), "soon", &["soon.example.com"], expiring_in(6));
    let config = config::parse(&with_tls(&[entry(&soon.cert, &soon.key)], ""))
        .expect("expiring soon is still valid");
    let prefix = format!("listeners[1].tls: {}: expires in ", path_str(&soon.cert));
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.starts_with(&prefix) && w.ends_with(": renew it")),
        "{:?}",
        config.warnings
    );
    let later = write_pair(dir.path(), "later", &["later.example.com"], expiring_in(30));
    let config =
        config::parse(&with_tls(&[entry(&later.cert, &later.key)], "")).expect("a valid config");
    assert!(
        !config.warnings.iter().any(|w| w.contains("expires")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn check_refuses_an_expired_certificate_and_exits_1() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let old = write_pair(dir.path(), "old", &["old.example.com"], expired);
    let file = config_file(&with_tls(&[entry(&old.cert, &old.key)], ""));
    let output = odoo_edge(&["check", "-c", path_str(file.path())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let expected = format!(
        "  listeners[1].tls.certificates[0].cert = {:?} (line 14): expired on 2020-01-01T00:00:00Z",
        path_str(&old.cert)
    );
    assert!(stderr.lines().any(|l| l == expected), "{stderr}");
}

/// `BASE` plus a plain listener on 127.0.0.1:8081 whose `[[listeners]]` is on
/// line 10, with `extra` from line 12.
fn with_redirect(extra: &str) -> String {
    format!("{BASE}\n[[listeners]]\naddress = \"127.0.0.1:8081\"\n{extra}")
}

#[test]
fn a_redirect_listener_gets_its_settings() {
    let config = config::parse(&with_redirect(
        "redirect_to_https = true\nredirect_status = 308\nhttps_port = 8443\n\
         redirect_except = [\"/.well-known/acme-challenge/\", \"/web/health\"]\n",
    ))
    .expect("a valid config");
    let redirect = config.listeners[1].redirect.as_ref().expect("a redirect");
    assert_eq!(redirect.status, http::StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.https_port, Some(8443));
    assert_eq!(
        redirect.except,
        ["/.well-known/acme-challenge/", "/web/health"]
    );
    assert!(config.listeners[1].tls.is_none());
    assert!(config.listeners[0].redirect.is_none());
    let defaults = config::parse(&with_redirect(
        "redirect_to_https = true\nhttps_port = 443\n",
    ))
    .expect("a valid config");
    let redirect = defaults.listeners[1].redirect.as_ref().expect("a redirect");
    assert_eq!(redirect.status, http::StatusCode::MOVED_PERMANENTLY);
    assert_eq!(redirect.https_port, None, "443 is left out of Location");
    assert!(redirect.except.is_empty());
    let off = config::parse(&with_redirect("redirect_to_https = false\n")).expect("valid");
    assert!(off.listeners[1].redirect.is_none());
}

#[test]
fn a_redirect_to_a_port_no_tls_listener_has_is_a_warning() {
    let config = config::parse(&with_redirect("redirect_to_https = true\n")).expect("valid");
    assert!(
        config.warnings.iter().any(|w| w
            == "listener 127.0.0.1:8081 redirects to HTTPS on port 443, but no listener here \
                with [listeners.tls] has that port"),
        "{:?}",
        config.warnings
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    // The TLS listener is on 8443: no warning once https_port says so.
    let text = with_tls(
        &[entry(&erp.cert, &erp.key)],
        "\n[[listeners]]\naddress = \"127.0.0.1:8081\"\nredirect_to_https = true\nhttps_port = 8443\n",
    );
    let config = config::parse(&text).expect("valid");
    assert!(
        !config.warnings.iter().any(|w| w.contains("redirects")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn each_redirect_rule_names_key_value_and_line() {
    for (extra, expected) in [
        (
            "redirect_status = 308\n",
            "listeners[1].redirect_status = 308 (line 12): only with redirect_to_https = true",
        ),
        (
            "redirect_to_https = false\nhttps_port = 8443\n",
            "listeners[1].https_port = 8443 (line 13): only with redirect_to_https = true",
        ),
        (
            "redirect_except = [\"/.well-known/\"]\n",
            r#"listeners[1].redirect_except = ["/.well-known/"] (line 12): only with redirect_to_https = true"#,
        ),
        (
            "redirect_to_https = true\nredirect_status = 302\n",
            "listeners[1].redirect_status = 302 (line 13): expected 301 or 308 (which keeps \
             the method and body of a POST)",
        ),
        (
            "redirect_to_https = true\nhttps_port = 0\n",
            "listeners[1].https_port = 0 (line 13): must be 1 to 65535",
        ),
        (
            "redirect_to_https = true\nhttps_port = 65536\n",
            "listeners[1].https_port = 65536 (line 13): must be 1 to 65535",
        ),
        (
            "redirect_to_https = true\nredirect_except = [\"/ok/\", \".well-known/\"]\n",
            r#"listeners[1].redirect_except[1] = ".well-known/" (line 13): must start with '/', such as "/.well-known/acme-challenge/""#,
        ),
        (
            "redirect_to_https = true\nredirect_except = [\"/a?b\"]\n",
            r#"listeners[1].redirect_except[0] = "/a?b" (line 13): not a valid path (no spaces, '?' or '#')"#,
        ),
    ] {
        assert_eq!(problems(&with_redirect(extra)), [expected], "for {extra:?}");
    }
}

#[test]
fn a_redirect_on_a_tls_listener_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    // Keys of [[listeners]] must come before its [listeners.tls] table.
    let text = format!(
        "{BASE}\n[[listeners]]\naddress = \"127.0.0.1:8443\"\nredirect_to_https = true\n\
         [listeners.tls]\ncertificates = [{}]\n",
        entry(&erp.cert, &erp.key)
    );
    assert_eq!(
        problems(&text),
        [
            "listeners[1].redirect_to_https = true (line 12): not on a listener with \
          [listeners.tls], which serves HTTPS already: redirect from a plain listener"
        ]
    );
}

#[test]
fn an_unknown_tls_key_names_the_key_and_its_line() {
    let message = syntax_error(&with_tls(&[], "ciphers = \"HIGH\"\n"));
    assert!(message.contains("line 15"), "{message}");
    assert!(message.contains("ciphers"), "{message}");
}

/// The example's listener section with every commented-out key line
/// uncommented: the documented HTTPS and redirect listeners.
fn example_with_listeners_uncommented() -> String {
    let start = EXAMPLE
        .find("# --- Listeners")
        .expect("a listeners section");
    let end = start + EXAMPLE[start + 1..].find("# ---").expect("a next section") + 1;
    let mut out = EXAMPLE[..start].to_owned();
    for line in EXAMPLE[start..end].lines() {
        let code = line.strip_prefix("# ").filter(|rest| {
            let t = rest.trim_start();
            t.starts_with(['[', ']', '{'])
                || t.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
        });
        out.push_str(code.unwrap_or(line));
        out.push('\n');
    }
    out.push_str(&EXAMPLE[end..]);
    out
}

#[test]
fn the_example_tls_and_redirect_listeners_parse_once_uncommented() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = write_pair(dir.path(), "erp", &["erp.example.com"], |_| {});
    let other = write_pair(dir.path(), "other", &["other.example.com"], |_| {});
    let mut text = example_with_listeners_uncommented();
    for (example, real) in [
        ("/etc/odoo-edge/erp.example.com.pem", &erp.cert),
        ("/etc/odoo-edge/erp.example.com.key", &erp.key),
        ("/etc/odoo-edge/other.example.com.pem", &other.cert),
        ("/etc/odoo-edge/other.example.com.key", &other.key),
    ] {
        assert!(text.contains(example), "the example names {example}");
        text = text.replace(example, path_str(real));
    }
    let config = config::parse(&text).expect("the uncommented example must be valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let addresses: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    assert_eq!(addresses, ["0.0.0.0:8080", "0.0.0.0:443", "0.0.0.0:80"]);
    let tls = config.listeners[1]
        .tls
        .as_ref()
        .expect("the HTTPS listener");
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.certificates[1].cert, other.cert);
    // Every value the example shows is the default.
    let minimal = config::parse(&with_tls(&[entry(&erp.cert, &erp.key)], "")).expect("valid");
    let default = tls_of(&minimal);
    assert_eq!(tls.default_certificate, default.default_certificate);
    assert_eq!(tls.unknown_sni, default.unknown_sni);
    assert_eq!(tls.handshake_timeout, default.handshake_timeout);
    assert_eq!(tls.hsts, default.hsts);
    assert_eq!(tls.http2, default.http2);
    let redirect = config.listeners[2]
        .redirect
        .as_ref()
        .expect("the redirect listener");
    assert_eq!(redirect.status, http::StatusCode::MOVED_PERMANENTLY);
    assert_eq!(redirect.https_port, None);
    assert_eq!(redirect.except, ["/.well-known/acme-challenge/"]);
}

#[test]
fn tls_key_and_file_problems_are_reported_together() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let erp = good_pair(dir.path(), "erp");
    let missing = dir.path().join("missing.key");
    let text = with_tls(
        &[entry(&erp.cert, &missing)],
        "unknown_sni = \"ignore\"\nhandshake_timeout = \"0s\"\n",
    );
    assert_eq!(
        problems(&text),
        [
            format!(
                "listeners[1].tls.certificates[0].key = {:?} (line 14): cannot be read: \
                 No such file or directory (os error 2)",
                path_str(&missing)
            ),
            r#"listeners[1].tls.unknown_sni = "ignore" (line 16): expected "default" or "refuse""#
                .to_owned(),
            r#"listeners[1].tls.handshake_timeout = "0s" (line 17): must be longer than 0s"#
                .to_owned(),
        ]
    );
}

/// docker/compose.yaml's edge config is valid once its volume paths exist,
/// and every node it declares is a service of the compose file.
#[test]
fn the_compose_config_is_valid_and_names_the_compose_services() {
    let text = include_str!("../docker/odoo-edge.compose.toml");
    let compose = include_str!("../docker/compose.yaml");
    let addons = tempfile::tempdir().expect("addons dir");
    let filestore = tempfile::tempdir().expect("filestore dir");
    let text = text
        .replace("/opt/odoo/addons", addons.path().to_str().expect("utf-8"))
        .replace(
            "/var/lib/odoo/filestore",
            filestore.path().to_str().expect("utf-8"),
        );
    let config = odoo_edge::config::parse(&text).expect("the compose config is valid");
    assert!(
        config.admin.is_some(),
        "the image's HEALTHCHECK needs the admin API"
    );
    assert_eq!(config.nodes.len(), 4);
    for node in &config.nodes {
        let host = node.address.split(':').next().expect("host");
        assert!(
            compose.contains(&format!("\n  {host}:\n")),
            "node {} points at {host}, which is no service in compose.yaml",
            node.name
        );
    }
    let dockerfile = include_str!("../docker/Dockerfile");
    assert!(dockerfile.contains("\"health\", \"--admin\", \"127.0.0.1:9901\""));
}
