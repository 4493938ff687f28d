//! Raw file -> [`Config`]: defaults, every rule, all problems collected at once.

use std::collections::HashSet;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use ipnet::IpNet;
use toml::Spanned;

use super::file::{FileConfig, FileDuration, FileListener, FileProbe, FileSize, FileTls};
use super::{
    AccessLogConfig, AccessLogFormat, Admission, CertificateFiles, Config, ConfigError,
    CookieFlags, Forwarding, Health, Limits, ListenerConfig, NodeConfig, Probe, Problem, Redirect,
    Retries, Role, StaticConfig, Timeouts, TlsConfig, UnknownSni, WhenAllDown,
};
use crate::tls::{self, Part, TlsError};

/// Default upstream reply timeout: above the `limit_time_real = 1200` of Odoo's
/// documented sample, so that Odoo's own watchdog fires first on a runaway
/// request and a long report is never cut by the edge before Odoo gives up.
pub const DEFAULT_UPSTREAM_RESPONSE: Duration = Duration::from_secs(1260);

const MIB: u64 = 1024 * 1024;

/// Longest duration any timeout may be set to (far beyond any sane value, and
/// far from overflowing a deadline computed from it).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Probes closer together than this would load the node for nothing; further
/// apart, a dead node would be noticed (by probes alone) too late.
const PROBE_INTERVALS: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// `Retry-After` is a number of seconds; a client told to wait more than a
/// day would simply not come back.
const RETRY_AFTERS: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(86400);

/// `[listeners.tls] hsts`: what Odoo's documented nginx setup sends.
const DEFAULT_HSTS: &str = "max-age=31536000; includeSubDomains";

