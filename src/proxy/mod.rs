//! One request through the edge, as named phases called in order:
//!
//! 1. `request_filter`: route by path; a websocket upgrade leaves for
//!    [`websocket::tunnel`]; a declared body above the cap is refused (413).
//! 2. `read_body`: the whole request body, memory then spool ([`body`]).
//! 3. `upstream_request_filter`: X-Forwarded-*, hop-by-hop removal ([`headers`]).
//! 4. `upstream_peer` + send: a worker from the route's pool
//!    ([`crate::pool::Pool::acquire`]: healthy node, fewest in flight, or a
//!    wait in the queue); a refused connection moves on to a node not tried
//!    yet (nothing was sent), a failure after sending moves on only for a
//!    replayable method, a timeout is a 504; each counts as a passive health
//!    failure ([`crate::health`]).
//! 5. `response_filter`: hop-by-hop removal, cookie flags; the body is pumped
//!    from the node as fast as it comes ([`reply`]), and the worker's lease is
//!    released once the node's reply is read off it.
//!
//! Static module assets are answered before step 1 ([`crate::static_files`]);
//! an X-Accel-Redirect reply is turned into the filestore file in step 5
//! ([`accel`]).

pub mod accel;
pub mod body;
pub mod headers;
pub mod reply;
mod tunnel;
pub mod websocket;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use body::{RequestBody, UpstreamBody};
pub use headers::{ClientInfo, Scheme};
pub use reply::ReplyBody;

use crate::access_log::AccessLog;
use crate::config::{self, Config, CookieFlags, Forwarding, Limits, Retries, Timeouts};
use crate::error::ProxyError;
use crate::health;
use crate::metrics::{Kind, Metrics};
use crate::pool::{Lease, Node, Pool, Refusal, Topology};
use crate::router::{self, Route};
use crate::shutdown::Lifecycle;
use crate::static_files::{Lookup, StaticFiles};
use crate::upstream::{Driver, SendError};

/// Everything a request needs, built from the config at start and at each
/// reload (one generation).
pub struct Edge {
    pub topology: Topology,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub forwarding: Forwarding,
    pub cookies: CookieFlags,
    pub retries: Retries,
    /// Retry-After and the maintenance page of a pool with no healthy node.
    pub health: config::Health,
    /// Retry-After when every worker is busy.
    pub admission: config::Admission,
    /// `/<module>/static/...` from the addons paths; `None` when none is configured.
    pub statics: Option<Arc<StaticFiles>>,
    /// Where X-Accel-Redirect targets are found; `None` when not configured.
    pub filestore: Option<std::path::PathBuf>,
    /// Shutdown signals and the tasks to wait for.
    pub lifecycle: Lifecycle,
    /// What outlives a reload: metrics, the access log.
    pub shared: Arc<Shared>,
}

/// What every generation of the [`Edge`] shares: it outlives reloads.
pub struct Shared {
    pub lifecycle: Lifecycle,
    pub metrics: Metrics,
    pub access_log: AccessLog,
}

/// The edge requests are served with now; a reload swaps in a new one, and
/// requests already running finish with the one they started with.
pub type Current = Arc<ArcSwap<Edge>>;

impl Edge {
    /// The first generation: new nodes, an empty static file cache.
    pub fn new(config: &Config, shared: Arc<Shared>) -> Edge {
        let statics = StaticFiles::new(&config.statics).map(Arc::new);
        Edge::from_parts(config, shared, Topology::new(config), statics)
    }

    /// A generation of `config` with `topology` and `statics` built by the
    /// caller: a reload passes on the nodes it keeps, and the static file
    /// cache when `[static]` is unchanged.
    pub fn from_parts(
        config: &Config,
        shared: Arc<Shared>,
        topology: Topology,
        statics: Option<Arc<StaticFiles>>,
    ) -> Edge {
        let lifecycle = shared.lifecycle.clone();
        Edge {
            topology,
            timeouts: config.timeouts.clone(),
            limits: config.limits.clone(),
            forwarding: config.forwarding.clone(),
            cookies: config.cookies.clone(),
            retries: config.retries.clone(),
            health: config.health.clone(),
            admission: config.admission.clone(),
            statics,
            filestore: config.filestore.clone(),
            lifecycle,
            shared,
        }
    }
}

