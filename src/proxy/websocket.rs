//! Websocket upgrades: the handshake is relayed to a node of the bus pool over
//! HTTP/1.1 with Upgrade, Connection, Origin and every Sec-WebSocket-* header
//! intact (Odoo's handshake checks all of them), the node's 101 is relayed,
//! and the two sockets are then spliced ([`super::tunnel`]). When the edge
//! stops, the tunnel closes the websocket with 1001 (Going Away) both ways.
//!
//! A non-101 answer (Odoo's 400, 426 or 500) is relayed as an ordinary reply.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{ClientInfo, Edge, ReplyBody, error_chain, error_response, headers, tunnel};
use crate::error::ProxyError;
use crate::health;
use crate::pool::{Lease, Node, Refusal};
use crate::router::Route;

/// Longest wait for a node's answer to a websocket handshake.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A websocket upgrade request: a GET with `Upgrade: websocket` and `Connection: upgrade`.
/// Other upgrades (h2c) are not tunnelled; they are forwarded as plain requests
/// with the Upgrade header removed.
pub fn is_upgrade(method: &http::Method, headers: &HeaderMap) -> bool {
    if method != http::Method::GET {
        return false;
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Relays the handshake and, on 101, spawns the tunnel.
pub async fn tunnel(
    edge: &Edge,
    mut req: Request<Incoming>,
    client: &ClientInfo,
    route: Route,
    outcome: &mut super::Outcome,
) -> Response<ReplyBody> {
    let on_client = hyper::upgrade::on(&mut req);
    let (mut parts, _no_body) = req.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    let scheme = headers::to_upstream(&mut parts.headers, client, &edge.forwarding);
    // A handshake has no body, whatever the client declared.
    parts.headers.remove(header::CONTENT_LENGTH);
    // Hop-by-hop removal took the upgrade pair; a tunnel needs it back.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(upgrade) = upgrade {
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    let target = super::origin_form(&parts.uri);

    let pool = edge.topology.pool(route);
    outcome.pool = pool.name;
    let mut tried: Vec<usize> = Vec::new();
    let mut last: Option<ProxyError> = None;
    loop {
        // Bounded: each turn tries a node not tried before. The lease is held
        // until the node answers the handshake; a tunnel holds no worker.
        let lease = match pool.acquire(&tried).await {
            Ok(lease) => lease,
            Err(refusal) => {
                let err = match (refusal, last) {
                    (Refusal::Exhausted, Some(last)) => last,
                    (refusal, _) => super::refused(pool, refusal),
                };
                warn!(cause = %err, "websocket not opened");
                return edge.error_response(&err);
            }
        };
        tried.push(lease.index());
        let node = lease.node().clone();
        outcome.attempt(&node, tried.len());
        let stream = match connect(&node, edge).await {
            Ok(stream) => stream,
            Err(e) => {
                health::passive_failure(&node, &e);
                warn!(node = %node.name, cause = %e, "websocket: node unreachable; trying the next one");
                last = Some(ProxyError::NoUpstream {
                    pool: pool.name,
                    last: format!("{}: {e}", node.name),
                });
                continue;
            }
        };
        let response = match handshake(stream, &parts.headers, &target, edge).await {
            Ok(response) => response,
            Err(detail) => {
                health::passive_failure(&node, &detail);
                let err = ProxyError::BadGateway {
                    node: node.name.clone(),
                    detail,
                };
                warn!(cause = %err, "websocket handshake failed");
                return error_response(err.status());
            }
        };
        node.record_answer();
        return relay(edge, response, on_client, scheme, lease).await;
    }
}

async fn connect(node: &Node, edge: &Edge) -> Result<TcpStream, String> {
    let stream = node
        .endpoint
        .connect(edge.timeouts.upstream_connect)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Websocket frames are small and interactive: no Nagle delay.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn handshake(
    stream: TcpStream,
    headers: &HeaderMap,
    target: &http::Uri,
    edge: &Edge,
) -> Result<Response<Incoming>, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(cause = %e, "websocket upstream connection ended");
        }
    });
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = target.clone();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers.clone();
    // A handshake is answered at once by a live gevent process; a node that
    // accepts and then says nothing must not hold the client for 20 minutes.
    let limit = edge.timeouts.upstream_response.min(HANDSHAKE_LIMIT);
    match tokio::time::timeout(limit, sender.send_request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("no handshake reply within {limit:?}")),
    }
}

async fn relay(
    edge: &Edge,
    mut response: Response<Incoming>,
    on_client: hyper::upgrade::OnUpgrade,
    scheme: headers::Scheme,
    lease: Lease,
) -> Response<ReplyBody> {
    let node = lease.node().clone();
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        debug!(
            node = %node.name,
            status = response.status().as_u16(),
            "websocket refused by the node"
        );
        let method = http::Method::GET;
        let no_conditions = HeaderMap::new();
        let request = (&method, &no_conditions);
        return match super::response_filter(edge, response, scheme, lease, request).await {
            Ok(response) => response,
            Err(err) => {
                warn!(cause = %err, "websocket refusal not relayed");
                error_response(err.status())
            }
        };
    }
    let on_upstream = hyper::upgrade::on(&mut response);
    let (parts, _) = response.into_parts();
    let mut out = Response::new(ReplyBody::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = parts.headers;
    if scheme == headers::Scheme::Https {
        headers::secure_session_cookie(out.headers_mut(), &edge.cookies);
    }
    drop(lease);
    let idle = edge.timeouts.websocket_idle;
    let node = node.name.clone();
    let graceful = edge.lifecycle.graceful.clone();
    let hard = edge.lifecycle.hard.clone();
    let shared = edge.shared.clone();
    edge.lifecycle.tasks.spawn(async move {
        let (client, upstream) = match tokio::try_join!(on_client, on_upstream) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(%node, cause = %e, "websocket upgrade did not complete");
                return;
            }
        };
        debug!(%node, "websocket open");
        let _open = shared.metrics.websocket_opened(&node);
        tunnel::splice(client, upstream, idle, graceful, hard).await;
        debug!(%node, "websocket closed");
    });
    out
}