const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS handshake is a few round trips; a client that needs more than this
/// is gone, or holding a connection slot on purpose.
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The maintenance page is kept in memory and sent whole with every 503.
const MAX_MAINTENANCE_PAGE: u64 = MIB;

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

    /// A problem with a duration, shown as humantime writes it (`"1day 1h"`).
    fn bad_duration(&mut self, key: impl Into<String>, d: &FileDuration, reason: &str) {
        let literal = format!(
            "{:?}",
            humantime::format_duration(**d.get_ref()).to_string()
        );
        self.problem(key, Some(literal), Some(d.span()), reason);
    }

    /// A written integer within `range`, else a problem and `None`.
    fn integer(
        &mut self,
        key: impl Into<String>,
        v: &Spanned<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        if range.contains(v.get_ref()) {
            Some(*v.get_ref())
        } else {
            let reason = format!("must be {} to {}", range.start(), range.end());
            self.bad(key, v, &reason);
            None
        }
    }

    fn config(&mut self, file: FileConfig) -> Config {
        let listeners = self.listeners(&file);
        let interactive = self.role_probe(Role::Interactive, &file.health.interactive);
        let gevent = self.role_probe(Role::Gevent, &file.health.gevent);
        let nodes = self.nodes(&file, &interactive, &gevent);
        let health = self.health(&file, interactive.probe, gevent.probe);
        let admission = self.admission(&file);
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
        let admin =
            file.admin
                .address
                .as_ref()
                .and_then(|a| match a.get_ref().parse::<SocketAddr>() {
                    Ok(addr)
                        if !addr.ip().is_loopback() && file.admin.allow_remote != Some(true) =>
                    {
                        self.bad(
                            "admin.address",
                            a,
                            "not a loopback address: the admin API can drain nodes and shows the \
                         topology; set admin.allow_remote = true to expose it anyway",
                        );
                        None
                    }
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.bad(
                            "admin.address",
                            a,
                            "expected IP:port, such as 127.0.0.1:9901",
                        );
                        None
                    }
                });
        let access_log = self.access_log(&file);
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
            health,
            admission,
            statics,
            filestore,
            worker_threads,
            admin,
            access_log,
            warnings: Vec::new(),
        }
    }

    fn access_log(&mut self, file: &FileConfig) -> AccessLogConfig {
        let mut config = AccessLogConfig::default();
        if let Some(format) = &file.access_log.format {
            match format.get_ref().as_str() {
                "json" => config.format = AccessLogFormat::Json,
                "combined" => config.format = AccessLogFormat::Combined,
                "off" => config.format = AccessLogFormat::Off,
                _ => self.bad(
                    "access_log.format",
                    format,
                    "expected \"json\", \"combined\" or \"off\"",
                ),
            }
        }
        if let Some(path) = &file.access_log.path {
            let wanted = PathBuf::from(path.get_ref());
            let dir = wanted.parent().filter(|d| !d.as_os_str().is_empty());
            if path.get_ref().is_empty() {
                self.bad(
                    "access_log.path",
                    path,
                    "expected a file path, or \"-\" for standard output",
                );
            } else if path.get_ref() != "-" && dir.is_some_and(|d| !d.is_dir()) {
                self.bad("access_log.path", path, "its directory does not exist");
            } else {
                config.path = wanted;
            }
        }
        config
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
            let tls = l.tls.as_ref().and_then(|t| self.tls(i, t));
            let redirect = self.redirect(i, l);
            let key = format!("listeners[{i}].address");
            match l.address.get_ref().parse::<SocketAddr>() {
                // Port 0 (any free port, in tests) may repeat.
                Ok(addr) if addr.port() != 0 && !seen.insert(addr) => {
                    self.bad(key, &l.address, "the same address is listed twice")
                }
                Ok(address) => out.push(ListenerConfig {
                    address,
                    tls,
                    redirect,
                }),
                Err(_) => self.bad(key, &l.address, "expected IP:port, such as 0.0.0.0:8080"),
            }
        }
        // A redirect to a port no TLS listener here has may be right (a
        // port forward in front), but is more often a forgotten https_port.
        let https_ports: HashSet<u16> = out
            .iter()
            .filter(|l| l.tls.is_some())
            .map(|l| l.address.port())
            .collect();
        for l in &out {
            if let Some(redirect) = &l.redirect {
                let port = redirect.https_port.unwrap_or(443);
                if !https_ports.contains(&port) {
                    self.warnings.push(format!(
                        "listener {} redirects to HTTPS on port {port}, but no listener here \
                         with [listeners.tls] has that port",
                        l.address
                    ));
                }
            }
        }
        out
    }

    /// `[listeners.tls]` of listener `i`: every key checked, then the files
    /// loaded and checked; `None` if anything is wrong.
    fn tls(&mut self, i: usize, table: &Spanned<FileTls>) -> Option<TlsConfig> {
        let t = table.get_ref();
        let base = format!("listeners[{i}].tls");
        let problems_before = self.problems.len();
        let entries = t.certificates.get_ref();
        if entries.is_empty() {
            self.problem(
                format!("{base}.certificates"),
                Some("[]".into()),
                Some(t.certificates.span()),
                "at least one { cert = \"...\", key = \"...\" } is needed",
            );
        }
        let certificates: Vec<CertificateFiles> = entries
            .iter()
            .map(|c| CertificateFiles {
                cert: PathBuf::from(c.cert.get_ref()),
                key: PathBuf::from(c.key.get_ref()),
            })
            .collect();
        let default_certificate = match &t.default_certificate {
            None => 0,
            // Already reported: no certificate at all.
            Some(_) if entries.is_empty() => 0,
            Some(n) if (0..entries.len() as i64).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                let reason = format!(
                    "must be 0 to {}: an index into certificates, which lists {}",
                    entries.len() - 1,
                    entries.len()
                );
                self.bad(format!("{base}.default_certificate"), n, &reason);
                0
            }
        };
        let unknown_sni = match &t.unknown_sni {
            None => UnknownSni::Default,
            Some(v) => match v.get_ref().as_str() {
                "default" => UnknownSni::Default,
                "refuse" => UnknownSni::Refuse,
                _ => {
                    self.bad(
                        format!("{base}.unknown_sni"),
                        v,
                        "expected \"default\" or \"refuse\"",
                    );
                    UnknownSni::Default
                }
            },
        };
        let handshake_timeout = match &t.handshake_timeout {
            None => DEFAULT_HANDSHAKE_TIMEOUT,
            Some(d) if d.get_ref().is_zero() => {
                self.bad_duration(
                    format!("{base}.handshake_timeout"),
                    d,
                    "must be longer than 0s",
                );
                DEFAULT_HANDSHAKE_TIMEOUT
            }
            Some(d) if **d.get_ref() > MAX_HANDSHAKE_TIMEOUT => {
                self.bad_duration(
                    format!("{base}.handshake_timeout"),
                    d,
                    "must be at most 60s: a handshake takes a few round trips",
                );
                DEFAULT_HANDSHAKE_TIMEOUT
            }
            Some(d) => **d.get_ref(),
        };
        let hsts = match &t.hsts {
            None => Some(http::HeaderValue::from_static(DEFAULT_HSTS)),
            Some(v) if v.get_ref() == "off" => None,
            Some(v) => match http::HeaderValue::from_str(v.get_ref()) {
                Ok(_) if !v.get_ref().to_ascii_lowercase().contains("max-age=") => {
                    self.bad(
                        format!("{base}.hsts"),
                        v,
                        "must contain max-age=<seconds> (browsers ignore it otherwise), \
                         or be \"off\"",
                    );
                    None
                }
                Ok(value) => Some(value),
                Err(_) => {
                    self.bad(format!("{base}.hsts"), v, "not a valid header value");
                    None
                }
            },
        };
        let http2 = t.http2.unwrap_or(true);
        if entries.is_empty() {
            return None;
        }
        // Chains are checked even when another file fails to load, so that
        // every problem shows at once; a chain that cannot be read is
        // reported once, by the loading.
        let check = tls::check_certificates(&certificates, default_certificate, SystemTime::now());
        let loaded = tls::server_config(&certificates, default_certificate, unknown_sni, http2);
        let unreadable: HashSet<usize> = match &loaded {
            Err(TlsError::Files(errors)) => errors
                .iter()
                .filter(|e| e.part == Part::Cert)
                .map(|e| e.certificate)
                .collect(),
            _ => HashSet::new(),
        };
        let mut file_problems: Vec<(usize, Part, String)> = Vec::new();
        for (j, report) in check.certificates.iter().enumerate() {
            if !unreadable.contains(&j) {
                file_problems.extend(report.errors.iter().map(|e| (j, Part::Cert, e.clone())));
            }
        }
        let server = match loaded {
            Ok(server) => Some(server),
            Err(TlsError::Files(errors)) => {
                file_problems.extend(
                    errors
                        .into_iter()
                        .map(|e| (e.certificate, e.part, e.reason.to_string())),
                );
                None
            }
            Err(other) => {
                self.problem(base.clone(), None, Some(table.span()), other.to_string());
                None
            }
        };
        // In file order: by entry, the cert before the key.
        file_problems.sort_by_key(|(j, part, _)| (*j, *part == Part::Key));
        for (j, part, reason) in file_problems {
            let value = match part {
                Part::Cert => &entries[j].cert,
                Part::Key => &entries[j].key,
            };
            self.bad(
                format!("{base}.certificates[{j}].{}", part.as_str()),
                value,
                &reason,
            );
        }
        self.warnings
            .extend(check.warnings.iter().map(|w| format!("{base}: {w}")));
        let server = server?;
        (self.problems.len() == problems_before).then_some(TlsConfig {
            certificates,
            default_certificate,
            unknown_sni,
            handshake_timeout,
            hsts,
            http2,
            server,
        })
    }

    /// `redirect_to_https` and the keys that go with it, on listener `i`.
    fn redirect(&mut self, i: usize, l: &FileListener) -> Option<Redirect> {
        let key = |name: &str| format!("listeners[{i}].{name}");
        let on = l.redirect_to_https.as_ref().is_some_and(|r| *r.get_ref());
        if !on {
            let reason = "only with redirect_to_https = true";
            if let Some(v) = &l.redirect_status {
                self.bad(key("redirect_status"), v, reason);
            }
            if let Some(v) = &l.https_port {
                self.bad(key("https_port"), v, reason);
            }
            if let Some(v) = &l.redirect_except {
                self.bad(key("redirect_except"), v, reason);
            }
            return None;
        }
        let problems_before = self.problems.len();
        if let (Some(r), Some(_)) = (&l.redirect_to_https, &l.tls) {
            self.bad(
                key("redirect_to_https"),
                r,
                "not on a listener with [listeners.tls], which serves HTTPS already: \
                 redirect from a plain listener",
            );
        }
        let status = match &l.redirect_status {
            None => StatusCode::MOVED_PERMANENTLY,
            Some(v) => match v.get_ref() {
                301 => StatusCode::MOVED_PERMANENTLY,
                308 => StatusCode::PERMANENT_REDIRECT,
                _ => {
                    self.bad(
                        key("redirect_status"),
                        v,
                        "expected 301 or 308 (which keeps the method and body of a POST)",
                    );
                    StatusCode::MOVED_PERMANENTLY
                }
            },
        };
        let https_port = match &l.https_port {
            None => None,
            Some(v) => self
                .integer(key("https_port"), v, 1..=65535)
                .map(|port| port as u16)
                .filter(|&port| port != 443),
        };
        let mut except = Vec::new();
        for (j, prefix) in l
            .redirect_except
            .iter()
            .flat_map(|l| l.get_ref())
            .enumerate()
        {
            match check_path_prefix(prefix.get_ref()) {
                Ok(()) => except.push(prefix.get_ref().clone()),
                Err(reason) => self.bad(format!("{}[{j}]", key("redirect_except")), prefix, reason),
            }
        }
        (self.problems.len() == problems_before).then_some(Redirect {
            status,
            https_port,
            except,
        })
    }

    fn nodes(
        &mut self,
        file: &FileConfig,
        interactive: &RoleProbe<'_>,
        gevent: &RoleProbe<'_>,
    ) -> Vec<NodeConfig> {
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        let mut out = Vec::new();
        for (i, n) in file.nodes.iter().enumerate() {
            let name = n.name.get_ref();
            let mut ok = true;
            let problems_before = self.problems.len();
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
            let probe = match (&n.health, role) {
                // Not when the role itself was rejected (it stands in as cron).
                (Some(table), Role::Cron) if n.role.get_ref() == "cron" => {
                    self.problem(
                        format!("nodes[{i}].health"),
                        None,
                        Some(table.span()),
                        "cron nodes have no HTTP port and are never probed",
                    );
                    default_probe(Role::Interactive)
                }
                // Never used: a cron node is never probed.
                (_, Role::Cron) => default_probe(Role::Interactive),
                (None, Role::Interactive) => interactive.probe.clone(),
                (None, Role::Gevent) => gevent.probe.clone(),
                (Some(table), role) => {
                    let base = if role == Role::Gevent {
                        gevent
                    } else {
                        interactive
                    };
                    self.node_probe(&format!("nodes[{i}].health"), table.get_ref(), base)
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
            if ok && self.problems.len() == problems_before {
                out.push(NodeConfig {
                    name: name.clone(),
                    address: n.address.get_ref().clone(),
                    role,
                    workers,
                    drain: n.drain.unwrap_or(false),
                    probe,
                });
            }
        }
        let mut web = out
            .iter()
            .filter(|n| n.role == Role::Interactive)
            .peekable();
        if web.peek().is_some() && web.all(|n| n.drain) {
            self.warnings.push(
                "every interactive node has drain = true: every request gets a 503 \
                 (with health.maintenance_page, if set)"
                    .into(),
            );
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

    /// A role's probe: the built-in defaults with `[health.<role>]` applied.
    fn role_probe<'f>(&mut self, role: Role, file: &'f FileProbe) -> RoleProbe<'f> {
        let table = match role {
            Role::Gevent => "health.gevent",
            Role::Interactive | Role::Cron => "health.interactive",
        };
        let (probe, timing_ok) = self.probe(table, file, &default_probe(role));
        if timing_ok {
            self.check_timing(&probe, &[(table, file)]);
        }
        RoleProbe {
            table,
            file,
            probe,
            timing_ok,
        }
    }

    /// A node's probe: its role's with `[nodes.health]` applied key by key.
    fn node_probe(&mut self, table: &str, file: &FileProbe, role: &RoleProbe<'_>) -> Probe {
        let (probe, timing_ok) = self.probe(table, file, &role.probe);
        // Unless the node changes interval or timeout, the role's table was
        // checked already; a rejected value would only cause a second problem.
        if timing_ok && role.timing_ok && (file.interval.is_some() || file.timeout.is_some()) {
            self.check_timing(&probe, &[(role.table, role.file), (table, file)]);
        }
        probe
    }

    /// `base` with the keys of one probe table applied, each checked on its
    /// own. The flag is false when an interval or timeout was rejected.
    fn probe(&mut self, table: &str, file: &FileProbe, base: &Probe) -> (Probe, bool) {
        let mut probe = base.clone();
        let mut timing_ok = true;
        if let Some(p) = &file.path {
            match check_probe_path(p.get_ref()) {
                Ok(()) => probe.path = p.get_ref().clone(),
                Err(reason) => self.bad(format!("{table}.path"), p, reason),
            }
        }
        if let Some(d) = &file.interval {
            if PROBE_INTERVALS.contains(&**d.get_ref()) {
                probe.interval = **d.get_ref();
            } else {
                self.bad_duration(format!("{table}.interval"), d, "must be 100ms to 1h");
                timing_ok = false;
            }
        }
        if let Some(d) = &file.timeout {
            if d.get_ref().is_zero() {
                self.bad_duration(format!("{table}.timeout"), d, "must be longer than 0s");
                timing_ok = false;
            } else {
                probe.timeout = **d.get_ref();
            }
        }
        if let Some(n) = &file.status
            && let Some(status) = self.integer(format!("{table}.status"), n, 100..=599)
        {
            probe.status = status as u16;
        }
        if let Some(n) = &file.rise
            && let Some(rise) = self.integer(format!("{table}.rise"), n, 1..=100)
        {
            probe.rise = rise as u32;
        }
        if let Some(n) = &file.fall
            && let Some(fall) = self.integer(format!("{table}.fall"), n, 1..=100)
        {
            probe.fall = fall as u32;
        }
        (probe, timing_ok)
    }

    /// `timeout <= interval` on a merged probe, else one problem. `layers`
    /// go from the role's table to the node's; of the two keys, the one
    /// written at the more specific level is blamed (the timeout on a tie),
    /// and the reason says where the other one's value comes from.
    fn check_timing(&mut self, probe: &Probe, layers: &[(&str, &FileProbe)]) {
        if probe.timeout <= probe.interval {
            return;
        }
        let last = |pick: fn(&FileProbe) -> Option<&FileDuration>| {
            layers
                .iter()
                .enumerate()
                .rev()
                .find_map(|(level, (table, file))| pick(file).map(|d| (level, *table, d)))
        };
        let timeout = last(|f| f.timeout.as_ref());
        let interval = last(|f| f.interval.as_ref());
        let origin = |written: Option<(usize, &str, &FileDuration)>, key: &str| match written {
            Some((_, table, _)) => format!("{table}.{key}"),
            None => "default".into(),
        };
        let level = |written: Option<(usize, &str, &FileDuration)>| written.map(|(l, _, _)| l);
        if level(timeout) >= level(interval) {
            if let Some((_, table, d)) = timeout {
                let reason = format!(
                    "must be at most the interval, {} ({})",
                    humantime::format_duration(probe.interval),
                    origin(interval, "interval")
                );
                self.bad_duration(format!("{table}.timeout"), d, &reason);
            }
        } else if let Some((_, table, d)) = interval {
            let reason = format!(
                "must be at least the timeout, {} ({})",
                humantime::format_duration(probe.timeout),
                origin(timeout, "timeout")
            );
            self.bad_duration(format!("{table}.interval"), d, &reason);
        }
    }

    fn health(&mut self, file: &FileConfig, interactive: Probe, gevent: Probe) -> Health {
        let h = &file.health;
        let when_all_down = match &h.when_all_down {
            None => WhenAllDown::Open,
            Some(w) => match w.get_ref().as_str() {
                "open" => WhenAllDown::Open,
                "closed" => WhenAllDown::Closed,
                _ => {
                    self.bad("health.when_all_down", w, "expected \"open\" or \"closed\"");
                    WhenAllDown::Open
                }
            },
        };
        let maintenance_page =
            h.maintenance_page
                .as_ref()
                .and_then(|p| match read_maintenance_page(p.get_ref()) {
                    Ok(page) => Some(page),
                    Err(reason) => {
                        self.bad("health.maintenance_page", p, &reason);
                        None
                    }
                });
        Health {
            interactive,
            gevent,
            when_all_down,
            maintenance_page,
            retry_after: self.retry_after(
                "health.retry_after",
                &h.retry_after,
                Duration::from_secs(30),
            ),
        }
    }

    fn admission(&mut self, file: &FileConfig) -> Admission {
        let a = &file.admission;
        let queue_length = match &a.queue_length {
            None => 1000,
            Some(n) if (0..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.bad(
                    "admission.queue_length",
                    n,
                    "must be 0 (no queue) to 1000000",
                );
                1000
            }
        };
        Admission {
            queue_length,
            queue_timeout: self.duration(
                "admission.queue_timeout",
                &a.queue_timeout,
                Duration::from_secs(60),
            ),
            retry_after: self.retry_after(
                "admission.retry_after",
                &a.retry_after,
                Duration::from_secs(5),
            ),
        }
    }

    /// A `Retry-After` value: whole seconds, 1s to 1 day.
    fn retry_after(&mut self, key: &str, v: &Option<FileDuration>, default: Duration) -> Duration {
        let Some(d) = v else {
            return default;
        };
        if d.get_ref().subsec_nanos() != 0 {
            self.bad_duration(
                key,
                d,
                "must be whole seconds: Retry-After is sent as a number of seconds",
            );
            default
        } else if !RETRY_AFTERS.contains(&**d.get_ref()) {
            self.bad_duration(key, d, "must be 1s to 1 day");
            default
        } else {
            **d.get_ref()
        }
    }

    fn duration(&mut self, key: &str, v: &Option<FileDuration>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(d) if **d.get_ref() > MAX_DURATION => {
                self.bad_duration(key, d, "must be at most 7 days");
                default
            }
            Some(d) if d.get_ref().is_zero() => {
                self.bad_duration(key, d, "must be longer than 0s");
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
            self.bad_duration(
                "timeouts.websocket_idle",
                d,
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
            self.bad_duration(
                "timeouts.upstream_connect",
                c,
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
            shutdown: self.duration("timeouts.shutdown", &t.shutdown, Duration::from_secs(30)),
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

/// The probe a role gets when `[health.<role>]` says nothing.
fn default_probe(role: Role) -> Probe {
    Probe {
        path: match role {
            Role::Gevent => "/websocket/health",
            Role::Interactive | Role::Cron => "/web/health",
        }
        .into(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(3),
        status: 200,
        rise: 2,
        fall: 3,
    }
}

/// A role's probe as `[health.<role>]` sets it, which its nodes'
/// `[nodes.health]` tables override.
struct RoleProbe<'f> {
    /// `health.interactive` or `health.gevent`, for problem keys.
    table: &'static str,
    file: &'f FileProbe,
    probe: Probe,
    /// Its interval and timeout were accepted (or absent), so a node's may be
    /// checked against them.
    timing_ok: bool,
}

/// Checks a probe target: an origin-form path and query, kept as written.
fn check_probe_path(text: &str) -> Result<(), &'static str> {
    if !text.starts_with('/') {
        return Err("must start with '/', such as \"/web/health\"");
    }
    // The parser stops at '#' and drops the rest; sent as written, it must
    // parse back to itself.
    match text.parse::<PathAndQuery>() {
        Ok(pq) if pq.as_str() == text => Ok(()),
        _ => Err("not a valid path and query (no spaces, no '#')"),
    }
}

/// Checks a `redirect_except` prefix: an absolute path, compared with the
/// request path, so no query.
fn check_path_prefix(text: &str) -> Result<(), &'static str> {
    if !text.starts_with('/') {
        return Err("must start with '/', such as \"/.well-known/acme-challenge/\"");
    }
    match text.parse::<PathAndQuery>() {
        Ok(pq) if pq.as_str() == text && pq.query().is_none() => Ok(()),
        _ => Err("not a valid path (no spaces, '?' or '#')"),
    }
}

/// Reads `health.maintenance_page`: a regular file of at most 1 MiB.
fn read_maintenance_page(path: &str) -> Result<Bytes, String> {
    // Checked before opening: opening a FIFO would block the load.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let too_large = |len: u64| format!("{len} bytes: a maintenance page may have at most 1 MiB");
    if meta.len() > MAX_MAINTENANCE_PAGE {
        return Err(too_large(meta.len()));
    }
    let mut page = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_MAINTENANCE_PAGE + 1).read_to_end(&mut page))
        .map_err(|e| format!("cannot be read: {e}"))?;
    // It may have grown since `metadata`.
    if page.len() as u64 > MAX_MAINTENANCE_PAGE {
        return Err(too_large(page.len() as u64));
    }
    Ok(Bytes::from(page))
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
