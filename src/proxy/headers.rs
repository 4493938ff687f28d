//! Header rewriting in both directions: hop-by-hop removal (RFC 9110 §7.6.1),
//! the X-Forwarded-* set that Odoo's `proxy_mode` reads, and the `session_id`
//! cookie flags.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{CookieFlags, Forwarding};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Who sent the request and how it reached the edge. Built once per client
/// connection, so the per-request work is clones of ready header values (and
/// the trust check, [`ClientInfo::with_forwarding`]).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// The listener terminated TLS.
    pub tls: bool,
    /// The peer is in `forwarding.trusted_proxies`.
    trusted: bool,
    /// The peer's IP address as a header value.
    peer_ip: HeaderValue,
    /// The listener's own address, the public host of a request with no Host.
    local_host: HeaderValue,
}

impl ClientInfo {
    /// The peer is in `forwarding.trusted_proxies`.
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// This client as `fwd` sees it: a reload may have changed which peers
    /// are trusted while the connection stays open.
    pub fn with_forwarding(&self, fwd: &Forwarding) -> ClientInfo {
        ClientInfo {
            trusted: is_trusted(self.peer.ip(), fwd),
            ..self.clone()
        }
    }

    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool, fwd: &Forwarding) -> ClientInfo {
        let ip = canonical(peer.ip());
        // An IP address (and IP:port) is always a valid header value.
        let value = |text: String| {
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        ClientInfo {
            peer,
            tls,
            trusted: is_trusted(ip, fwd),
            peer_ip: value(ip.to_string()),
            local_host: value(local.to_string()),
        }
    }
}

/// Headers that are hop-by-hop whatever `Connection` says.
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Position of `name` in [`HOP_BY_HOP`]; a `match` on the name compiles to a
/// length switch, cheaper than comparing against each entry.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        _ => None,
    }
}

/// Removes hop-by-hop headers: the fixed list plus every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which of the fixed list are present (most
    // messages carry none, a prefork Odoo's replies only `Connection: close`).
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for key in headers.keys() {
        if let Some(i) = hop_by_hop_index(key) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual tokens name no extra header; and a sender cannot make
        // Host, the message framing or the request id the edge set (which
        // ties Odoo's log to the access log) disappear by naming them.
        .filter(|t| {
            [
                "close",
                "keep-alive",
                "upgrade",
                "host",
                "content-length",
                "x-request-id",
            ]
            .iter()
            .all(|k| !t.eq_ignore_ascii_case(k))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*name);
    }
}

/// Rewrites a client request's headers for Odoo. Returns the scheme Odoo will
/// believe (`https` decides the cookie flags on the way back).
///
/// From an untrusted peer, X-Forwarded-For and X-Real-IP are replaced by the
/// peer address and X-Forwarded-Proto/-Host are set from this connection. From
/// a peer in `forwarding.trusted_proxies`, the client address (the first
/// untrusted one from the right of the chain it sent) is appended to its
/// X-Forwarded-For and sent as X-Real-IP, and the rightmost
/// X-Forwarded-Proto/-Host it sent are kept: Odoo only ever reads the
/// rightmost value, so it sees the real client. Host itself is never touched.
pub fn to_upstream(headers: &mut HeaderMap, client: &ClientInfo, fwd: &Forwarding) -> Scheme {
    // Taken first, so that nothing (not even `Connection: host`) can leave
    // Odoo without X-Forwarded-Host: without it, proxy_mode ignores
    // X-Forwarded-For and -Proto too, and Odoo would see the edge as client.
    let forwarded_host = client
        .trusted
        .then(|| rightmost(headers, &X_FORWARDED_HOST))
        .flatten()
        .and_then(|h| HeaderValue::from_str(&h).ok())
        .or_else(|| headers.get(header::HOST).cloned())
        .unwrap_or_else(|| client.local_host.clone());
    remove_hop_by_hop(headers);
    // The edge sends the body it buffered, whole, with its length.
    headers.remove(header::EXPECT);

    let trusted = client.trusted;
    let (chain, real_ip) = if trusted {
        // The client is the first address, from the right, that is not one
        // of our trusted proxies. It goes last in the chain, because Odoo's
        // proxy_mode believes only the rightmost entry (as nginx's realip
        // module with `$proxy_add_x_forwarded_for` would do).
        let mut chain = joined(headers, &X_FORWARDED_FOR);
        let real_ip = chain
            .rsplit(',')
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .find(|a| !is_trusted(*a, fwd))
            .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok())
            .unwrap_or_else(|| client.peer_ip.clone());
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        chain.push_str(real_ip.to_str().unwrap_or_default());
        (
            HeaderValue::from_str(&chain).unwrap_or_else(|_| real_ip.clone()),
            real_ip,
        )
    } else {
        (client.peer_ip.clone(), client.peer_ip.clone())
    };

    let own_proto = if client.tls {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let proto = if trusted {
        match rightmost(headers, &X_FORWARDED_PROTO).as_deref() {
            Some(p) if p.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(p) if p.eq_ignore_ascii_case("http") => Scheme::Http,
            _ => own_proto,
        }
    } else {
        own_proto
    };
    headers.insert(X_FORWARDED_FOR.clone(), chain);
    headers.insert(X_REAL_IP.clone(), real_ip);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(proto.as_str()),
    );
    headers.insert(X_FORWARDED_HOST.clone(), forwarded_host);
    proto
}

/// `http` or `https`, as Odoo will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Rewrites a node's reply headers for the client.
pub fn to_client(headers: &mut HeaderMap, scheme: Scheme, cookies: &CookieFlags) {
    remove_hop_by_hop(headers);
    if scheme == Scheme::Https {
        secure_session_cookie(headers, cookies);
    }
}

/// Adds `Secure` and `SameSite` to Odoo's `session_id` cookie, as Odoo's docs
/// do with nginx's `proxy_cookie_flags session_id samesite=lax secure`.
/// Attributes Odoo already set are left as they are.
pub fn secure_session_cookie(headers: &mut HeaderMap, flags: &CookieFlags) {
    if !flags.secure && flags.same_site.is_none() {
        return;
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if !cookies.iter().any(|c| cookie_name(c) == Some("session_id")) {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        let value = match (cookie_name(&cookie), cookie.to_str()) {
            (Some("session_id"), Ok(text)) => {
                let attrs: Vec<String> = text
                    .split(';')
                    .skip(1)
                    .map(|a| a.trim().to_ascii_lowercase())
                    .collect();
                let mut out = text.trim_end().trim_end_matches(';').to_owned();
                if flags.secure && !attrs.iter().any(|a| a == "secure") {
                    out.push_str("; Secure");
                }
                if let Some(same_site) = flags.same_site
                    && !attrs.iter().any(|a| a.starts_with("samesite"))
                {
                    out.push_str("; SameSite=");
                    out.push_str(same_site);
                }
                HeaderValue::from_str(&out).unwrap_or(cookie)
            }
            _ => cookie,
        };
        headers.append(header::SET_COOKIE, value);
    }
}

fn cookie_name(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    Some(text.split_once('=')?.0.trim())
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr, fwd: &Forwarding) -> bool {
    let ip = canonical(ip);
    fwd.trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// All values of a comma-separated header, joined with ", ".
fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(part);
        }
    }
    out
}

fn rightmost(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()
        .and_then(|v| v.rsplit(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
