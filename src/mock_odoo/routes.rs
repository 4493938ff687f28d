//! What the mock answers to one parsed request: health, websocket, static files, filestore
//! attachments, control, echo, and the `mock_*` knobs that make it slow or broken.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{debug, error, warn};

use super::http::{BodyDigest, Conn, Framing, Head, MAX_BODY, ReadError, Reply, ReplyBody};
use super::stats::Fail;
use super::{Mode, Node, Role, filestore, static_files, websocket};

/// Odoo's session cookie lifetime (`SESSION_LIFETIME`, 7 days).
const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

const GARBAGE: &[u8] = b"this is not http\r\n\r\n";

/// How the connection goes on after a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// Serves one request whose head has been read.
pub(crate) async fn serve(node: &Node, conn: &mut Conn, head: Head) -> Next {
    let control = head.path().starts_with("/__mock/");
    let gauge = (!control).then(|| {
        node.stats.count_request(head.header("x-mock-request-id"));
        node.stats.begin_request()
    });
    debug!(method = %head.method, target = %head.target, "request");

    let body = match read_body(node, conn, &head).await {
        Ok(body) => body,
        Err(reply) => {
            if let Some(reply) = reply {
                let _ = conn
                    .write_reply(&node.cfg.name, version(node), reply, true, false)
                    .await;
            }
            return Next::Close;
        }
    };
    if control {
        let reply = control_reply(node, &head);
        return finish(node, conn, &head, reply).await;
    }

    let delay = node
        .cfg
        .latency
        .saturating_add(millis(head.query_param("mock_sleep")));
    if let Some(limit) = node.cfg.limit_time_real.filter(|limit| delay > *limit) {
        tokio::time::sleep(limit).await;
        warn!(limit = ?limit, "request timeout after limit_time_real, closing without reply");
        return Next::Close;
    }
    tokio::time::sleep(delay).await;

    let fail = match head.query_param("mock_fail") {
        Some("none") => None,
        Some(mode) => mode.parse().ok().or(node.stats.fail()),
        None => node.stats.fail(),
    };
    if let Some(fail) = fail {
        inject(conn, fail).await;
        return Next::Close;
    }

    let path = head.path();
    let reply = if path == "/websocket" {
        match websocket::handshake(&head) {
            Err(reply) => reply,
            // Odoo checks the handshake first, then looks for the raw socket that prefork
            // HTTP workers never expose.
            Ok(_) if node.cfg.role == Role::Interactive && is_prefork(node) => {
                error!(
                    "exception during request handling: couldn't bind the websocket, \
                     is the connection opened on the evented port?"
                );
                Reply::werkzeug_error(
                    500,
                    "The server encountered an internal error and was unable to complete \
                     your request. Either the server is overloaded or there is an error in \
                     the application.",
                )
            }
            Ok(switching) => {
                if conn.stream.write_all(switching.as_bytes()).await.is_err() {
                    return Next::Close;
                }
                // The upgrade request is over; the session is counted in websockets_open.
                drop(gauge);
                drop(head);
                let leftover = conn.buf.split().to_vec();
                conn.buf = bytes::BytesMut::new();
                websocket::echo(node, &mut conn.stream, leftover).await;
                return Next::Close;
            }
        }
    } else if path == "/web/health" || path == "/websocket/health" {
        health(node, &head)
    } else if let Some(reply) = static_files::serve(node, &head)
        .or_else(|| filestore::misrouted(node, &head))
        .or_else(|| filestore::content(node, &head))
    {
        with_cookie_knob(reply, &head)
    } else {
        echo(node, conn, &head, &body)
    };
    finish(node, conn, &head, reply).await
}

/// Reads the body; `Err` carries the reply to send before closing, if any.
async fn read_body(node: &Node, conn: &mut Conn, head: &Head) -> Result<BodyDigest, Option<Reply>> {
    let too_large = || {
        Reply::werkzeug_error(
            413,
            "The data value transmitted exceeds the capacity limit.",
        )
    };
    let framing = head.framing().map_err(|err| Some(bad_request(&err)))?;
    if let Framing::Length(n) = framing
        && n > MAX_BODY
    {
        // Refused from the head alone, as werkzeug does; the body is never read.
        return Err(Some(too_large()));
    }
    conn.read_body(framing).await.map_err(|err| match err {
        ReadError::TooLarge => Some(too_large()),
        ReadError::Malformed(_) => Some(bad_request(&err)),
        ReadError::Timeout => {
            node.stats.count_read_timeout();
            debug!("read timeout in request body, closing");
            None
        }
        ReadError::Closed | ReadError::Io(_) => None,
    })
}

/// The 400 werkzeug sends for a request it cannot parse.
pub(crate) fn bad_request(err: &ReadError) -> Reply {
    debug!(cause = %err, "bad request");
    Reply::werkzeug_error(
        400,
        "The browser (or proxy) sent a request that this server could not understand.",
    )
}

/// Writes the reply and decides whether the connection is reused.
async fn finish(node: &Node, conn: &mut Conn, head: &Head, reply: Reply) -> Next {
    let close =
        is_prefork(node) || head.minor_version == 0 || head.has_token("connection", "close");
    let head_only = head.method == "HEAD";
    match conn
        .write_reply(&node.cfg.name, version(node), reply, close, head_only)
        .await
    {
        Ok(()) if !close => Next::KeepAlive,
        Ok(()) => Next::Close,
        Err(err) => {
            debug!(cause = %err, "write failed");
            Next::Close
        }
    }
}

