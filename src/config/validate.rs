//! Raw file -> [`Config`]: defaults, every rule, all problems collected at once.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use ipnet::IpNet;
use toml::Spanned;

use super::file::{FileConfig, FileDuration, FileSize};
use super::{
    Config, ConfigError, CookieFlags, Forwarding, Limits, ListenerConfig, NodeConfig, Problem,
    Retries, Role, StaticConfig, Timeouts,
};

/// Default upstream reply timeout: above the `limit_time_real = 1200` of Odoo's
/// documented sample, so that Odoo's own watchdog fires first on a runaway
/// request and a long report is never cut by the edge before Odoo gives up.
pub const DEFAULT_UPSTREAM_RESPONSE: Duration = Duration::from_secs(1260);

const MIB: u64 = 1024 * 1024;

/// Longest duration any timeout may be set to (far beyond any sane value, and
/// far from overflowing a deadline computed from it).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses and validates TOML text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text)?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let config = v.config(file);
    // File order reads best; problems without a line (a missing section) first.
    v.problems.sort_by_key(|p| p.line.unwrap_or(0));
    if v.problems.is_empty() {
        Ok(Config {
            warnings: v.warnings,
            ..config
        })
    } else {
        Err(ConfigError::Invalid(v.problems))
    }
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Validator<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn problem(
        &mut self,
        key: impl Into<String>,
        value: Option<String>,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) {
        let line = span.map(|s| self.line(s));
        self.problems.push(Problem {
            key: key.into(),
            value,
            line,
            reason: reason.into(),
        });
    }

    /// A problem with a value, shown as it is written in TOML (strings quoted).
    fn bad<T: serde::Serialize>(&mut self, key: impl Into<String>, v: &Spanned<T>, reason: &str) {
        let literal =
            toml::Value::try_from(v.get_ref()).map_or_else(|_| "?".into(), |v| v.to_string());
        self.problem(key, Some(literal), Some(v.span()), reason);
    }

    fn config(&mut self, file: FileConfig) -> Config {
        let listeners = self.listeners(&file);
        let nodes = self.nodes(&file);
        let timeouts = self.timeouts(&file);
        let limits = self.limits(&file);
        let forwarding = self.forwarding(&file);
        let cookies = self.cookies(&file);
        let retries = self.retries(&file);
        let statics = self.statics(&file);
        let filestore = file.x_accel.filestore.as_ref().and_then(|p| {
            match std::fs::canonicalize(p.get_ref()) {
                Ok(path) if path.is_dir() => Some(path),
                Ok(_) => {
                    self.bad("x_accel.filestore", p, "not a directory");
                    None
                }
                Err(e) => {
                    self.bad("x_accel.filestore", p, &format!("cannot be read: {e}"));
                    None
                }
            }
        });
        let worker_threads = match &file.runtime.worker_threads {
            None => None,
            Some(n) if *n.get_ref() == 0 => None,
            Some(n) if (1..=256).contains(n.get_ref()) => Some(*n.get_ref() as usize),
            Some(n) => {
                self.bad(
                    "runtime.worker_threads",
                    n,
                    "must be 0 (one per core) to 256",
                );
                None
            }
        };
        Config {
            listeners,
            nodes,
            timeouts,
            limits,
            forwarding,
            cookies,
            retries,
            statics,
            filestore,
            worker_threads,
            warnings: Vec::new(),
        }
    }

    fn listeners(&mut self, file: &FileConfig) -> Vec<ListenerConfig> {
        if file.listeners.is_empty() {
            self.problem(
                "listeners",
                None,
                None,
                "at least one [[listeners]] entry with an address is required",
            );
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in file.listeners.iter().enumerate() {
            let key = format!("listeners[{i}].address");
            match l.address.get_ref().parse::<SocketAddr>() {
                Ok(addr) if !seen.insert(addr) => {
                    self.bad(key, &l.address, "the same address is listed twice")
                }
                Ok(address) => out.push(ListenerConfig { address }),
                Err(_) => self.bad(key, &l.address, "expected IP:port, such as 0.0.0.0:8080"),
            }
        }
        out
    }

    fn nodes(&mut self, file: &FileConfig) -> Vec<NodeConfig> {
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        let mut out = Vec::new();
        for (i, n) in file.nodes.iter().enumerate() {
            let name = n.name.get_ref();
            let mut ok = true;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                self.bad(
                    format!("nodes[{i}].name"),
                    &n.name,
                    "use letters, digits, '.', '_' and '-' only",
                );
                ok = false;
            } else if !names.insert(name.clone()) {
                self.bad(
                    format!("nodes[{i}].name"),
                    &n.name,
                    "another node already has this name",
                );
                ok = false;
            }
            let role = match n.role.get_ref().as_str() {
                "interactive" => Role::Interactive,
                "gevent" => Role::Gevent,
                "cron" => Role::Cron,
                _ => {
                    self.bad(
                        format!("nodes[{i}].role"),
                        &n.role,
                        "expected \"interactive\", \"gevent\" or \"cron\"",
                    );
                    ok = false;
                    Role::Cron
                }
            };
            if let Err(reason) = check_upstream_address(n.address.get_ref()) {
                self.bad(format!("nodes[{i}].address"), &n.address, &reason);
                ok = false;
            } else if role != Role::Cron
                && !addresses.insert((role, n.address.get_ref().to_ascii_lowercase()))
            {
                self.bad(
                    format!("nodes[{i}].address"),
                    &n.address,
                    "another node of the same role has this address",
                );
                ok = false;
            }
            let workers = match &n.workers {
                Some(w) if (1..=4096).contains(w.get_ref()) => *w.get_ref() as u32,
                Some(w) => {
                    self.bad(format!("nodes[{i}].workers"), w, "must be 1 to 4096");
                    ok = false;
                    0
                }
                None if role == Role::Interactive => {
                    self.problem(
                        format!("nodes[{i}].workers"),
                        None,
                        Some(n.name.span()),
                        format!(
                            "interactive node {name:?} needs `workers` (its odoo.conf `workers`, \
                             or 1 for a threaded Odoo)"
                        ),
                    );
                    ok = false;
                    0
                }
                None => 0,
            };
            if ok {
                out.push(NodeConfig {
                    name: name.clone(),
                    address: n.address.get_ref().clone(),
                    role,
                    workers,
                });
            }
        }
        let has_interactive = file.nodes.iter().any(|n| n.role.get_ref() == "interactive");
        if !has_interactive {
            self.problem(
                "nodes",
                None,
                None,
                "no node has role = \"interactive\": nothing could serve ordinary requests",
            );
        }
        if has_interactive && !file.nodes.iter().any(|n| n.role.get_ref() == "gevent") {
            self.warnings.push(
                "no gevent node: /websocket and /longpolling go to the interactive nodes, \
                 which only works if they run Odoo threaded (workers = 0)"
                    .into(),
            );
        }
        out
    }

    fn duration(&mut self, key: &str, v: &Option<FileDuration>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(d) if **d.get_ref() > MAX_DURATION => {
                let text = format!(
                    "{:?}",
                    humantime::format_duration(**d.get_ref()).to_string()
                );
                self.problem(key, Some(text), Some(d.span()), "must be at most 7 days");
                default
            }
            Some(d) if d.get_ref().is_zero() => {
                let text = format!(
                    "{:?}",
                    humantime::format_duration(**d.get_ref()).to_string()
                );
                self.problem(key, Some(text), Some(d.span()), "must be longer than 0s");
                default
            }
            Some(d) => **d.get_ref(),
        }
    }

    fn timeouts(&mut self, file: &FileConfig) -> Timeouts {
        let t = &file.timeouts;
        let websocket_idle = self.duration(
            "timeouts.websocket_idle",
            &t.websocket_idle,
            Duration::from_secs(300),
        );
        if let Some(d) = &t.websocket_idle
            && **d.get_ref() <= Duration::from_secs(60)
            && !d.get_ref().is_zero()
        {
            let text = format!(
                "{:?}",
                humantime::format_duration(**d.get_ref()).to_string()
            );
            self.problem(
                "timeouts.websocket_idle",
                Some(text),
                Some(d.span()),
                "must be longer than 60s: Odoo pings an idle websocket only after 45s \
                 and waits 15s for the pong",
            );
        }
        let upstream_response = self.duration(
            "timeouts.upstream_response",
            &t.upstream_response,
            DEFAULT_UPSTREAM_RESPONSE,
        );
        if upstream_response < Duration::from_secs(120) {
            self.warnings.push(format!(
                "timeouts.upstream_response = {} is below Odoo's default limit_time_real (120s): \
                 long reports will get a 504 from the edge",
                humantime::format_duration(upstream_response)
            ));
        }
        let upstream_connect = self.duration(
            "timeouts.upstream_connect",
            &t.upstream_connect,
            Duration::from_secs(5),
        );
        if upstream_connect >= upstream_response
            && let Some(c) = &t.upstream_connect
        {
            let text = format!(
                "{:?}",
                humantime::format_duration(upstream_connect).to_string()
            );
            self.problem(
                "timeouts.upstream_connect",
                Some(text),
                Some(c.span()),
                "must be shorter than timeouts.upstream_response, or a node that does not \
                 answer would give a 504 instead of moving on to the next node",
            );
        }
        Timeouts {
            client_header: self.duration(
                "timeouts.client_header",
                &t.client_header,
                Duration::from_secs(30),
            ),
            client_body: self.duration(
                "timeouts.client_body",
                &t.client_body,
                Duration::from_secs(60),
            ),
            client_keepalive: self.duration(
                "timeouts.client_keepalive",
                &t.client_keepalive,
                Duration::from_secs(75),
            ),
            client_send: self.duration(
                "timeouts.client_send",
                &t.client_send,
                Duration::from_secs(60),
            ),
            upstream_connect,
            upstream_response,
            websocket_idle,
        }
    }

    fn size(&mut self, key: &str, v: &Option<FileSize>, default: u64, range: Range<u64>) -> u64 {
        match v {
            None => default,
            Some(s) if range.contains(&s.get_ref().as_u64()) => s.get_ref().as_u64(),
            Some(s) => {
                let reason = format!(
                    "must be at least {} and below {}",
                    bytesize::ByteSize(range.start).display().iec(),
                    bytesize::ByteSize(range.end).display().iec()
                );
                self.problem(
                    key,
                    Some(format!("{:?}", s.get_ref().display().iec().to_string())),
                    Some(s.span()),
                    reason,
                );
                default
            }
        }
    }

    fn limits(&mut self, file: &FileConfig) -> Limits {
        let l = &file.limits;
        let spool_dir = l.spool_dir.as_ref().and_then(|d| {
            let path = PathBuf::from(d.get_ref());
            if path.is_dir() {
                Some(path)
            } else {
                self.bad("limits.spool_dir", d, "not an existing directory");
                None
            }
        });
        let max_connections = match &l.max_connections {
            None => 16384,
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.bad("limits.max_connections", n, "must be 1 to 1000000");
                16384
            }
        };
        Limits {
            max_connections,
            max_request_body: self.size(
                "limits.max_request_body",
                &l.max_request_body,
                128 * MIB,
                1..(1 << 40),
            ),
            request_buffer: self.size(
                "limits.request_buffer",
                &l.request_buffer,
                MIB,
                1024..(1 << 30),
            ) as usize,
            response_buffer: self.size(
                "limits.response_buffer",
                &l.response_buffer,
                MIB,
                1024..(1 << 30),
            ) as usize,
            max_response_spool: self.size(
                "limits.max_response_spool",
                &l.max_response_spool,
                1024 * MIB,
                0..(1 << 44),
            ),
            max_header_bytes: self.size(
                "limits.max_header_bytes",
                &l.max_header_bytes,
                64 * 1024,
                8192..(16 * MIB + 1),
            ) as usize,
            spool_dir,
        }
    }

    fn statics(&mut self, file: &FileConfig) -> StaticConfig {
        let st = &file.statics;
        let mut addons_paths = Vec::new();
        for (i, p) in st.addons_paths.iter().enumerate() {
            let key = format!("static.addons_paths[{i}]");
            match std::fs::canonicalize(p.get_ref()) {
                Ok(path) if path.is_dir() => addons_paths.push(path),
                Ok(_) => self.bad(key, p, "not a directory"),
                Err(e) => self.bad(key, p, &format!("cannot be read: {e}")),
            }
        }
        let cache_control = match &st.cache_control {
            None => http::HeaderValue::from_static("public, max-age=604800"),
            Some(v) => match http::HeaderValue::from_str(v.get_ref()) {
                Ok(value) => value,
                Err(_) => {
                    self.bad("static.cache_control", v, "not a valid header value");
                    http::HeaderValue::from_static("public, max-age=604800")
                }
            },
        };
        StaticConfig {
            addons_paths,
            cache_control,
            follow_symlinks: st.follow_symlinks.unwrap_or(false),
            compress_min_size: self.size(
                "static.compress_min_size",
                &st.compress_min_size,
                1024,
                0..(1 << 30),
            ) as usize,
            memory_cache: self.size(
                "static.memory_cache",
                &st.memory_cache,
                64 * MIB,
                0..(1 << 40),
            ) as usize,
        }
    }

    fn forwarding(&mut self, file: &FileConfig) -> Forwarding {
        let mut trusted_proxies = Vec::new();
        for (i, p) in file.forwarding.trusted_proxies.iter().enumerate() {
            let text = p.get_ref();
            match text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.bad(
                    format!("forwarding.trusted_proxies[{i}]"),
                    p,
                    "expected an IP address or CIDR such as 10.0.0.0/8",
                ),
            }
        }
        Forwarding { trusted_proxies }
    }

    fn cookies(&mut self, file: &FileConfig) -> CookieFlags {
        let secure = file.cookies.session_secure.unwrap_or(true);
        let same_site = match &file.cookies.session_samesite {
            None => Some("Lax"),
            Some(s) => match s.get_ref().to_ascii_lowercase().as_str() {
                "lax" => Some("Lax"),
                "strict" => Some("Strict"),
                "none" if secure => Some("None"),
                "none" => {
                    self.bad(
                        "cookies.session_samesite",
                        s,
                        "SameSite=None needs session_secure = true (browsers reject it otherwise)",
                    );
                    None
                }
                "off" => None,
                _ => {
                    self.bad(
                        "cookies.session_samesite",
                        s,
                        "expected \"Lax\", \"Strict\", \"None\" or \"off\"",
                    );
                    None
                }
            },
        };
        CookieFlags { secure, same_site }
    }

    fn retries(&mut self, file: &FileConfig) -> Retries {
        let mut methods = Vec::new();
        match &file.retries.methods {
            None => methods = vec![Method::GET, Method::HEAD],
            Some(list) => {
                for (i, m) in list.iter().enumerate() {
                    let key = format!("retries.methods[{i}]");
                    match Method::from_bytes(m.get_ref().as_bytes()) {
                        Ok(method) if method.is_safe() => methods.push(method),
                        Ok(_) => self.bad(
                            key,
                            m,
                            "not a safe method: replaying it could apply a write twice \
                             (every Odoo JSON-RPC call is a POST); only GET, HEAD, OPTIONS \
                             and TRACE may be replayed",
                        ),
                        Err(_) => self.bad(key, m, "not an HTTP method"),
                    }
                }
            }
        }
        let max_replays = match &file.retries.max_replays {
            None => 1,
            Some(n) if (0..=10).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.bad("retries.max_replays", n, "must be 0 to 10");
                1
            }
        };
        Retries {
            methods,
            max_replays,
        }
    }
}

/// Checks `host:port` where host is an IP, a bracketed IPv6 or a DNS name.
fn check_upstream_address(text: &str) -> Result<(), String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("missing port: expected host:port, such as 10.0.0.11:8069".into());
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("bad port {port:?}: expected 1 to 65535"));
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        });
    if name_ok {
        Ok(())
    } else {
        Err(format!(
            "bad host {host:?}: expected an IP address or a DNS name"
        ))
    }
}

#[cfg(test)]
mod tests;