/// What the access log and the metrics record of a request beyond its
/// head and status, filled in as the request goes through the phases.
#[derive(Debug, Default)]
pub struct Outcome {
    pub kind: Kind,
    /// The pool that served it; empty for requests no pool saw.
    pub pool: &'static str,
    /// The node that answered (or failed last).
    pub node: Option<Arc<Node>>,
    /// Nodes tried after the first.
    pub retries: u32,
    /// Time spent waiting for a worker, over every attempt.
    pub queue_wait: Option<Duration>,
}

impl Outcome {
    /// The request goes to `node`, its `attempts`th node.
    pub(crate) fn attempt(&mut self, node: &Arc<Node>, attempts: usize) {
        self.retries = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
        self.node = Some(node.clone());
    }
}

/// Serves one client request. Never fails: errors become short error pages.
pub async fn handle(
    edge: &Edge,
    req: Request<Incoming>,
    client: &ClientInfo,
    outcome: &mut Outcome,
) -> Response<ReplyBody> {
    if let Some(statics) = &edge.statics
        && (req.method() == Method::GET || req.method() == Method::HEAD)
    {
        match statics.lookup(req.uri().path()).await {
            Lookup::NotStatic | Lookup::Missing => {}
            Lookup::Found(entry) => {
                outcome.kind = Kind::Static;
                return statics.respond(&entry, req.method(), req.headers()).await;
            }
            Lookup::Refused(reason) => {
                debug!(path = req.uri().path(), reason, "static request refused");
                return error_response(StatusCode::NOT_FOUND);
            }
        }
    }
    let route = router::route(req.uri().path());
    if websocket::is_upgrade(req.method(), req.headers()) {
        outcome.kind = Kind::Websocket;
        // Boxed: a rare path, kept out of the size of every request's future.
        return Box::pin(websocket::tunnel(edge, req, client, route, outcome)).await;
    }
    let method = req.method().clone();
    // A Uri clone shares its bytes: nothing is copied unless there is an error to log.
    let uri = req.uri().clone();
    match forward(edge, req, client, route, outcome).await {
        Ok(response) => response,
        Err(err) => {
            let status = err.status();
            if status.is_server_error() {
                warn!(%method, path = uri.path(), peer = %client.peer, status = status.as_u16(), cause = %err, "request failed");
            } else {
                debug!(%method, path = uri.path(), peer = %client.peer, status = status.as_u16(), cause = %err, "request refused");
            }
            edge.error_response(&err)
        }
    }
}

