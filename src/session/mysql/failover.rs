//! Writer failover in a MySQL session. Between transactions, work for a writer that is gone
//! waits for a usable one (`failover_timeout`) and moves there, with no error; past the
//! timeout it fails with ERR 1927. A statement whose writer died under it fails with ERR
//! 1053 (outcome unknown); a transaction whose writer connection closed before the next
//! statement was sent fails with ERR 1213 (rolled back). The session goes on after the ERR,
//! outside any transaction, as after those errors from a server.
//!
//! Only when the writer really failed, though: a writer connection the server ended by
//! itself (`KILL`, `wait_timeout`) while the writer stays up — the topology still finds it
//! the usable writer, and it takes a new login — ends the client's connection the way the
//! server ended it, with the server's last ERR relayed if it left one.
//!
//! Why these codes: they are what MariaDB and MySQL themselves say in the same situations,
//! so drivers already do the right thing with them. A server that goes away answers a
//! statement it was running with 1053 `ER_SERVER_SHUTDOWN` (SQLSTATE 08S01, a
//! communication failure: the outcome is unknown, and no driver re-runs it), and tells
//! idle connections 1927 `ER_CONNECTION_KILLED` (nothing of theirs was running: here, the
//! statement did not run). 1213 `ER_LOCK_DEADLOCK` (40001) is the error after which the
//! server has rolled the whole transaction back and the session is outside a transaction;
//! drivers and frameworks run the transaction again on it (Galera clusters use it the same
//! way for transactions the cluster rolled back).

use std::sync::Arc;

use bytes::BytesMut;

use super::backend::Relayed;
use super::{Session, SessionError};
use crate::backend::mysql::{self as connector, ConnectError, MysqlConn};
use crate::protocol::mysql::command::Command;
use crate::protocol::mysql::constants::{
    ER_CONNECTION_KILLED, ER_LOCK_DEADLOCK, ER_SERVER_SHUTDOWN, StatusFlags,
};
use crate::protocol::mysql::packet;
use crate::router::Target;
use crate::session::failover::{self, Loss, MoveCause, Verdict, WaitError, WriterWait};
use crate::topology::{Cluster, Instance};

impl Session {
    /// The verdict on the writer connection the session holds, against the cluster's
    /// current snapshot: one atomic load, and a read that does not wait.
    pub(super) fn writer_verdict(&mut self) -> Verdict {
        let held = (self.writer.as_mut()).map(|w| (w.closed(), Arc::clone(&w.conn.instance)));
        failover::check(&self.ctx.topology, &mut self.cluster, held)
    }

    /// Before a command. A writer connection the server ended alone ends the session (see
    /// [`Session::end_if_alone`]). In a transaction whose writer connection closed with its
    /// writer: the transaction is lost, and the command is answered with ERR 1213 before
    /// anything is sent. A session
    /// whose writer was lost takes a new one first, for the commands that do not pass the
    /// migration gate (which does that for the others, and lets reads go to a reader).
    /// `false` when the command was answered here.
    pub(super) async fn before_command(&mut self, cmd: &Command<'_>) -> Result<bool, SessionError> {
        use Command::*;
        match cmd {
            // No response is expected (or it reconnects anyway).
            Quit | StmtClose { .. } | StmtSendLongData { .. } | ChangeUser { .. } => {
                return Ok(true);
            }
            _ => {}
        }
        if let Some(writer) = self.writer.as_mut()
            && writer.closed()
        {
            let held = Arc::clone(&writer.conn.instance);
            if let Some(ended) = self.end_if_alone(&held).await {
                return Err(ended);
            }
        }
        if matches!(cmd, Ping) {
            // The proxy answers it.
            return Ok(true);
        }
        if !self.between_transactions() && self.view.in_transaction == Some(Target::Writer) {
            let Some(writer) = self.writer.as_mut() else {
                return Ok(true);
            };
            if !writer.closed() {
                return Ok(true);
            }
            let addr = writer.conn.instance.addr.clone();
            self.drop_writer();
            self.forget_transaction();
            failover::report_loss(&self.cluster.name, Loss::RolledBack, &addr);
            let message = Loss::RolledBack.message(&self.cluster.name);
            if self.view.pinned_to_writer {
                let code = ER_LOCK_DEADLOCK;
                return Err(SessionError::Failover { code, message });
            }
            self.client.send_error(1, ER_LOCK_DEADLOCK, &message).await;
            return Ok(false);
        }
        let gated = matches!(
            cmd,
            Query { .. }
                | InitDb { .. }
                | SetOption { .. }
                | FieldList { .. }
                | StmtPrepare { .. }
                | StmtExecute { .. }
        );
        if self.writer.is_none() && !gated {
            return self.follow_writer().await;
        }
        Ok(true)
    }

    /// Moves the session, between transactions, to its cluster's writer once one is usable.
    /// `false` when the command was answered here instead: no usable writer within
    /// `failover_timeout` (ERR 1927; the command did not run).
    pub(super) async fn follow_writer(&mut self) -> Result<bool, SessionError> {
        self.movable(MoveCause::Failover, &self.cluster.name)?;
        self.drop_writer();
        self.admission = None;
        match self.connect_writer(false).await {
            Ok((cluster, Ok(conn))) => {
                self.install_writer(cluster, conn, MoveCause::Failover)
                    .await?;
                Ok(true)
            }
            // Only a first connection is returned refused; a wait retries until it times out.
            Ok((_, Err(e))) => Err(SessionError::Connect(e)),
            Err(WaitError::Shutdown) => Err(SessionError::Shutdown),
            Err(e) => {
                e.report();
                self.client
                    .send_error(1, ER_CONNECTION_KILLED, &e.to_string())
                    .await;
                Ok(false)
            }
        }
    }

