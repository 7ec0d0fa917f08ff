//! Prepared statements of a MySQL session: COM_STMT_PREPARE routed by its SQL, and
//! EXECUTE, SEND_LONG_DATA, CLOSE, RESET and FETCH carried to whichever backend runs the
//! statement, prepared there lazily, with the backend's statement id.

use bytes::BytesMut;

use super::replay::Replay;
use super::statements;
use super::{Session, SessionError, classify, write_statement};
use crate::backend::mysql::Prepared;
use crate::session::flow::Pin;

/// Offset of the flags in a COM_STMT_EXECUTE payload, and the flags that open a cursor.
const EXECUTE_FLAGS: usize = 5;
const CURSOR_TYPES: u8 = 0x0F;
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::{
    COM_STMT_CLOSE, COM_STMT_PREPARE, COM_STMT_RESET,
};
use crate::protocol::mysql::constants::{ER_UNKNOWN_COM_ERROR, ER_UNKNOWN_STMT_HANDLER};
use crate::router::{self, Effect, Target};
use crate::sql::hold::{self, HeldKind, HoldChange};
use crate::sql::{Class, Dialect};

/// How a prepared statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    /// COM_STMT_EXECUTE: one row of parameters (or none).
    Execute,
    /// MariaDB's COM_STMT_BULK_EXECUTE: many rows of parameters, one OK or ERR.
    Bulk,
}

impl Session {
    pub(super) async fn prepare(&mut self, packet: &[u8], sql: &[u8]) -> Result<(), SessionError> {
        // Reserved first: a prepare that fails, refused here or by the server, leaves no
        // last statement.
        let id = self.side.statements.reserve_id();
        let stmt = classify(sql);
        let target = match self.chosen(&stmt) {
            Some(target) => target,
            None => self.place_reader().await?,
        };
        // Preparing changes no state; executing does (see `execute`). A statement that
        // pins keeps the session on the writer from now on, where it will run.
        if matches!(router::effect(&stmt, self.view), Effect::Pin) {
            self.pin(Pin::Statement);
        }
        let target = if self.view.pinned_to_writer && self.view.in_transaction.is_none() {
            Target::Writer
        } else {
            target
        };
        // A read-only server refuses to prepare a write too.
        if target == Target::Writer && self.between_transactions() && !self.gate(&stmt).await? {
            return Ok(());
        }
        let relayed = self.run_packet(target, packet, Some(id)).await?;
        if let Some(p) = relayed.prepared.filter(|_| !relayed.failed) {
            let backend_id = self
                .keep_prepared(target, sql, p.statement_id, p.num_params)
                .await?;
            self.side
                .statements
                .insert(id, sql.to_vec(), stmt, p.num_params, target, backend_id);
        }
        Ok(())
    }

    /// Records statement `backend_id` (`sql`, with `params` parameters), just prepared on
    /// `target`'s connection, in that connection's statements, shared by every session that
    /// uses it; the id to use. One the connection already holds for the same SQL is used
    /// instead (the new one is closed), and the least recently used ones past
    /// `max_prepared_statements` are closed.
    async fn keep_prepared(
        &mut self,
        target: Target,
        sql: &[u8],
        backend_id: u32,
        params: u16,
    ) -> Result<u32, SessionError> {
        let cap = self.ctx.config().raw.server.max_prepared_statements;
        let backend = self.held(target)?;
        let sql = sql.to_vec();
        let (id, closed) = match backend.conn.prepared.get(&sql) {
            Some(held) if held.params == params => (held.id, vec![backend_id]),
            _ => {
                let kept = Prepared {
                    id: backend_id,
                    params,
                };
                let evicted = backend.conn.prepared.insert(sql, kept, cap);
                (backend_id, evicted.into_iter().map(|(_, p)| p.id).collect())
            }
        };
        let mut out = BytesMut::new();
        let mut evicted = false;
        for closed_id in closed {
            if closed_id != backend_id {
                evicted = true;
                crate::metrics::prepared_evicted(&backend.conn.instance.cluster);
            }
            out.clear();
            command::write_statement_command(&mut out, COM_STMT_CLOSE, closed_id);
            backend.send(&out).await?;
        }
        if evicted {
            // A statement of this session that used an evicted one prepares it again.
            let held: Vec<u32> = backend.conn.prepared.values().map(|p| p.id).collect();
            self.side.statements.keep_only(target, &held);
        }
        Ok(id)
    }