/// The status-line version: werkzeug's non-threaded server answers HTTP/1.0.
pub(crate) fn version(node: &Node) -> &'static str {
    if is_prefork(node) {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

fn is_prefork(node: &Node) -> bool {
    matches!(node.cfg.mode, Mode::Prefork { .. })
}

fn millis(value: Option<&str>) -> Duration {
    Duration::from_millis(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Misbehaves instead of replying; the caller then drops the connection.
async fn inject(conn: &mut Conn, fail: Fail) {
    debug!(fail = %fail, "injecting failure");
    match fail {
        Fail::Garbage => {
            let _ = conn.stream.write_all(GARBAGE).await;
            let _ = conn.stream.shutdown().await;
        }
        Fail::Reset => {
            // Closing with SO_LINGER 0 sends RST instead of FIN.
            if let Err(err) = conn.stream.set_zero_linger() {
                warn!(cause = %err, "failed to set SO_LINGER 0");
            }
        }
        Fail::Close => {}
        Fail::Hang => std::future::pending::<()>().await,
    }
}

/// `/web/health` and `/websocket/health`, with Odoo's exact JSON texts.
fn health(node: &Node, head: &Head) -> Reply {
    let reply = match head.query_param("db_server_status") {
        None => Reply::json(200, r#"{"status": "pass"}"#),
        Some(_) if node.cfg.db_up => {
            Reply::json(200, r#"{"status": "pass", "db_server_status": true}"#)
        }
        Some(_) => Reply::json(500, r#"{"status": "fail", "db_server_status": false}"#),
    };
    reply.with_header("Cache-Control", "no-store")
}

/// The JSON echo of any other request, honouring `mock_status`, `mock_size`, `mock_cookie`.
fn echo(node: &Node, conn: &Conn, head: &Head, body: &BodyDigest) -> Reply {
    let status = head
        .query_param("mock_status")
        .and_then(|s| s.parse().ok())
        .filter(|s| (200..=599).contains(s))
        .unwrap_or(200);
    let mut reply = match head.query_param("mock_size").and_then(|s| s.parse().ok()) {
        Some(size) => Reply {
            status,
            headers: vec![("Content-Type", "application/octet-stream".to_owned())],
            body: ReplyBody::Pattern(size),
        },
        None => {
            let headers: Vec<[&str; 2]> = head
                .headers
                .iter()
                .map(|(n, v)| [n.as_str(), v.as_str()])
                .collect();
            let json = serde_json::json!({
                "node": node.cfg.name,
                "role": node.cfg.role.as_str(),
                "method": head.method,
                "path": head.path(),
                "query": head.query(),
                "http_version": head.version(),
                "headers": headers,
                "body_len": body.len,
                "body_sha256": hex::encode(body.sha256),
                "odoo": odoo_view(head, conn),
            });
            Reply::json(status, json.to_string())
        }
    };
    if head.path() == "/web/login" || head.query_param("mock_cookie") == Some("1") {
        reply = reply.with_header("Set-Cookie", session_cookie());
    }
    reply
}

/// `mock_cookie=1`: the reply sets a fresh `session_id`, as Odoo does when it rotates or
/// saves a dirty session.
fn with_cookie_knob(reply: Reply, head: &Head) -> Reply {
    if head.query_param("mock_cookie") == Some("1") {
        reply.with_header("Set-Cookie", session_cookie())
    } else {
        reply
    }
}

/// What Odoo with `proxy_mode = True` sees: werkzeug's ProxyFix (one hop trusted) runs only
/// when `X-Forwarded-Host` is present, and takes the rightmost value of each header.
fn odoo_view(head: &Head, conn: &Conn) -> serde_json::Value {
    let rightmost = |name: &str| {
        head.header_joined(name).and_then(|v| {
            v.split(',')
                .map(str::trim)
                .rfind(|s| !s.is_empty())
                .map(str::to_owned)
        })
    };
    let mut remote_addr = conn.peer.ip().to_string();
    let mut scheme = "http".to_owned();
    let mut host = head.header_joined("host");
    if let Some(forwarded_host) = rightmost("x-forwarded-host") {
        remote_addr = rightmost("x-forwarded-for").unwrap_or(remote_addr);
        scheme = rightmost("x-forwarded-proto").unwrap_or(scheme);
        host = Some(forwarded_host);
    }
    serde_json::json!({ "remote_addr": remote_addr, "scheme": scheme, "host": host })
}

/// Odoo's cookie: no `Secure`, no `SameSite` (the proxy is expected to add them).
fn session_cookie() -> String {
    let expires = super::http::http_date(SystemTime::now() + SESSION_LIFETIME);
    format!(
        "session_id={}; Expires={expires}; Max-Age={}; HttpOnly; Path=/",
        session_id(),
        SESSION_LIFETIME.as_secs()
    )
}

/// 40 random hex digits, from std's per-process random hash keys plus a counter and the clock.
fn session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = Sha256::new()
        .chain_update(seed.to_le_bytes())
        .chain_update(nanos.to_le_bytes())
        .finalize();
    hex::encode(&digest[..20])
}

/// `/__mock/stats` and `/__mock/fail?mode=...`; never delayed, counted or failed.
fn control_reply(node: &Node, head: &Head) -> Reply {
    match head.path() {
        "/__mock/stats" => Reply::json(200, node.stats.to_json().to_string()),
        "/__mock/fail" => {
            let parsed = match head.query_param("mode") {
                Some("none") => Ok(None),
                Some(mode) => mode.parse::<Fail>().map(Some).map_err(|e| e.to_string()),
                None => Err("missing mode parameter".to_owned()),
            };
            match parsed {
                Ok(fail) => {
                    node.stats.set_fail(fail);
                    let body = serde_json::json!({ "fail": fail.map(Fail::as_str) });
                    Reply::json(200, body.to_string())
                }
                Err(error) => Reply::json(400, serde_json::json!({ "error": error }).to_string()),
            }
        }
        _ => Reply::json(404, r#"{"error": "unknown control endpoint"}"#),
    }
}
