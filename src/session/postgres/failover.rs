//! Writer failover in a PostgreSQL session. Between transactions, work for a writer that is
//! gone waits for a usable one (`failover_timeout`) and moves there, with no error; past the
//! timeout it fails with `57P03` (PostgreSQL's own code while a server cannot take
//! connections yet; the work did not run). Work whose writer died under it fails with
//! `08007` (outcome unknown: it may have committed) or `40001` (a transaction rolled back,
//! none of it committed), then ReadyForQuery, and the session goes on. A client left in a
//! lost transaction ('E') is answered by the proxy until it ends it; its next work outside
//! a transaction moves to the new writer.
//!
//! A writer connection that ends while the writer itself stays up (`pg_terminate_backend`,
//! `idle_session_timeout` …; see [`failover::judge_end`] for the rule) is no failover: the
//! server's FATAL is relayed and the client connection closes, as the server's would.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::exchange::Failed;
use super::scan::{self, Ending, Unit};
use super::{Session, SessionError};
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::protocol::postgres::sqlstate;
use crate::session::cold;
use crate::session::failover::{self, Loss};
use crate::session::migration::Refusal;
use crate::sql::Class;

impl Session {
    /// The migration gate (`session::migration`) for `unit`, which starts a transaction on
    /// the writer; `false` when it was answered here (a write to a read-only cluster, or no
    /// usable writer within `failover_timeout`: `57P03`, the work did not run).
    pub(super) async fn gate(&mut self, unit: &Unit) -> Result<bool, SessionError> {
        // `BEGIN READ WRITE` overrides read-only mode's session default: refused there as a
        // write, as a standby refuses it.
        let read_write =
            matches!(unit.stmt.class, Class::Begin { .. }) && super::says_read_write(unit);
        let writes = (crate::sql::writes(&unit.stmt) || read_write) && unit.ending == Ending::Ready;
        match self.migration_gate(writes).await? {
            None => Ok(true),
            Some(Refusal { code, message }) => {
                cold(self.answer(unit.end, code, &message, b'I')).await?;
                Ok(false)
            }
        }
    }

    /// Whether the writer connection of the open transaction is there and open, judged
    /// without waiting: then the work goes on. Otherwise [`Session::writer_in_transaction`]
    /// says what becomes of it.
    pub(super) fn writer_alive(&mut self) -> bool {
        self.writer.as_mut().is_some_and(|w| !w.closed())
    }

