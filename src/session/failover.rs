//! Writer failover as a session sees it, the same for both protocols: whether the writer
//! connection it holds may still be used, what losing the writer cost the client, and the
//! wait for a usable writer (a promoted replica, or the old writer back) within the
//! cluster's `failover_timeout`. The protocol modules turn these into wire errors.
//!
//! A failover moves a session to another writer the way a cutover does (its session state
//! replayed there); a session moves only between transactions, and never re-sends work
//! whose outcome it does not know.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{DEFAULT_FAILOVER_TIMEOUT, Validated};
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::topology::{Cluster, Instance, TopologyHandle};

/// How often a waiting session looks at the topology again. Health checks and discovery
/// publish through atomics and snapshots, with nothing to wake on; only waiting sessions
/// look, and a look is one atomic load.
const POLL: Duration = Duration::from_millis(50);
/// How long a writer that refused a connection is skipped by every waiting session, so
/// that they do not all hammer a server that is down.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Why a session takes another writer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveCause {
    /// A cutover made another cluster active.
    Cutover,
    /// The session's cluster has another writer, or its writer connection is gone.
    Failover,
}

impl MoveCause {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveCause::Cutover => "cutover",
            MoveCause::Failover => "failover",
        }
    }

    /// Counts a session that moved (`moved`) or was ended instead; one ended by a cutover
    /// is in the cutover's report as aborted.
    pub fn record(self, routing: &crate::cutover::Routing, moved: bool) {
        crate::metrics::session_moved(self.as_str(), moved);
        if self == MoveCause::Cutover && !moved {
            routing.session_ended();
        }
    }
}

/// What a session does with the writer connection it holds before it sends work to it
/// between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Open, and to the cluster's usable writer: use it.
    Keep,
    /// Take a connection to the cluster's writer, waiting until one is usable.
    Move,
}

/// The verdict on the connection to `held` (`None`: it was lost), `closed` when the server
/// has closed it, given that the topology names `writer` as the cluster's writer. A
/// connection is left when its server closed it, when the topology names another writer
/// (a promoted replica), or when health checks no longer find its writer usable (down, or
/// retired by discovery).
pub fn verdict(held: Option<&Arc<Instance>>, closed: bool, writer: &Arc<Instance>) -> Verdict {
    match held {
        Some(h) if !closed && Arc::ptr_eq(h, writer) && h.load.status().is_usable() => {
            Verdict::Keep
        }
        _ => Verdict::Move,
    }
}

/// What ended a session's writer connection, as far as the session can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Only this connection: the writer is up and still the cluster's writer, and the
    /// server ended this session (terminated by an administrator — `pg_terminate_backend`,
    /// `KILL` —, an idle timeout …). The session ends as a direct client's would.
    Connection,
    /// The writer itself failed or changed: the failover path.
    Writer,
}

/// Judges a writer connection to `held` that ended (found closed, or failed under work),
/// the same for both protocols. The rule: the writer failed unless the topology (refreshed
/// into `cluster`) still names `held` as the cluster's writer and health checks find it
/// usable, and a new connection to it (`probe`, given the refreshed cluster; it should
/// take at most `connect_timeout`) succeeds. Health checks see a failed writer only after
/// their interval and thresholds; the probe sees it at once: a writer killed refuses the
/// connection, one shutting down or recovering refuses the login.
pub async fn judge_end<C, E, F: Future<Output = Result<C, E>>>(
    topology: &TopologyHandle,
    cluster: &mut Arc<Cluster>,
    held: &Arc<Instance>,
    probe: impl FnOnce(Arc<Cluster>) -> F,
) -> Ended {
    topology.refresh(cluster);
    if verdict(Some(held), false, &cluster.writer) == Verdict::Move {
        return Ended::Writer;
    }
    match probe(Arc::clone(cluster)).await {
        Ok(_) => Ended::Connection,
        Err(_) => Ended::Writer,
    }
}

