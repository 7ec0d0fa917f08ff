//! What a session does about migration control: the gate before work on the writer (wait
//! out a pause, follow read-only mode, refuse writes to a read-only cluster), and the move
//! to another writer: the new active cluster's after a cutover, or its own cluster's new
//! writer after a failover (see `failover.rs`).

use std::sync::Arc;

use super::backend::Backend;
use super::scan::{self, Ending};
use super::{Session, SessionError, cancel_target};
use crate::backend::postgres::{self as connector, BackendConn};
use crate::cutover::{Entry, Mode};
use crate::protocol::postgres::sqlstate;
use crate::session::failover::{MoveCause, Verdict};
use crate::sql::Class;
use crate::topology::Cluster;

impl Session {
    /// Applies the cluster's migration mode to a unit that starts a transaction on the
    /// writer: waits out a pause, keeps the writer connection's own read-only setting in
    /// step with the mode (so a write the classifier missed fails in the database too), and
    /// refuses a write to a read-only cluster. `false` when the unit was answered here.
    pub(super) async fn migration_gate(&mut self, unit: &scan::Unit) -> Result<bool, SessionError> {
        let routing = Arc::clone(&self.ctx.routing);
        let (mode, admission) = loop {
            let entry = routing.enter(&self.cluster.name, &mut self.shutdown).await;
            match entry.ok_or(SessionError::Shutdown)? {
                Entry::Admitted(mode, admission) if self.writer_verdict() == Verdict::Keep => {
                    break (mode, admission);
                }
                Entry::Admitted(_, admission) => {
                    // The writer is gone: wait for a usable one without holding up a
                    // cutover's drain, then pass the gate again. Unless only this session's
                    // connection ended: then the session ends, as the server ended it.
                    drop(admission);
                    self.end_if_only_connection().await?;
                    if !self.follow_writer(unit).await? {
                        return Ok(false);
                    }
                }
                Entry::Moved => self.follow_active().await?,
            }
        };
        let read_only = mode == Mode::ReadOnly;
        if let Some(writer) = self.writer.as_mut().filter(|w| w.read_only != read_only) {
            let sql = if read_only {
                "SET default_transaction_read_only = on"
            } else {
                "SET default_transaction_read_only = off"
            };
            if let Some(message) = writer.run_silently(sql, &mut self.scratch).await? {
                tracing::warn!(%message, "could not set the writer connection's read-only mode");
            }
            writer.read_only = read_only;
        }
        if !(read_only && unit.stmt.class == Class::Write && unit.ending == Ending::Ready) {
            self.admission = Some(admission);
            return Ok(true);
        }
        self.ctx.routing.write_refused(&self.cluster.name);
        let message = format!(
            "cannot execute a write: cluster \"{}\" is read-only for a database migration (switchyard)",
            self.cluster.name
        );
        self.answer(
            unit.end,
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            &message,
            b'I',
        )
        .await
        .map(|()| false)
    }

    /// Moves the session to the active cluster when a cutover changed it: a writer
    /// connection to the new writer with the session's SETs replayed; readers and prepared
    /// statements follow lazily. Called only between transactions. A session holding state
    /// that cannot be replayed (LISTEN, temporary tables …) ends with an error instead of
    /// staying on a fenced cluster.
    pub(super) async fn follow_active(&mut self) -> Result<(), SessionError> {
        let state = self.ctx.routing.load();
        if state.active == self.cluster.name {
            return Ok(());
        }
        let Some(cluster) = self.ctx.topology.cluster(&state.active) else {
            return Err(SessionError::Refused {
                code: sqlstate::INTERNAL_ERROR,
                message: format!("active cluster {:?} is not in the topology", state.active),
            });
        };
        self.movable(MoveCause::Cutover, &cluster.name)?;
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let conn = connector::connect(
            &cluster,
            &cluster.writer,
            &self.params,
            &self.creds,
            timeout,
        )
        .await
        .map_err(SessionError::Connect)?;
        self.install_writer(cluster, conn, MoveCause::Cutover)
            .await?;
        self.admission = None;
        Ok(())
    }

    /// Ends a session that holds state that cannot be replayed on another writer (LISTEN,
    /// temporary tables, SQL `PREPARE` …) rather than move it without that state.
    pub(super) fn movable(&self, cause: MoveCause, to: &str) -> Result<(), SessionError> {
        if !self.view.pinned_to_writer {
            return Ok(());
        }
        cause.record(&self.ctx.routing, false);
        Err(cannot_move(cause, to))
    }

    /// Makes `conn`, a connection to `cluster`'s writer, the session's writer, with the
    /// session's SETs replayed on it; prepared statements follow lazily, and the reader too
    /// when the cluster changed.
    pub(super) async fn install_writer(
        &mut self,
        cluster: Arc<Cluster>,
        conn: BackendConn,
        cause: MoveCause,
    ) -> Result<(), SessionError> {
        let mut writer = Backend::new(conn);
        if !self.sets.is_empty() {
            let sql = self.sets.join(";\n");
            if let Some(message) = writer.run_silently(&sql, &mut self.scratch).await? {
                tracing::warn!(%message, "session settings do not replay on the new writer");
                cause.record(&self.ctx.routing, false);
                return Err(cannot_move(cause, &cluster.name));
            }
        }
        tracing::debug!(from = %self.cluster.name, to = %cluster.name, writer = %cluster.writer.addr, cause = cause.as_str(), "session moved to another writer");
        self.cancel.set_target(0, cancel_target(&writer.conn));
        self.writer = Some(writer);
        if cluster.name != self.cluster.name {
            self.drop_reader(false);
        }
        self.cluster = cluster;
        cause.record(&self.ctx.routing, true);
        Ok(())
    }
}

/// The FATAL error of a session that holds state that cannot move to `to`'s writer.
fn cannot_move(cause: MoveCause, to: &str) -> SessionError {
    let message = match cause {
        MoveCause::Cutover => format!(
            "terminating connection: the database moved to cluster \"{to}\" (switchyard cutover) and this session holds state that cannot move with it; reconnect"
        ),
        MoveCause::Failover => format!(
            "terminating connection: the writer of cluster \"{to}\" changed (switchyard writer failover) and this session holds state that cannot move to the new writer; reconnect"
        ),
    };
    SessionError::Refused {
        code: sqlstate::ADMIN_SHUTDOWN,
        message,
    }
}
