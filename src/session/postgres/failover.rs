//! Writer failover in a PostgreSQL session. Between transactions, work for a writer that is
//! gone waits for a usable one (`failover_timeout`) and moves there, with no error; past the
//! timeout it fails with `57P03`. Work whose writer died under it fails with `08007`
//! (outcome unknown: it may have committed) or `40001` (a transaction rolled back, none of
//! it committed), then ReadyForQuery, and the session goes on. A client left in a failed
//! transaction ('E') gets its new writer connection in the same state, so that the server
//! itself answers what follows as in any failed transaction: `25P02` until ROLLBACK, and a
//! COMMIT answered ROLLBACK.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::exchange::Failed;
use super::scan::Unit;
use super::{Session, SessionError};
use crate::pool::postgres::{self as pool, BackendConn, ConnectError};
use crate::protocol::postgres::messages::{self, Severity};
use crate::protocol::postgres::sqlstate;
use crate::session::failover::{self, Loss, MoveCause, Verdict, WaitError};
use crate::sql::Class;
use crate::topology::Cluster;

/// Puts a new writer connection into a failed transaction, as the client's is: BEGIN, then
/// a statement that fails and says why in the server's log.
const FAILED_TRANSACTION: &str =
    "BEGIN; SELECT 'switchyard: transaction lost in a writer failover; awaiting ROLLBACK'::int";

impl Session {
    /// The verdict on the writer connection the session holds, against the cluster's
    /// current snapshot: one atomic load, and a read that does not wait.
    pub(super) fn writer_verdict(&mut self) -> Verdict {
        self.ctx.topology.refresh(&mut self.cluster);
        let Some(writer) = self.writer.as_mut() else {
            return Verdict::Move;
        };
        let closed = writer.closed();
        failover::verdict(Some(&writer.conn.instance), closed, &self.cluster.writer)
    }

    /// Moves the session, between transactions, to its cluster's writer once one is usable.
    /// `false` when `unit` was answered here instead: no usable writer within
    /// `failover_timeout`.
    pub(super) async fn follow_writer(&mut self, unit: &Unit) -> Result<bool, SessionError> {
        self.movable(MoveCause::Failover, &self.cluster.name)?;
        self.drop_writer();
        self.admission = None;
        match self.connect_writer().await {
            Ok((cluster, conn)) => {
                self.install_writer(cluster, conn, MoveCause::Failover)
                    .await?;
                Ok(true)
            }
            Err(e) => self.timed_out(unit, e, b'I').await.map(|()| false),
        }
    }

    /// Before work in a transaction on the writer; `false` when `unit` was answered here. A
    /// writer connection found closed before anything was sent: the transaction is lost
    /// (`40001`, the client is left in a failed transaction). A client in such a failed
    /// transaction: a new writer connection in the same state, once a writer is usable.
    pub(super) async fn writer_in_transaction(
        &mut self,
        unit: &Unit,
    ) -> Result<bool, SessionError> {
        if let Some(writer) = self.writer.as_mut() {
            if !writer.closed() {
                return Ok(true);
            }
            let addr = writer.conn.instance.addr.clone();
            self.drop_writer();
            failover::report_loss(&self.cluster.name, Loss::RolledBack, &addr);
            let message = Loss::RolledBack.message(&self.cluster.name);
            if self.view.pinned_to_writer {
                let code = sqlstate::SERIALIZATION_FAILURE;
                return Err(SessionError::Failover { code, message });
            }
            self.answer(unit.end, sqlstate::SERIALIZATION_FAILURE, &message, b'E')
                .await?;
            return Ok(false);
        }
        self.movable(MoveCause::Failover, &self.cluster.name)?;
        let (cluster, conn) = match self.connect_writer().await {
            Ok(connected) => connected,
            Err(e) => return self.timed_out(unit, e, b'E').await.map(|()| false),
        };
        self.install_writer(cluster, conn, MoveCause::Failover)
            .await?;
        if let Some(writer) = self.writer.as_mut() {
            let failed = writer
                .run_silently(FAILED_TRANSACTION, &mut self.scratch)
                .await?;
            if failed.is_none() {
                tracing::warn!("the failed transaction could not be set up on the new writer");
            }
        }
        Ok(true)
    }

