//! Telling systemd how the service is doing: the `sd_notify` protocol.
//!
//! Under `Type=notify` (or `Type=notify-reload`) systemd passes a datagram
//! socket in `$NOTIFY_SOCKET` and waits for `READY=1` before it considers the
//! unit started. `odoo-edge run` sends:
//!
//! * `READY=1` once every listener is bound (and the signal handlers are in
//!   place, since from then on systemd may signal the process), with a
//!   `STATUS=serving N listener(s): ...` line;
//! * on SIGHUP, `RELOADING=1` with `MONOTONIC_USEC=` (the `CLOCK_MONOTONIC`
//!   time in µs, which `Type=notify-reload` requires to match the reload to
//!   its request) before reading the file, then `READY=1` when done, also when
//!   the file was refused: the running configuration stays and keeps serving.
//!   `STATUS=` says what the reload did (`reload refused: ...`);
//! * `STOPPING=1` when SIGINT or SIGTERM starts the graceful stop.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call
//! does nothing. A notification that cannot be sent is logged at debug level
//! and otherwise ignored: the edge serves the same with or without systemd.
//! `$NOTIFY_SOCKET` may be a path or, as systemd allows, an abstract socket
//! name written with a leading `@` (Linux only).
//!
//! `config/odoo-edge.service` is a unit that uses this.

use std::ffi::OsStr;
use std::io;

/// How long a notification may block when systemd's socket queue is full.
/// libsystemd blocks without limit; the edge would rather lose a status line
/// than stall a runtime thread.
#[cfg(unix)]
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `state` (one or more `KEY=value` lines) to `$NOTIFY_SOCKET`, if set.
/// Never fails: errors are logged at debug level.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::debug!(cause = %e, socket = ?socket, state, "cannot notify systemd");
    }
}

/// Startup or a reload is complete: `READY=1`.
pub fn ready() {
    notify("READY=1");
}

/// A reload starts: `RELOADING=1` with `MONOTONIC_USEC=`, in one datagram.
pub fn reloading() {
    notify(&reloading_message(monotonic_usec()));
}

/// The graceful stop starts: `STOPPING=1`.
pub fn stopping() {
    notify("STOPPING=1");
}

/// A free-form status line for `systemctl status`: `STATUS=<text>`. Line
/// breaks (multi-line config errors) become spaces, since a newline would end
/// the field.
pub fn status(text: &str) {
    notify(&status_message(text));
}

/// The `RELOADING=1` message for a reload that started at `usec` on
/// `CLOCK_MONOTONIC`.
pub fn reloading_message(usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// The `STATUS=` message for `text`, on one line.
pub fn status_message(text: &str) -> String {
    let line: Vec<&str> = text.split_whitespace().collect();
    format!("STATUS={}", line.join(" "))
}

/// Sends one datagram holding `state` to `socket`: a path, or `@name` for an
/// abstract socket.
#[cfg(unix)]
pub fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::UnixDatagram;

    let unbound = UnixDatagram::unbound()?;
    unbound.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = match socket.as_bytes() {
        [b'/', ..] => unbound.send_to(state.as_bytes(), socket)?,
        [b'@', name @ ..] => send_abstract(&unbound, name, state)?,
        // systemd ≥ 254 also accepts `vsock:` addresses (for VMs); the edge
        // does not run there.
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
            ));
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

/// Not unix: there is no systemd to tell.
#[cfg(not(unix))]
pub fn send(_socket: &OsStr, _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sd_notify needs unix sockets",
    ))
}

#[cfg(target_os = "linux")]
fn send_abstract(
    unbound: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    state: &str,
) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    unbound.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn send_abstract(
    _unbound: &std::os::unix::net::UnixDatagram,
    _name: &[u8],
    _state: &str,
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// Now on `CLOCK_MONOTONIC`, in µs: the clock systemd compares
/// `MONOTONIC_USEC=` with. (`std::time::Instant` reads the same clock on Linux
/// but does not expose its value.)
#[cfg(unix)]
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists, so the call cannot fail (it would leave `now` at zero if it did).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    secs * 1_000_000 + micros
}

/// Not unix: no monotonic clock value to report.
#[cfg(not(unix))]
pub fn monotonic_usec() -> u64 {
    0
}
