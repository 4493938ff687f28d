//! Which pool a request belongs to, from its path alone. Pure: no I/O, no state.

use crate::config::Role;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The gevent pool: `/websocket`, `/websocket/...`, `/longpolling`, `/longpolling/...`.
    Bus,
    /// The interactive pool: everything else.
    Interactive,
}

impl Route {
    /// The node role that serves this route when the cluster has one.
    pub fn role(self) -> Role {
        match self {
            Route::Bus => Role::Gevent,
            Route::Interactive => Role::Interactive,
        }
    }
}

/// Routes a request path (without query).
///
/// `/websocket/*` JSON routes (peek_notifications, update_bus_presence) go to
/// the gevent pool too: the evented process serves every route, and Odoo's docs
/// say "paths starting with /websocket/".
pub fn route(path: &str) -> Route {
    if has_prefix_segment(path, "/websocket") || has_prefix_segment(path, "/longpolling") {
        Route::Bus
    } else {
        Route::Interactive
    }
}

/// `path` is `prefix` or starts with `prefix/`.
fn has_prefix_segment(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_paths_go_to_gevent_and_lookalikes_do_not() {
        for p in [
            "/websocket",
            "/websocket/",
            "/websocket/health",
            "/websocket/peek_notifications",
            "/longpolling/poll",
            "/longpolling",
        ] {
            assert_eq!(route(p), Route::Bus, "{p}");
        }
        for p in [
            "/",
            "/web",
            "/websocketx",
            "/web/websocket",
            "/longpollingx/poll",
            "/web/health",
        ] {
            assert_eq!(route(p), Route::Interactive, "{p}");
        }
    }
}
