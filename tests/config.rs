//! The configuration file: the shipped example, the exact wording of every
//! problem (key, value, line, reason), and `odoo-edge check`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use odoo_edge::config::{self, ConfigError, Role};

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

/// A temp file holding `text`, removed when dropped.
fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a temp file");
    file.write_all(text.as_bytes())
        .expect("write the temp file");
    file
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[test]
fn check_accepts_the_example_and_summarises_it() {
    let file = temp_config(EXAMPLE);
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
    let file = temp_config(&text);
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
    let file = temp_config(BASE);
    let output = odoo_edge(&["check", "-c", path_str(file.path())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("warning: no gevent node"), "{stderr}");
}

#[test]
fn check_reports_a_syntax_error_with_its_line_and_exits_1() {
    let file = temp_config(&BASE.replace("address = \"10.0.0.11:8069\"", "adress = \"x\""));
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
    let file = temp_config(&BASE.replace("127.0.0.1:8080", &addr.to_string()));
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