/// What losing the writer cost the client's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing: no transaction was open and nothing was sent. The work waits for a writer.
    Nothing,
    /// The client's open transaction is gone and none of it was committed: running the
    /// whole transaction again is safe.
    RolledBack,
    /// Work was sent and the writer died before it answered: it may or may not have
    /// committed. The proxy never sends it again.
    OutcomeUnknown,
}

impl Loss {
    /// The loss when the writer died: `open`, a transaction was open on it before this work;
    /// `sent`, the work went out to it; `may_commit`, the work can commit by itself (it
    /// ends a transaction, holds several statements, or may commit implicitly as MySQL's
    /// DDL does). Work sent outside a transaction runs in autocommit: it may have committed.
    pub fn of(open: bool, sent: bool, may_commit: bool) -> Loss {
        match (open, sent) {
            (false, false) => Loss::Nothing,
            (true, false) => Loss::RolledBack,
            (true, true) if !may_commit => Loss::RolledBack,
            (_, true) => Loss::OutcomeUnknown,
        }
    }

    /// The `kind` label of `switchyard_failover_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::Nothing => "none",
            Loss::RolledBack => "rolled_back",
            Loss::OutcomeUnknown => "outcome_unknown",
        }
    }

    /// What the client is told, naming `cluster`.
    pub fn message(self, cluster: &str) -> String {
        match self {
            Loss::Nothing => {
                format!("the writer of cluster \"{cluster}\" changed (switchyard writer failover)")
            }
            Loss::RolledBack => format!(
                "the writer of cluster \"{cluster}\" failed (switchyard writer failover): this transaction was rolled back and none of it was committed; run it again"
            ),
            Loss::OutcomeUnknown => format!(
                "the writer of cluster \"{cluster}\" failed while this statement ran (switchyard writer failover): it may or may not have been committed; check before running it again"
            ),
        }
    }
}

/// The `failover_timeout` of cluster `name`.
pub fn timeout(config: &Validated, name: &str) -> Duration {
    config
        .raw
        .clusters
        .get(name)
        .map_or(DEFAULT_FAILOVER_TIMEOUT, |c| c.failover_timeout)
}

/// Records a statement failed by a failover, and says so in the log.
pub fn report_loss(cluster: &str, loss: Loss, writer: &str) {
    metrics::failover_error(cluster, loss.as_str());
    tracing::warn!(%cluster, %writer, loss = loss.as_str(), "the writer was lost under a session's work");
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(
        "no usable writer for cluster \"{cluster}\" within failover_timeout {} (switchyard writer failover); the statement did not run{}",
        humantime::format_duration(*timeout),
        last.as_ref().map(|l| format!(" (last attempt: {l})")).unwrap_or_default()
    )]
    Timeout {
        cluster: String,
        timeout: Duration,
        last: Option<String>,
    },
    #[error("switchyard is shutting down")]
    Shutdown,
    /// Another client ended the session while it waited (`KILL`, `pg_terminate_backend`).
    #[error("the session was ended by another client")]
    Killed,
}

impl WaitError {
    /// Records a timeout (the statement fails) and logs it.
    pub fn report(&self) {
        if let WaitError::Timeout { cluster, .. } = self {
            metrics::failover_error(cluster, "timeout");
            tracing::warn!(error = %self, "a session gave up waiting for a writer");
        }
    }
}

/// A session's wait for a usable writer: where it looks, for how long, and its shutdown.
pub struct WriterWait<'a> {
    topology: &'a TopologyHandle,
    timeout: Duration,
    connect_timeout: Duration,
    shutdown: &'a mut Shutdown,
}