async fn forward(
    edge: &Edge,
    req: Request<Incoming>,
    client: &ClientInfo,
    route: Route,
    outcome: &mut Outcome,
) -> Result<Response<ReplyBody>, ProxyError> {
    // request_filter
    if accel::is_internal(req.uri().path()) {
        // The internal location of the X-Accel recipe: never from outside.
        return Err(ProxyError::Internal);
    }
    if req.version() == Version::HTTP_11
        && !req.headers().contains_key(header::HOST)
        && req.uri().authority().is_none()
    {
        // RFC 9112 §3.2; and Odoo picks its database by host.
        return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
    }
    body::check_declared_length(req.headers(), &edge.limits)?;
    let (mut parts, incoming) = req.into_parts();
    // HTTP/2 ends a body with END_STREAM and may send no Content-Length.
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING)
        || !http_body::Body::is_end_stream(&incoming);

    // read_body: before any node is chosen, so a slow upload holds no worker.
    let body = if has_body {
        body::collect(incoming, &edge.limits, edge.timeouts.client_body).await?
    } else {
        drop(incoming);
        RequestBody::Memory(Bytes::new())
    };

    // upstream_request_filter
    let scheme = headers::to_upstream(&mut parts.headers, client, &edge.forwarding);
    if has_body {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let target = origin_form(&parts.uri);

    // upstream_peer + send
    let pool = edge.topology.pool(route);
    outcome.pool = pool.name;
    let replayable = edge.retries.methods.contains(&parts.method);
    let mut replays = 0;
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;
    loop {
        // Bounded: each turn tries a node not tried before.
        let queued_at = Instant::now();
        let acquired = pool.acquire(&tried).await;
        *outcome.queue_wait.get_or_insert_default() += queued_at.elapsed();
        let lease = match acquired {
            Ok(lease) => lease,
            Err(Refusal::Exhausted) => {
                return Err(last_error.unwrap_or(refused(pool, Refusal::Exhausted)));
            }
            // Busy or down now: say so (503 + Retry-After), whatever failed before.
            Err(refusal) => return Err(refused(pool, refusal)),
        };
        tried.push(lease.index());
        let node = lease.node().clone();
        outcome.attempt(&node, tried.len());
        let request = upstream_request(&parts, &node, &target, &body);
        let send = {
            let node = node.clone();
            let connect = edge.timeouts.upstream_connect;
            tokio::time::timeout(edge.timeouts.upstream_response, async move {
                node.endpoint.send(request, connect).await
            })
        };
        let mut in_flight = InFlight {
            send: Some(Box::pin(send)),
            lease: Some(lease),
        };
        let sent = in_flight.wait().await;
        let lease = in_flight.finish();
        match sent {
            Ok(Ok((response, mut driver))) => {
                node.record_answer();
                if accel::wanted(&response) {
                    outcome.kind = Kind::Accel;
                }
                return driver
                    .drive(response_filter(
                        edge,
                        response,
                        scheme,
                        lease,
                        (&parts.method, &parts.headers),
                    ))
                    .await;
            }
            Err(_) => {
                health::passive_failure(&node, "no reply in time");
                // Not replayed: the node may still be working on it (a long report).
                return Err(ProxyError::UpstreamTimeout {
                    node: node.name.clone(),
                    after: edge.timeouts.upstream_response,
                });
            }
            Ok(Err(SendError::Connect(e))) => {
                // Nothing was sent: any method may go to the next node.
                let detail = format!("{}: connect: {e}", node.name);
                health::passive_failure(&node, &detail);
                warn!(node = %node.name, cause = %e, "node unreachable; trying the next one");
                edge.shared.metrics.retry(pool.name, "refused");
                last_error = Some(ProxyError::NoUpstream {
                    pool: pool.name,
                    last: detail,
                });
            }
            Ok(Err(SendError::Sent(e))) => {
                let err = ProxyError::BadGateway {
                    node: node.name.clone(),
                    detail: error_chain(&e),
                };
                health::passive_failure(&node, &err.to_string());
                if !replayable || replays >= edge.retries.max_replays {
                    return Err(err);
                }
                replays += 1;
                warn!(node = %node.name, method = %parts.method, cause = %err, "replaying on the next node");
                edge.shared.metrics.retry(pool.name, "replay");
                last_error = Some(err);
            }
        }
    }
}

type Sent = Result<Result<(Response<Incoming>, Driver), SendError>, tokio::time::error::Elapsed>;

/// A request on its way to a node, holding the node's worker.
///
/// A client that leaves before the reply head makes hyper drop the request's
/// future, but the node's worker is still busy with the request (a prefork
/// worker finds out only when it writes the reply). So the wait for the head
/// (bounded by `upstream_response`) then goes on in a task of its own, and
/// the worker is released only when that ends: the edge never counts a busy
/// worker as free.
struct InFlight {
    send: Option<Pin<Box<dyn Future<Output = Sent> + Send>>>,
    lease: Option<Lease>,
}

impl InFlight {
    async fn wait(&mut self) -> Sent {
        let sent = match self.send.as_mut() {
            Some(send) => send.await,
            None => unreachable!("an InFlight is waited for once"),
        };
        self.send = None;
        sent
    }

    /// The worker, once the node has answered (or failed).
    fn finish(mut self) -> Lease {
        self.lease.take().expect("the lease is taken once, here")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let (Some(send), Some(lease)) = (self.send.take(), self.lease.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = send.await;
                drop(lease);
            });
        }
    }
}

