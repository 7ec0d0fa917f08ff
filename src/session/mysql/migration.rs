//! What a session does about migration control: the gate before work on the writer (wait
//! out a pause, follow read-only mode, refuse writes to a read-only cluster), and the move
//! to another writer: the new active cluster's after a cutover, or its own cluster's new
//! writer after a failover (see `failover.rs`).

use std::sync::Arc;

use bytes::BytesMut;

use super::backend::Backend;
use super::error::SessionError;
use super::{Session, replay};
use crate::backend::mysql::{self as connector, MysqlConn};
use crate::cutover::{Entry, Mode};
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::COM_QUERY;
use crate::protocol::mysql::constants::{
    ER_HANDSHAKE_ERROR, ER_OPTION_PREVENTS_STATEMENT, ER_SERVER_SHUTDOWN, StatusFlags,
};
use crate::router::Target;
use crate::session::failover::{MoveCause, Verdict};
use crate::sql::{Class, Statement};
use crate::topology::Cluster;

impl Session {
    /// Applies the cluster's migration mode to a command that starts a transaction on the
    /// writer: waits out a pause, keeps the writer connection's own read-only setting in
    /// step with the mode, and refuses a write to a read-only cluster with ERR 1290.
    /// `false` when the command was answered here.
    pub(super) async fn migration_gate(&mut self, stmt: &Statement) -> Result<bool, SessionError> {
        let routing = Arc::clone(&self.ctx.routing);
        let (mode, admission) = loop {
            let entry = routing.enter(&self.cluster.name, &mut self.shutdown).await;
            match entry.ok_or(SessionError::Shutdown)? {
                Entry::Admitted(mode, admission) if self.writer_verdict() == Verdict::Keep => {
                    break (mode, admission);
                }
                Entry::Admitted(_, admission) => {
                    // The writer is gone: wait for a usable one without holding up a
                    // cutover's drain, then pass the gate again.
                    drop(admission);
                    if !self.follow_writer().await? {
                        return Ok(false);
                    }
                }
                Entry::Moved => self.follow_active().await?,
            }
        };
        let read_only = mode == Mode::ReadOnly;
        if let Some(writer) = self.writer.as_mut().filter(|w| w.read_only != read_only) {
            let sql: &[u8] = if read_only {
                b"SET SESSION TRANSACTION READ ONLY"
            } else {
                b"SET SESSION TRANSACTION READ WRITE"
            };
            let mut out = BytesMut::new();
            command::write_text_command(&mut out, COM_QUERY, sql);
            if let (_, Some(message)) = writer.run_silently(&out).await? {
                tracing::warn!(%message, "could not set the writer connection's read-only mode");
            }
            writer.read_only = read_only;
        }
        if !(read_only && stmt.class == Class::Write) {
            self.admission = Some(admission);
            return Ok(true);
        }
        self.ctx.routing.write_refused(&self.cluster.name);
        let message = format!(
            "The MySQL server is running with the --read-only option so it cannot execute this statement: cluster '{}' is read-only for a database migration (switchyard)",
            self.cluster.name
        );
        self.client
            .send_error(1, ER_OPTION_PREVENTS_STATEMENT, &message)
            .await;
        Ok(false)
    }

    /// No transaction is open on the writer (with autocommit off, the next statement
    /// opens one): where the migration gate applies and a session may move.
    pub(super) fn between_transactions(&self) -> bool {
        !self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// Moves the session to the active cluster when a cutover changed it: a writer
    /// connection to the new writer with the session's state replayed; readers and prepared
    /// statements follow lazily. Called only between transactions. A session holding state
    /// that cannot be replayed ends with an error instead of staying on a fenced cluster.
    pub(super) async fn follow_active(&mut self) -> Result<(), SessionError> {
        let state = self.ctx.routing.load();
        if state.active == self.cluster.name {
            return Ok(());
        }
        let Some(cluster) = self.ctx.topology.cluster(&state.active) else {
            return Err(SessionError::Refused {
                code: ER_HANDSHAKE_ERROR,
                message: format!("active cluster {:?} is not in the topology", state.active),
            });
        };
        self.movable(MoveCause::Cutover, &cluster.name)?;
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let conn = connector::connect(&cluster, &cluster.writer, &self.login, &self.creds, timeout)
            .await
            .map_err(SessionError::Connect)?;
        self.install_writer(cluster, conn, MoveCause::Cutover)
            .await?;
        self.admission = None;
        Ok(())
    }

    /// Ends a session that holds state that cannot be replayed on another writer (LOCK
    /// TABLES, temporary tables, `GET_LOCK` …) rather than move it without that state.
    pub(super) fn movable(&self, cause: MoveCause, to: &str) -> Result<(), SessionError> {
        if !self.view.pinned_to_writer {
            return Ok(());
        }
        cause.record(&self.ctx.routing, false);
        Err(cannot_move(cause, to))
    }

    /// Makes `conn`, a connection to `cluster`'s writer, the session's writer, with the
    /// session's state replayed on it (autocommit included); prepared statements follow
    /// lazily, and the reader too when the cluster changed.
    pub(super) async fn install_writer(
        &mut self,
        cluster: Arc<Cluster>,
        conn: MysqlConn,
        cause: MoveCause,
    ) -> Result<(), SessionError> {
        let mut writer = Backend::new(conn);
        let mut result = replay(&mut writer, &self.replays).await?;
        if result.is_ok() && !self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT) {
            let mut out = BytesMut::new();
            command::write_text_command(&mut out, COM_QUERY, b"SET autocommit = 0");
            if let (_, Some(message)) = writer.run_silently(&out).await? {
                result = Err(message);
            }
        }
        if let Err(message) = result {
            tracing::warn!(%message, "session state does not replay on the new writer");
            cause.record(&self.ctx.routing, false);
            return Err(cannot_move(cause, &cluster.name));
        }
        tracing::debug!(from = %self.cluster.name, to = %cluster.name, writer = %cluster.writer.addr, cause = cause.as_str(), "session moved to another writer");
        self.writer = Some(writer);
        self.statements.forget_backend(Target::Writer);
        if cluster.name != self.cluster.name {
            self.reader = None;
            self.statements.forget_backend(Target::Reader);
        }
        self.cluster = cluster;
        cause.record(&self.ctx.routing, true);
        Ok(())
    }
}

/// The error that ends a session holding state that cannot move to `to`'s writer.
fn cannot_move(cause: MoveCause, to: &str) -> SessionError {
    let message = match cause {
        MoveCause::Cutover => format!(
            "the database moved to cluster '{to}' (switchyard cutover) and this session holds state that cannot move with it; reconnect"
        ),
        MoveCause::Failover => format!(
            "the writer of cluster '{to}' changed (switchyard writer failover) and this session holds state that cannot move to the new writer; reconnect"
        ),
    };
    SessionError::Refused {
        code: ER_SERVER_SHUTDOWN,
        message,
    }
}
