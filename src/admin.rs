//! The admin listener: liveness, readiness, the topology as the edge sees it,
//! and node drain, on its own address (`[admin] address`, loopback unless
//! `allow_remote = true`).
//!
//! * `GET /healthz`: 200 while the edge runs.
//! * `GET /readyz`: 200 when at least one interactive node is up and not
//!   draining, else 503 (a load balancer in front of several edges skips
//!   this one).
//! * `GET /metrics`: Prometheus metrics, OpenMetrics text ([`crate::metrics`]).
//! * `GET /status`: every node with role, address, health, drain, workers and
//!   requests in flight; the queue length; JSON.
//! * `POST /nodes/<name>/drain` and `DELETE /nodes/<name>/drain`: drain a
//!   node or put it back, as `drain = true` and a reload would (a reload
//!   applies the file's value again).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::config::Role;
use crate::pool::{Node, Topology};
use crate::proxy::{Current, Edge};

/// Serves the admin API until the graceful stop.
pub async fn serve(listener: TcpListener, current: Current) {
    let lifecycle = current.load().lifecycle.clone();
    let stop = lifecycle.graceful.clone();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(cause = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let current = current.clone();
        let stop = stop.clone();
        lifecycle.tasks.spawn(async move {
            let service = service_fn(move |req| {
                let edge = current.load_full();
                async move { Ok::<_, Infallible>(answer(&edge, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The reply to one admin request.
pub fn answer(edge: &Edge, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let topology = &edge.topology;
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let ready = topology
                .interactive
                .nodes
                .iter()
                .any(|n| n.is_up() && !n.is_draining());
            if ready {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no interactive node is up and in service\n",
                )
            }
        }
        (&Method::GET | &Method::HEAD, "/status") => json(StatusCode::OK, &status(topology)),
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut response =
                Response::new(Full::new(Bytes::from(edge.shared.metrics.render(topology))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (_, "/healthz" | "/readyz" | "/status" | "/metrics") => not_allowed("GET, HEAD"),
        _ => match path
            .strip_prefix("/nodes/")
            .and_then(|rest| rest.strip_suffix("/drain"))
        {
            Some(name) => drain(topology, method, name),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

fn drain(topology: &Topology, method: &Method, name: &str) -> Response<Full<Bytes>> {
    let drain = match *method {
        Method::POST => true,
        Method::DELETE => false,
        _ => return not_allowed("POST, DELETE"),
    };
    let Some(node) = topology.nodes().into_iter().find(|n| n.name == name) else {
        return text(StatusCode::NOT_FOUND, "no such node\n");
    };
    if node.role == Role::Cron {
        return text(
            StatusCode::CONFLICT,
            "cron nodes get no traffic: nothing to drain\n",
        );
    }
    if node.set_draining(drain) {
        info!(node = %node.name, drain, "drain changed through the admin API");
        node.refresh_pools();
    }
    json(StatusCode::OK, &node_status(topology, &node))
}

#[derive(Serialize)]
struct Status {
    nodes: Vec<NodeStatus>,
    /// Requests waiting for a worker of an interactive node.
    queued: usize,
}

#[derive(Serialize)]
struct NodeStatus {
    name: String,
    role: &'static str,
    address: String,
    /// `up`, `down`, or `unchecked` (cron nodes are never probed).
    health: &'static str,
    draining: bool,
    workers: u32,
    in_flight: u32,
}

fn status(topology: &Topology) -> Status {
    Status {
        nodes: topology
            .nodes()
            .iter()
            .map(|n| node_status(topology, n))
            .collect(),
        queued: topology.interactive.queued(),
    }
}

fn node_status(topology: &Topology, node: &Arc<Node>) -> NodeStatus {
    let in_flight = topology
        .pools_of(node)
        .map(|pool| {
            let index = pool.nodes.iter().position(|n| Arc::ptr_eq(n, node));
            index.map_or(0, |i| pool.in_flight()[i])
        })
        .sum();
    NodeStatus {
        name: node.name.clone(),
        role: node.role.as_str(),
        address: node.address.clone(),
        health: match (node.role, node.is_up()) {
            (Role::Cron, _) => "unchecked",
            (_, true) => "up",
            (_, false) => "down",
        },
        draining: node.is_draining(),
        workers: node.workers(),
        in_flight,
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}
