//! Stopping: a graceful signal, a hard one at the deadline, and the set of
//! tasks to wait for.
//!
//! At SIGTERM/SIGINT (`main.rs`), [`Lifecycle::stop`] runs with `[timeouts]
//! shutdown` as its deadline:
//!
//! * `graceful`: listeners stop accepting (new connections are refused);
//!   each client connection finishes the requests it has in flight and then
//!   closes (HTTP/2 clients get a GOAWAY); health probes and the admin API
//!   stop; each websocket tunnel finishes the frames in flight, sends both
//!   sides a close frame with 1001 (Going Away) and waits briefly for the
//!   replies (`proxy::tunnel`, at most `tunnel::CLOSE_LIMIT`).
//! * the process waits for all of that, and no longer than the deadline;
//!   idle websockets do not hold it up.
//! * `hard`, at the deadline: whatever is still open is dropped (a request
//!   still running gets no reply), and the process exits 0 all the same.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by every listener, connection and tunnel task.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// Stop accepting; finish requests in flight; close websockets with 1001
    /// (tunnels never end on their own).
    pub graceful: CancellationToken,
    /// The deadline passed: drop whatever is still open.
    pub hard: CancellationToken,
    /// Every task that holds a client connection or a tunnel.
    pub tasks: TaskTracker,
}

impl Lifecycle {
    /// Graceful stop, then a hard one after `deadline`; returns when every task ended.
    pub async fn stop(&self, deadline: std::time::Duration) {
        self.graceful.cancel();
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "connections still open at the shutdown deadline; closing them"
            );
            self.hard.cancel();
            self.tasks.wait().await;
        }
    }
}