impl<'a> WriterWait<'a> {
    /// The wait of a session on `cluster`, with the cluster's `failover_timeout` in
    /// `config`.
    pub fn new(
        topology: &'a TopologyHandle,
        config: &Validated,
        cluster: &str,
        shutdown: &'a mut Shutdown,
    ) -> WriterWait<'a> {
        WriterWait {
            topology,
            timeout: timeout(config, cluster),
            connect_timeout: config.raw.server.connect_timeout,
            shutdown,
        }
    }

    /// Waits until `cluster` (refreshed from the topology) has a usable writer and `connect`
    /// opens a connection to it, for at most `failover_timeout`; a writer that refuses the
    /// connection (not promoted yet, or the old one still down) is tried again until then.
    /// With `first` (a session's first connection), a writer the topology shows usable is
    /// connected to at once and the outcome returned as it is, success or not. Returns the
    /// snapshot whose writer it connected to, and the outcome. `connect` gets the time it
    /// may take: `connect_timeout`, or less near the end. An error `busy` says is not the
    /// writer's (its pool stayed full, or the server refused the login) is returned at once, the
    /// writer left as it is.
    pub async fn connect<C, E: std::error::Error, F: Future<Output = Result<C, E>>>(
        self,
        mut cluster: Arc<Cluster>,
        first: bool,
        mut connect: impl FnMut(Arc<Cluster>, Duration) -> F,
        busy: impl Fn(&E) -> bool,
    ) -> Result<(Arc<Cluster>, Result<C, E>), WaitError> {
        if first && cluster.writer.load.status().is_usable() {
            let outcome = connect(Arc::clone(&cluster), self.connect_timeout).await;
            return Ok((cluster, outcome));
        }
        // Counted as waiting only once it does wait: in transaction mode every transaction
        // passes here, and a usable writer is connected to at once.
        let mut waiting = None;
        let deadline = Instant::now() + self.timeout;
        let mut last = None;
        loop {
            self.topology.refresh(&mut cluster);
            let now = Instant::now();
            let writer = Arc::clone(&cluster.writer);
            if writer.load.status().is_usable() && !writer.load.is_down(now) {
                let left = deadline.saturating_duration_since(now);
                match connect(Arc::clone(&cluster), self.connect_timeout.min(left)).await {
                    Ok(conn) => return Ok((cluster, Ok(conn))),
                    Err(e) if busy(&e) => return Ok((cluster, Err(e))),
                    Err(e) => {
                        tracing::debug!(writer = %writer.addr, error = %crate::error::chain(&e), "writer not reachable yet");
                        writer.load.mark_down(Instant::now(), RETRY_AFTER);
                        last = Some(crate::error::chain(&e));
                    }
                }
            }
            waiting.get_or_insert_with(|| metrics::waiting_for_writer(&cluster.name));
            let now = Instant::now();
            if now >= deadline {
                // Never connected: say why the topology's writer is not usable.
                let last = last.or_else(|| {
                    let w = &cluster.writer;
                    w.load
                        .problem()
                        .map(|p| format!("health check of {}: {p}", w.addr))
                });
                return Err(WaitError::Timeout {
                    cluster: cluster.name.clone(),
                    timeout: self.timeout,
                    last,
                });
            }
            tokio::select! {
                _ = self.shutdown.recv() => return Err(WaitError::Shutdown),
                _ = tokio::time::sleep(POLL.min(deadline - now)) => {}
            }
        }
    }
}

