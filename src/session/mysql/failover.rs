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

use super::backend::Relayed;
use super::{Session, SessionError};
use crate::protocol::mysql::command::Command;
use crate::protocol::mysql::constants::{ER_LOCK_DEADLOCK, ER_SERVER_SHUTDOWN, StatusFlags};
use crate::protocol::mysql::packet;
use crate::router::Target;
use crate::session::failover::{self, Loss};

/// Whether `cmd` passes the migration gate, which takes a writer for it when the session
/// has none.
fn gated(cmd: &Command<'_>) -> bool {
    use Command::*;
    matches!(
        cmd,
        Query { .. }
            | InitDb { .. }
            | SetOption { .. }
            | FieldList { .. }
            | StmtPrepare { .. }
            | StmtExecute { .. }
    )
}

impl Session {
    /// Whether [`Session::before_command`] has nothing to do for `cmd`, judged without
    /// waiting: the writer connection the session holds is open (or `cmd` expects no
    /// answer), or it holds none and `cmd` passes the migration gate or needs no writer.
    /// The commands of a healthy session then build no future for it.
    pub(super) fn nothing_before(&mut self, cmd: &Command<'_>) -> bool {
        use Command::*;
        let unanswered = matches!(
            cmd,
            Quit | StmtClose { .. } | StmtSendLongData { .. } | ChangeUser { .. }
        );
        let in_transaction =
            !self.between_transactions() && self.view.in_transaction == Some(Target::Writer);
        match self.writer.as_mut() {
            Some(writer) => unanswered || !writer.closed(),
            None => unanswered || matches!(cmd, Ping) || in_transaction || gated(cmd),
        }
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
        if self.writer.as_mut().is_some_and(|w| w.closed()) {
            self.end_if_alone().await?;
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
            self.side
                .client
                .send_error(1, ER_LOCK_DEADLOCK, &message)
                .await;
            return Ok(false);
        }
        if self.writer.is_none() && !gated(cmd) {
            let refusal = self.follow_writer().await?;
            return Ok(self.answered(refusal).await);
        }
        Ok(true)
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
        if let Err(ended) = self.end_if_alone().await {
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
        if self.side.client.written != written_before || self.view.pinned_to_writer {
            let code = ER_SERVER_SHUTDOWN;
            return Err(SessionError::Failover { code, message });
        }
        self.side
            .client
            .send_error(1, ER_SERVER_SHUTDOWN, &message)
            .await;
        Ok(Relayed {
            failed: true,
            ..Relayed::default()
        })
    }

    /// The transaction the client had is gone with its writer.
    fn forget_transaction(&mut self) {
        self.view.in_transaction = None;
        self.side.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
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
