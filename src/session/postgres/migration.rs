//! What a session does about migration control: the gate before work on the writer (wait
//! out a pause, follow read-only mode, refuse writes to a read-only cluster) and the move to
//! a new active cluster after a cutover.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::backend::Backend;
use super::scan::{self, Ending};
use super::{Session, SessionError, cancel_target};
use crate::cutover::{Entry, Mode};
use crate::metrics;
use crate::pool::postgres as pool;
use crate::protocol::postgres::messages::{self, Severity};
use crate::protocol::postgres::sqlstate;
use crate::sql::Class;

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
                Entry::Admitted(mode, admission) => break (mode, admission),
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
        metrics::write_refused(&self.cluster.name);
        let mut out = BytesMut::new();
        let message = format!(
            "cannot execute a write: cluster \"{}\" is read-only for a database migration (switchyard)",
            self.cluster.name
        );
        messages::error_response(
            &mut out,
            Severity::Error,
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            &message,
        );
        messages::ready_for_query(&mut out, b'I');
        self.client.buf.advance(unit.end);
        self.client
            .stream
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)
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
        let moved = || SessionError::Refused {
            code: sqlstate::ADMIN_SHUTDOWN,
            message: format!(
                "terminating connection: the database moved to cluster \"{}\" (switchyard cutover) and this session holds state that cannot move with it; reconnect",
                state.active
            ),
        };
        if self.view.pinned_to_writer {
            metrics::session_moved(false);
            return Err(moved());
        }
        let timeout = self.ctx.config.raw.server.connect_timeout;
        let conn = pool::connect(
            &cluster,
            &cluster.writer,
            &self.params,
            &self.creds,
            timeout,
        )
        .await
        .map_err(SessionError::Connect)?;
        let mut writer = Backend::new(conn);
        if !self.sets.is_empty() {
            let sql = self.sets.join(";\n");
            if let Some(message) = writer.run_silently(&sql, &mut self.scratch).await? {
                tracing::warn!(%message, "session settings do not replay on the new writer");
                metrics::session_moved(false);
                return Err(moved());
            }
        }
        tracing::debug!(from = %self.cluster.name, to = %cluster.name, "session moved to the active cluster");
        self.cancel.set_target(0, cancel_target(&writer.conn));
        self.writer = Some(writer);
        self.drop_reader(false);
        self.cluster = cluster;
        self.admission = None;
        metrics::session_moved(true);
        Ok(())
    }
}