    /// After a command on the writer failed because the writer died under it: the client
    /// gets ERR 1053 (the outcome is unknown: MySQL commits implicitly, on DDL among
    /// others, so any statement sent may have committed), the session leaves its
    /// transaction and goes on without a writer until its next work for one. When part of
    /// the answer had reached the client already, the session ends with that error.
    pub(super) async fn writer_failed(
        &mut self,
        error: SessionError,
        written_before: u64,
    ) -> Result<Relayed, SessionError> {
        let held = self.writer.as_ref().map(|w| Arc::clone(&w.conn.instance));
        if let Some(held) = held
            && let Some(ended) = self.end_if_alone(&held).await
        {
            tracing::debug!(error = %crate::error::chain(&error), "writer connection ended alone");
            return Err(ended);
        }
        let addr = self
            .writer
            .as_ref()
            .map(|w| w.conn.instance.addr.clone())
            .unwrap_or_default();
        self.drop_writer();
        self.forget_transaction();
        let loss = Loss::OutcomeUnknown;
        failover::report_loss(&self.cluster.name, loss, &addr);
        tracing::debug!(error = %crate::error::chain(&error), "writer lost");
        let message = loss.message(&self.cluster.name);
        if self.client.written != written_before || self.view.pinned_to_writer {
            let code = ER_SERVER_SHUTDOWN;
            return Err(SessionError::Failover { code, message });
        }
        self.client
            .send_error(1, ER_SERVER_SHUTDOWN, &message)
            .await;
        Ok(Relayed {
            failed: true,
            ..Relayed::default()
        })
    }

    /// The session's first writer connection: to the cluster's writer, or, while the
    /// topology shows no usable writer (a failover under way), to the next one once it is
    /// usable, within `failover_timeout`.
    pub(super) async fn first_writer(
        &mut self,
    ) -> Result<Result<MysqlConn, ConnectError>, SessionError> {
        match self.connect_writer(true).await {
            Ok((cluster, outcome)) => {
                self.cluster = cluster;
                Ok(outcome)
            }
            Err(WaitError::Shutdown) => Err(SessionError::Shutdown),
            Err(e) => {
                e.report();
                let code = ER_CONNECTION_KILLED;
                Err(SessionError::Failover {
                    code,
                    message: e.to_string(),
                })
            }
        }
    }

    /// Connects to the cluster's writer, waiting for a usable one (see
    /// [`WriterWait::connect`]); `first` for the session's first connection.
    async fn connect_writer(
        &mut self,
        first: bool,
    ) -> Result<(Arc<Cluster>, Result<MysqlConn, ConnectError>), WaitError> {
        let (login, creds) = (&self.login, &self.creds);
        let wait = WriterWait::new(&self.ctx, &self.cluster.name, &mut self.shutdown);
        let connect = |cluster: Arc<Cluster>, t| async move {
            connector::connect(&cluster, &cluster.writer, login, creds, t).await
        };
        wait.connect(Arc::clone(&self.cluster), first, connect)
            .await
    }

    /// After the session's writer connection (to `held`) ended: when it ended alone (the
    /// shared rule, [`failover::judge_end`]: the topology still names `held` the usable
    /// writer and it accepts a new login now), the session ends as the server ended that
    /// connection: the server's last ERR, if it left one unread (1927 after KILL, 4031 after
    /// MySQL's `wait_timeout`), answers the client's command, and the client connection
    /// closes. `None` when the writer itself failed: the failover path goes on.
    async fn end_if_alone(&mut self, held: &Arc<Instance>) -> Option<SessionError> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let (login, creds) = (&self.login, &self.creds);
        let probe = |cluster: Arc<Cluster>| {
            let held = Arc::clone(held);
            async move {
                let conn = connector::connect(&cluster, &held, login, creds, timeout).await?;
                conn.quit().await;
                Ok::<(), ConnectError>(())
            }
        };
        let ended = failover::judge_end(&self.ctx.topology, &mut self.cluster, held, probe).await;
        if ended == failover::Ended::Writer {
            return None;
        }
        let words = self.writer.as_ref().and_then(|w| last_error(&w.conn.buf));
        self.drop_writer();
        tracing::info!(writer = %held.addr, "the server ended this session's writer connection; ending the client's");
        if let Some(payload) = words {
            let mut out = BytesMut::new();
            packet::write_packet(&mut out, 1, &payload);
            if let Err(e) = self.client.write_all(&out).await {
                tracing::debug!(error = %e, "could not relay the server's last error");
            }
        }
        Some(SessionError::ConnectionEnded {
            addr: held.addr.clone(),
        })
    }

    fn drop_writer(&mut self) {
        self.writer = None;
        self.statements.forget_backend(Target::Writer);
    }

    /// The transaction the client had is gone with its writer.
    fn forget_transaction(&mut self) {
        self.view.in_transaction = None;
        self.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
        self.admission = None;
    }
}

/// The payload of the first ERR packet among the whole packets in `buf`: what a server said
/// before it closed a connection between commands.
pub(super) fn last_error(buf: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    while let Ok(Some((h, payload))) = packet::packet(&buf[at..], packet::MAX_PHYSICAL_PAYLOAD) {
        if payload.first() == Some(&crate::protocol::mysql::constants::header::ERR) {
            return Some(payload.to_vec());
        }
        at += packet::HEADER_LEN + h.len;
    }
    None
}