    /// Makes sure statement `id` is prepared on `target`; its backend id, or `None` (with the
    /// error already sent to the client) when it could not be prepared there.
    pub(super) async fn ensure_prepared(
        &mut self,
        id: u32,
        target: Target,
    ) -> Result<Option<u32>, SessionError> {
        if target == Target::Writer && self.writer.is_none() {
            // Transaction mode between statements (long data, RESET): take a writer
            // connection first.
            let refusal = self.migration_gate(false).await?;
            if !self.answered(refusal).await {
                return Ok(None);
            }
        }
        let Some(stmt) = self.side.statements.get_mut(id) else {
            return Ok(None);
        };
        if let Some(backend_id) = stmt.backend_id(target) {
            return Ok(Some(backend_id));
        }
        let sql = stmt.sql.clone();
        let held = self.held(target)?.conn.prepared.get(&sql).copied();
        if let Some(held) = held {
            // Another session prepared it on this connection.
            if let Some(stmt) = self.side.statements.get_mut(id) {
                stmt.set_backend_id(target, held.id);
            }
            return Ok(Some(held.id));
        }
        let mut out = BytesMut::new();
        command::write_text_command(&mut out, COM_STMT_PREPARE, &sql);
        let (relayed, failure) = self.held(target)?.run_silently(&out).await?;
        match (relayed.prepared, failure) {
            (Some(p), None) => {
                let backend_id = self
                    .keep_prepared(target, &sql, p.statement_id, p.num_params)
                    .await?;
                if let Some(stmt) = self.side.statements.get_mut(id) {
                    stmt.set_backend_id(target, backend_id);
                }
                Ok(Some(backend_id))
            }
            (_, failure) => {
                let message = failure
                    .unwrap_or_else(|| "could not prepare the statement on this backend".into());
                self.side
                    .client
                    .send_error(1, ER_UNKNOWN_COM_ERROR, &message)
                    .await;
                Ok(None)
            }
        }
    }

    /// COM_STMT_EXECUTE, or MariaDB's COM_STMT_BULK_EXECUTE (`run`), of the client's
    /// statement `id`.
    pub(super) async fn execute(
        &mut self,
        payload: &[u8],
        id: u32,
        run: Run,
    ) -> Result<(), SessionError> {
        let track = self.pinned_by(Pin::Statement);
        let id = self.side.statements.resolve(id);
        let Some(stmt) = self.side.statements.get_mut(id) else {
            // Not the client's: no connection may run it (one may hold another client's
            // statement of that id).
            let routine = match run {
                Run::Execute => "mysqld_stmt_execute",
                Run::Bulk => "mysqld_stmt_bulk_execute",
            };
            return self.unknown_statement(id, routine).await;
        };
        let class = if stmt.long_data {
            write_statement()
        } else {
            stmt.class
        };
        // A SET without parameters replays as its text; one with parameters pins until
        // what it set is read back.
        // Copied only for a statement that changes session state (`record_effect`).
        let replay = (stmt.params == 0).then(|| std::sync::Arc::clone(&stmt.sql));
        let unreplayed = (replay.is_none() && class.class == Class::SessionSet)
            .then(|| crate::sql::mysql_settings(&stmt.sql));
        // Its text says what it does to the state that pins the session.
        let sql = (track || class.class == Class::Pin).then(|| stmt.sql.clone());
        // A cursor stays open on the connection that runs it, for the FETCHes that follow.
        let cursor = run == Run::Execute
            && payload
                .get(EXECUTE_FLAGS)
                .is_some_and(|f| f & CURSOR_TYPES != 0);
        if cursor && self.pooled() && self.view.in_transaction.is_none() {
            self.pin(Pin::Cursor);
            // Open until the client closes or resets the statement.
            let held = HoldChange::Take(HeldKind::Cursor, id.to_le_bytes().to_vec());
            self.holds.apply(vec![held], false);
        }

        let target = match self.chosen(&class) {
            Some(target) => target,
            None => self.place_reader().await?,
        };
        if target == Target::Writer && self.between_transactions() && !self.gate(&class).await? {
            return Ok(());
        }
        if let Some(names) = unreplayed {
            self.note_unreplayed(names);
        }
        let set = self.record_effect(&class, || replay.map(|sql| Replay::Query(sql.to_vec())));
        let before = self.side.client.written;
        let idle = self.view.in_transaction.is_none();
        let failed = match self.execute_on(target, payload, id, run).await {
            Err(e)
                if target == Target::Reader
                    && idle
                    && e.backend_failed()
                    && self.side.client.written == before =>
            {
                let retry = self.retry_target(&e).await?;
                self.execute_on(retry, payload, id, run).await?
            }
            other => other?,
        };
        self.record_ran(set, failed);
        // Once it ran: the transaction state it left says when read-your-writes starts.
        self.note_write(target, &class);
        // What it did to the state that pins the session, as its text says (a parameter
        // where a name would be makes that state untracked).
        if let Some(sql) = sql.filter(|_| self.pinned_by(Pin::Statement)) {
            let changes = hold::changes(&sql, Dialect::MySql, class.class == Class::Pin);
            self.holds.apply(changes, failed);
        }
        Ok(())
    }