    /// Before work in a transaction on the writer; `false` when `unit` was answered here. A
    /// writer connection found closed before anything was sent: the transaction is lost
    /// (`40001`). Until the client ends it, the proxy answers for the lost transaction as
    /// PostgreSQL does for a failed one: `25P02` for its work, and ROLLBACK ends it. Unlike
    /// PostgreSQL, which answers a COMMIT there with the tag ROLLBACK, a COMMIT fails
    /// (`40001`): drivers take any answer without an error for a commit, and the client may
    /// not have seen the first error (it may have gone to a message whose answer it
    /// ignores, such as the Close of a statement).
    pub(super) async fn writer_in_transaction(
        &mut self,
        unit: &Unit,
    ) -> Result<bool, SessionError> {
        let first = match self.writer.as_mut() {
            Some(writer) => {
                if !writer.closed() {
                    return Ok(true);
                }
                let addr = writer.conn.instance.addr.clone();
                self.end_if_alone().await?;
                self.drop_writer();
                failover::report_loss(&self.cluster.name, Loss::RolledBack, &addr);
                true
            }
            None => std::mem::take(&mut self.side.loss_untold),
        };
        let closes = scan::only_closes(&self.side.client.buf[..unit.end]);
        if let Some(closes) = closes.filter(|_| !self.view.pinned_to_writer) {
            self.side.loss_untold |= first;
            return self
                .answer_closes(unit.end, closes, b'E')
                .await
                .map(|()| false);
        }
        let lost = Loss::RolledBack.message(&self.cluster.name);
        if self.view.pinned_to_writer {
            let code = sqlstate::SERIALIZATION_FAILURE;
            return Err(SessionError::Failover {
                code,
                message: lost,
            });
        }
        let ends = unit.stmt.class == Class::End && unit.stmt.count == 1;
        let rollback = |p: &Option<std::sync::Arc<scan::Prepared>>| {
            p.as_ref()
                .and_then(|p| p.sql())
                .is_some_and(is_plain_rollback)
        };
        if ends && unit.simple_sql.is_none() && unit.refs.iter().all(rollback) {
            return self.answer_rollback(unit).await.map(|()| false);
        }
        if ends && unit.simple_sql.as_deref().is_some_and(is_plain_rollback) {
            self.leave_transaction();
            let mut out = BytesMut::new();
            messages::command_complete(&mut out, "ROLLBACK");
            messages::ready_for_query(&mut out, b'I');
            self.side.client.buf.advance(unit.end);
            let sent = self.side.client.stream.write_all(&out).await;
            return sent.map_err(SessionError::ClientIo).map(|()| false);
        }
        let (code, message) = if first || ends {
            (sqlstate::SERIALIZATION_FAILURE, lost)
        } else {
            let aborted = "current transaction is aborted, commands ignored until end of transaction block (its writer was lost in a switchyard writer failover)";
            (sqlstate::IN_FAILED_SQL_TRANSACTION, aborted.to_owned())
        };
        let status = if ends { self.leave_transaction() } else { b'E' };
        self.answer(unit.end, code, &message, status).await?;
        Ok(false)
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
        if let SessionError::BackendLost { .. } = failed.error {
            self.end_if_alone().await?;
        }
        let addr = self
            .writer
            .as_ref()
            .map(|w| w.conn.instance.addr.clone())
            .unwrap_or_default();
        self.drop_writer();
        let closes = scan::only_closes(&self.side.client.buf[..failed.held]);
        if let Some(closes) = closes.filter(|_| open && failed.resumable) {
            // Closing statements commits nothing: the transaction is lost, and the next
            // real work is told (see `writer_in_transaction`).
            failover::report_loss(&self.cluster.name, Loss::RolledBack, &addr);
            if self.view.pinned_to_writer {
                let code = sqlstate::SERIALIZATION_FAILURE;
                let message = Loss::RolledBack.message(&self.cluster.name);
                return Err(SessionError::Failover { code, message });
            }
            self.side.loss_untold = true;
            return self.answer_closes(failed.held, closes, b'E').await;
        }
        // PostgreSQL commits only at COMMIT (its DDL too); one statement inside a
        // transaction that is not COMMIT cannot have committed anything.
        let ends = unit.stmt.class == Class::End;
        let may_commit = ends || unit.stmt.count != 1;
        let loss = Loss::of(open, true, may_commit);
        failover::report_loss(&self.cluster.name, loss, &addr);
        tracing::debug!(error = %crate::error::chain(&failed.error), "writer lost");
        let code = match loss {
            Loss::RolledBack => sqlstate::SERIALIZATION_FAILURE,
            Loss::Nothing | Loss::OutcomeUnknown => sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
        };
        let message = loss.message(&self.cluster.name);
        // A pinned session's state (LISTEN, temporary tables …) died with the writer.
        if !failed.resumable || self.view.pinned_to_writer {
            return Err(SessionError::Failover { code, message });
        }
        // A transaction left open stays open, failed, until the client ends it (see
        // `writer_in_transaction`).
        let status = if open && !(ends && unit.stmt.count == 1) {
            b'E'
        } else {
            self.leave_transaction()
        };
        self.answer(failed.held, code, &message, status).await
    }