/// The verdict on a session's writer connection (`held`: whether its server closed it, and
/// its instance; `None` when it was lost) against `cluster` refreshed from `topology`.
pub fn check(
    topology: &TopologyHandle,
    cluster: &mut Arc<Cluster>,
    held: Option<(bool, Arc<Instance>)>,
) -> Verdict {
    topology.refresh(cluster);
    match held {
        Some((closed, instance)) => verdict(Some(&instance), closed, &cluster.writer),
        None => Verdict::Move,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Role, Status};

    fn instance(addr: &str, status: Status) -> Arc<Instance> {
        Arc::new(Instance::new("c", addr, addr, 1, Role::Writer, status))
    }

    #[test]
    fn a_writer_connection_is_kept_only_while_it_is_the_usable_writer() {
        let writer = instance("w", Status::Healthy);
        let promoted = instance("r", Status::Joining);
        let down = instance("d", Status::Unhealthy);
        let retired = instance("x", Status::Retired);
        let table = [
            (Some(&writer), false, &writer, Verdict::Keep),
            (Some(&writer), true, &writer, Verdict::Move),
            (None, false, &writer, Verdict::Move),
            (Some(&writer), false, &promoted, Verdict::Move),
            (Some(&down), false, &down, Verdict::Move),
            (Some(&retired), false, &retired, Verdict::Move),
        ];
        for (held, closed, current, want) in table {
            let got = verdict(held, closed, current);
            assert_eq!(
                got,
                want,
                "held {:?} closed {closed}",
                held.map(|h| &h.addr)
            );
        }
    }

    #[tokio::test]
    async fn only_a_connection_ended_while_its_writer_stays_up_and_takes_a_new_one() {
        use crate::config::BackendTlsMode;
        use crate::topology::{ReadPolicy, Topology};
        let cluster = |writer: &Arc<Instance>| {
            Arc::new(Cluster {
                superseded: Default::default(),
                name: "c".into(),
                writer: Arc::clone(writer),
                readers: Vec::new(),
                tls_mode: BackendTlsMode::Disable,
                tls: None,
                policy: Arc::new(ReadPolicy::default()),
            })
        };
        let writer = instance("w", Status::Healthy);
        let promoted = instance("r", Status::Healthy);
        let down = instance("d", Status::Unhealthy);
        // (held, the topology's writer, the probe connects) → judged
        let table = [
            (&writer, &writer, true, Ended::Connection),
            (&writer, &writer, false, Ended::Writer),
            (&writer, &promoted, true, Ended::Writer),
            (&down, &down, true, Ended::Writer),
        ];
        for (held, now, connects, want) in table {
            // The session took its view from the topology before the one published now.
            let mut session_view = cluster(held);
            let topology = TopologyHandle::new(Topology {
                clusters: [("c".to_owned(), Arc::clone(&session_view))].into(),
            });
            let published = cluster(now);
            topology.publish(Topology {
                clusters: [("c".to_owned(), Arc::clone(&published))].into(),
            });
            let probe = |c: Arc<Cluster>| async move {
                assert!(Arc::ptr_eq(&c.writer, held), "probes the held instance");
                if connects {
                    Ok(())
                } else {
                    Err(std::fmt::Error)
                }
            };
            let got = judge_end(&topology, &mut session_view, held, probe).await;
            assert_eq!(
                got, want,
                "held {} writer {} connects {connects}",
                held.addr, now.addr
            );
            assert!(
                Arc::ptr_eq(&session_view, &published),
                "the cluster is refreshed"
            );
        }
    }

    #[test]
    fn a_loss_is_unknown_whenever_the_work_may_have_committed() {
        use Loss::*;
        // (open, sent, may_commit) → loss
        let table = [
            ((false, false, false), Nothing),
            ((false, false, true), Nothing),
            ((true, false, false), RolledBack),
            ((true, false, true), RolledBack),
            ((true, true, false), RolledBack),
            ((true, true, true), OutcomeUnknown),
            ((false, true, false), OutcomeUnknown),
            ((false, true, true), OutcomeUnknown),
        ];
        for ((open, sent, may_commit), want) in table {
            assert_eq!(
                Loss::of(open, sent, may_commit),
                want,
                "open {open} sent {sent} may_commit {may_commit}"
            );
        }
    }

    #[test]
    fn the_timeout_says_what_did_not_happen() {
        let e = WaitError::Timeout {
            cluster: "main".into(),
            timeout: Duration::from_secs(30),
            last: Some("connect to 10.0.0.1:5432".into()),
        };
        assert_eq!(
            e.to_string(),
            "no usable writer for cluster \"main\" within failover_timeout 30s (switchyard writer failover); the statement did not run (last attempt: connect to 10.0.0.1:5432)"
        );
    }
}