    /// Prepares statement `id` on `target` if needed and runs the client's EXECUTE there.
    async fn execute_on(
        &mut self,
        target: Target,
        payload: &[u8],
        id: u32,
        run: Run,
    ) -> Result<bool, SessionError> {
        let Some(backend_id) = self.ensure_prepared(id, target).await? else {
            return Ok(true);
        };
        let mut out = std::mem::take(&mut self.side.scratch);
        if let Some(stmt) = self.side.statements.get_mut(id) {
            match run {
                Run::Execute => {
                    statements::rewrite_execute(stmt, target, backend_id, payload, &mut out);
                }
                Run::Bulk => statements::rewrite_bulk(stmt, target, backend_id, payload, &mut out),
            }
            stmt.last = target;
        }
        let result = self.run_packet(target, &out, None).await;
        self.side.scratch = out;
        result.map(|r| r.failed)
    }

    pub(super) async fn send_long_data(
        &mut self,
        payload: &[u8],
        id: u32,
    ) -> Result<(), SessionError> {
        let target = self.view.in_transaction.unwrap_or(Target::Writer);
        let id = self.side.statements.resolve(id);
        let Some(stmt) = self.side.statements.get_mut(id) else {
            // No answer to COM_STMT_SEND_LONG_DATA, as from a server that lacks the statement.
            return Ok(());
        };
        stmt.long_data = true;

        let Some(backend_id) = self.ensure_prepared(id, target).await? else {
            return Ok(());
        };
        let mut out = BytesMut::new();
        statements::rewrite_id(payload, backend_id, &mut out);
        self.held(target)?.send(&out).await
    }

    /// The client closed statement `id`: the proxy forgets it. What it was prepared as on
    /// a connection stays there for the next session that needs it (see `keep_prepared`).
    pub(super) fn close_statement(&mut self, id: u32) {
        let id = self.side.statements.resolve(id);
        self.side.statements.remove(id);
        self.cursor_closed(id);
    }

    /// Answers a command naming statement `id`, which the client does not have, as its
    /// server does (`command`: the server routine its message names).
    async fn unknown_statement(&mut self, id: u32, command: &str) -> Result<(), SessionError> {
        let message = format!("Unknown prepared statement handler ({id}) given to {command}");
        self.side
            .client
            .send_error(1, ER_UNKNOWN_STMT_HANDLER, &message)
            .await;
        Ok(())
    }

    /// The server closed statement `id`'s cursor, if it had one open.
    fn cursor_closed(&mut self, id: u32) {
        if self.pinned_by(Pin::Cursor) {
            let closed = HoldChange::Release(HeldKind::Cursor, id.to_le_bytes().to_vec());
            self.holds.apply(vec![closed], false);
        }
    }

    /// COM_STMT_RESET and COM_STMT_FETCH go where the statement last ran.
    pub(super) async fn statement_follow_up(
        &mut self,
        payload: &[u8],
        id: u32,
    ) -> Result<(), SessionError> {
        let id = self.side.statements.resolve(id);
        let target = match self.side.statements.get_mut(id) {
            Some(stmt) if stmt.backend_id(stmt.last).is_some() => stmt.last,
            Some(_) => Target::Writer,
            None => {
                let command = if payload.first() == Some(&COM_STMT_RESET) {
                    "mysqld_stmt_reset"
                } else {
                    "mysqld_stmt_fetch"
                };
                return self.unknown_statement(id, command).await;
            }
        };
        let Some(backend_id) = self.ensure_prepared(id, target).await? else {
            return Ok(());
        };
        let mut out = BytesMut::new();
        statements::rewrite_id(payload, backend_id, &mut out);
        let relayed = self.run_packet(target, &out, None).await?;
        if payload.first() == Some(&COM_STMT_RESET) && !relayed.failed {
            self.cursor_closed(id);
        }
        Ok(())
    }
}
