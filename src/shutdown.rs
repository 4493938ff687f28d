//! Stopping: a graceful signal, a hard one at the deadline, and the set of
//! tasks to wait for.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by every listener, connection and tunnel task.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// Stop accepting; finish requests in flight; close tunnels (they never end on their own).
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