/// The error for a pool that gave a request no node.
pub(crate) fn refused(pool: &Pool, refusal: Refusal) -> ProxyError {
    match refusal {
        Refusal::AllDown => ProxyError::Unavailable { pool: pool.name },
        Refusal::QueueFull => ProxyError::Overloaded {
            pool: pool.name,
            detail: "every worker busy and the queue full",
        },
        Refusal::QueueTimeout => ProxyError::Overloaded {
            pool: pool.name,
            detail: "no worker free within admission.queue_timeout",
        },
        Refusal::Exhausted => ProxyError::NoUpstream {
            pool: pool.name,
            last: "every node was tried".into(),
        },
    }
}

impl Edge {
    /// The page for an error: the maintenance page (when configured) for a
    /// pool with no node, `Retry-After` on every 503.
    pub fn error_response(&self, err: &ProxyError) -> Response<ReplyBody> {
        let retry_after = match err {
            ProxyError::Unavailable { .. } => self.health.retry_after,
            ProxyError::Overloaded { .. } => self.admission.retry_after,
            _ => return error_response(err.status()),
        };
        let mut response = match (err, &self.health.maintenance_page) {
            (ProxyError::Unavailable { .. }, Some(page)) => {
                let mut response = error_response(err.status());
                *response.body_mut() = ReplyBody::full(page.clone());
                response
            }
            _ => error_response(err.status()),
        };
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        response
    }
}

/// The request as a node gets it: origin-form target, HTTP/1.1, the rewritten
/// headers, and a fresh copy of the buffered body.
fn upstream_request(
    parts: &http::request::Parts,
    node: &Node,
    target: &http::Uri,
    body: &RequestBody,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body.to_upstream());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = target.clone();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    if !request.headers().contains_key(header::HOST) {
        // An HTTP/1.0 client may send no Host; HTTP/1.1 to the node needs one.
        if let Ok(host) = HeaderValue::from_str(&node.address) {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    request
}

async fn response_filter(
    edge: &Edge,
    response: Response<Incoming>,
    scheme: Scheme,
    lease: Lease,
    request: (&Method, &http::HeaderMap),
) -> Result<Response<ReplyBody>, ProxyError> {
    let node = lease.node().clone();
    let (mut parts, body) = response.into_parts();
    headers::to_client(&mut parts.headers, scheme, &edge.cookies);
    if accel::wanted_parts(parts.status, &parts.headers) {
        // Odoo's body is empty (Content-Length: 0): the edge sends the file,
        // and the node's worker is free.
        drop(body);
        drop(lease);
        let (method, headers) = request;
        return accel::serve(
            edge.filestore.as_deref(),
            &node.name,
            parts.headers,
            method,
            headers,
        )
        .await;
    }
    // Internal headers never reach a client, whatever the reply.
    accel::strip_internal(&mut parts.headers);
    let body = ReplyBody::from_upstream(body, &edge.limits, edge.timeouts.upstream_response, lease)
        .await
        .map_err(|detail| ProxyError::BadGateway {
            node: node.name.clone(),
            detail,
        })?;
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    Ok(out)
}

/// The request target as a node gets it: path and query, never an authority.
fn origin_form(uri: &http::Uri) -> http::Uri {
    match uri.path_and_query() {
        Some(pq) => http::Uri::from(pq.clone()),
        None => http::Uri::from_static("/"),
    }
}

/// A short page that says which error it is; the detail is in the log.
pub fn error_response(status: StatusCode) -> Response<ReplyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let hint = match code {
        404 => "Not found.",
        413 => "The request body is larger than this server accepts.",
        502 => "The Odoo server did not give a valid reply.",
        503 => "The Odoo server is not available right now. Please try again shortly.",
        504 => "The Odoo server did not reply in time.",
        _ => "The request could not be served.",
    };
    let page = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1><p>{hint}</p><hr><p>odoo-edge</p></body></html>\n"
    );
    let mut response = Response::new(ReplyBody::full(page));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status.is_client_error() {
        // The body may be unread: the connection cannot carry another request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An error and its causes on one line, for the log.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Shared handle type used by listeners.
pub type SharedEdge = Arc<Edge>;