    /// Answers a unit of `closes` Close messages (`len` bytes) here: CloseComplete each,
    /// then ReadyForQuery(`status`; 'E' in a lost transaction, as its server would).
    /// Drivers send the Close of a statement they are done with in a batch of its own and
    /// ignore its errors (tokio-postgres, JDBC), so a loss is told to the next real work.
    pub(super) async fn answer_closes(
        &mut self,
        len: usize,
        closes: usize,
        status: u8,
    ) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        (0..closes).for_each(|_| messages::close_complete(&mut out));
        messages::ready_for_query(&mut out, status);
        self.answer_with(len, &out).await
    }

    /// Drops the client's unit of `len` bytes and sends `out` as its answer.
    pub(super) async fn answer_with(&mut self, len: usize, out: &[u8]) -> Result<(), SessionError> {
        self.side.client.buf.advance(len);
        let sent = self.side.client.stream.write_all(out).await;
        sent.map_err(SessionError::ClientIo)
    }

    /// Answers a simple query of `len` bytes: CommandComplete with its tag, or an error
    /// `26000` (invalid statement name) with its message, then ReadyForQuery `status`.
    pub(super) async fn answer_command(
        &mut self,
        len: usize,
        answer: Result<&str, String>,
        status: u8,
    ) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        match answer {
            Ok(tag) => messages::command_complete(&mut out, tag),
            Err(message) => messages::error_response(
                &mut out,
                Severity::Error,
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                &message,
            ),
        }
        messages::ready_for_query(&mut out, status);
        self.answer_with(len, &out).await
    }

    /// Answers a plain ROLLBACK sent with the extended protocol in a lost transaction, as
    /// PostgreSQL answers it in a failed one: its Parse, Describe and Bind succeed, and its
    /// Execute ends the transaction (ReadyForQuery 'I' from then on, 'E' before).
    async fn answer_rollback(&mut self, unit: &Unit) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        let bytes = &self.side.client.buf[..unit.end];
        let (mut at, mut status) = (0, b'E');
        while let Ok(Some((h, body))) = frame::message(&bytes[at..], usize::MAX) {
            match h.tag {
                tag::PARSE => messages::parse_complete(&mut out),
                tag::BIND => messages::bind_complete(&mut out),
                tag::DESCRIBE if body.first() == Some(&b'S') => {
                    messages::no_parameters(&mut out);
                    messages::no_data(&mut out);
                }
                tag::DESCRIBE => messages::no_data(&mut out),
                tag::EXECUTE => {
                    messages::command_complete(&mut out, "ROLLBACK");
                    status = b'I';
                }
                tag::CLOSE => messages::close_complete(&mut out),
                tag::SYNC => messages::ready_for_query(&mut out, status),
                _ => {}
            }
            at += h.total;
        }
        if status == b'I' {
            self.leave_transaction();
        }
        self.side.client.buf.advance(unit.end);
        let sent = self.side.client.stream.write_all(&out).await;
        sent.map_err(SessionError::ClientIo)
    }

    /// The session is out of its transaction: 'I'.
    fn leave_transaction(&mut self) -> u8 {
        self.view.in_transaction = None;
        self.admission = None;
        b'I'
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
        self.side.client.buf.advance(len);
        self.side
            .client
            .stream
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)
    }
}

/// Whether a statement that ends a transaction is a plain ROLLBACK or ABORT (not COMMIT or
/// END, nor ROLLBACK AND CHAIN, which opens the next transaction).
fn is_plain_rollback(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let chain = words.iter().any(|w| w == "chain") && !words.iter().any(|w| w == "no");
    matches!(
        words.first().map(String::as_str),
        Some("rollback" | "abort")
    ) && !chain
}

#[cfg(test)]
mod tests {
    use super::is_plain_rollback;

    #[test]
    fn only_a_plain_rollback_ends_a_lost_transaction_without_an_error() {
        let table = [
            ("ROLLBACK", true),
            ("  rollback work;", true),
            ("ABORT", true),
            ("ROLLBACK AND NO CHAIN", true),
            ("ROLLBACK AND CHAIN", false),
            ("COMMIT", false),
            ("END", false),
        ];
        for (sql, want) in table {
            assert_eq!(is_plain_rollback(sql), want, "{sql}");
        }
    }
}