    /// After work on the writer failed: a backend that died under it costs the client this
    /// work (an ErrorResponse naming the loss, then ReadyForQuery) and the session goes on
    /// without a writer until its next work for one. Where the protocol cannot take an
    /// error now (a COPY or an open batch under way, a message cut), the session ends.
    pub(super) async fn writer_failed(
        &mut self,
        unit: &Unit,
        failed: Failed,
        open: bool,
    ) -> Result<(), SessionError> {
        if !matches!(
            failed.error,
            SessionError::BackendLost { .. } | SessionError::BackendProtocol { .. }
        ) {
            return Err(failed.error);
        }
        let addr = self
            .writer
            .as_ref()
            .map(|w| w.conn.instance.addr.clone())
            .unwrap_or_default();
        self.drop_writer();
        // PostgreSQL commits only at COMMIT (its DDL too); one statement inside a
        // transaction that is not COMMIT cannot have committed anything.
        let ends = unit.stmt.class == Class::End;
        let may_commit = ends || unit.stmt.count != 1;
        let loss = Loss::of(open, true, may_commit);
        failover::report_loss(&self.cluster.name, loss, &addr);
        tracing::debug!(error = %crate::session::chain(&failed.error), "writer lost");
        let code = match loss {
            Loss::RolledBack => sqlstate::SERIALIZATION_FAILURE,
            Loss::Nothing | Loss::OutcomeUnknown => sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
        };
        let message = loss.message(&self.cluster.name);
        // A pinned session's state (LISTEN, temporary tables …) died with the writer.
        if !failed.resumable || self.view.pinned_to_writer {
            return Err(SessionError::Failover { code, message });
        }
        // A transaction left open stays open, failed, until the client ends it.
        let closes = ends && unit.stmt.count == 1;
        let status = if open && !closes {
            b'E'
        } else {
            self.view.in_transaction = None;
            self.admission = None;
            b'I'
        };
        self.answer(failed.held, code, &message, status).await
    }

    /// Answers work here with an ErrorResponse and ReadyForQuery(`status`), dropping its
    /// `len` bytes from the client buffer.
    pub(super) async fn answer(
        &mut self,
        len: usize,
        code: &str,
        message: &str,
        status: u8,
    ) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        messages::error_response(&mut out, Severity::Error, code, message);
        messages::ready_for_query(&mut out, status);
        self.client.buf.advance(len);
        self.client
            .stream
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)
    }

    /// No usable writer in time: `unit` fails with `57P03` and did not run.
    async fn timed_out(
        &mut self,
        unit: &Unit,
        e: WaitError,
        status: u8,
    ) -> Result<(), SessionError> {
        if let WaitError::Shutdown = e {
            return Err(SessionError::Shutdown);
        }
        e.report();
        self.answer(
            unit.end,
            sqlstate::CANNOT_CONNECT_NOW,
            &e.to_string(),
            status,
        )
        .await
    }

    /// The session's first writer connection: to the cluster's writer, or, while the
    /// topology shows no usable writer (a failover under way), to the next one once it is
    /// usable, within `failover_timeout`.
    pub(super) async fn first_writer(
        &mut self,
    ) -> Result<Result<BackendConn, ConnectError>, SessionError> {
        let writer = Arc::clone(&self.cluster.writer);
        if writer.load.status().is_usable() {
            return Ok(self.connect(&writer).await);
        }
        match self.connect_writer().await {
            Ok((cluster, conn)) => {
                self.cluster = cluster;
                Ok(Ok(conn))
            }
            Err(WaitError::Shutdown) => Err(SessionError::Shutdown),
            Err(e) => {
                e.report();
                let code = sqlstate::CANNOT_CONNECT_NOW;
                Err(SessionError::Failover {
                    code,
                    message: e.to_string(),
                })
            }
        }
    }

    /// Waits for the cluster's writer to be usable and connects to it (see
    /// [`failover::connect_writer`]).
    pub(super) async fn connect_writer(
        &mut self,
    ) -> Result<(Arc<Cluster>, BackendConn), WaitError> {
        let timeout = failover::timeout(&self.ctx.config, &self.cluster.name);
        let connect_timeout = self.ctx.config.raw.server.connect_timeout;
        let (params, creds) = (&self.params, &self.creds);
        failover::connect_writer(
            &self.ctx.topology,
            Arc::clone(&self.cluster),
            timeout,
            connect_timeout,
            &mut self.shutdown,
            |cluster: Arc<Cluster>, t| async move {
                pool::connect(&cluster, &cluster.writer, params, creds, t).await
            },
        )
        .await
    }

    fn drop_writer(&mut self) {
        self.writer = None;
        self.cancel.set_target(0, None);
    }
}
