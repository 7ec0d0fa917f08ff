//! Transaction mode: a plain `BEGIN` / `START TRANSACTION` between transactions is
//! answered by the proxy (an OK with `SERVER_STATUS_IN_TRANS`), and runs on the writer
//! connection the transaction's first command takes, just before it — the MySQL half of
//! `session::postgres::begin`, whose doc says why: the client's round trip between its
//! `BEGIN` and its first statement no longer holds a pooled connection.
//!
//! Unlike PostgreSQL's, the `BEGIN` is not written in front of the command: a MySQL server
//! runs a command whatever became of the one before it, and a command must not run outside
//! the transaction its client opened. It runs first, on its own (a round trip to the
//! server, none to the client), and a refusal fails the connection.
//!
//! Only a text that can mean nothing else is deferred (`sql::plain_begin`), with
//! autocommit on and nothing held. Until its first command the client is in a
//! transaction that holds nothing: a cutover's drain does not wait for it and its first
//! command passes the migration gate as the `BEGIN` would have (held by a pause, moved by
//! a switch); a refusal there answers that command and leaves the transaction still to
//! begin, as a MySQL error inside a transaction leaves the transaction open.

use bytes::BytesMut;

use super::{Session, SessionError};
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::StatusFlags;
use crate::protocol::mysql::constants::command::COM_QUERY;
use crate::router::Target;
use crate::sql::{Class, Dialect, Statement};

impl Session {
    /// Whether `sql`, a COM_QUERY classified as `stmt`, is a `BEGIN` to answer here.
    pub(super) fn defers_begin(&self, sql: &[u8], stmt: &Statement) -> bool {
        let status = self.side.status;
        matches!(stmt.class, Class::Begin { read_only: false })
            && stmt.count == 1
            && self.pooled()
            && status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
            && !status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
            && self.view.in_transaction.is_none()
            && !self.view.pinned_to_writer
            && self.writer.is_none()
            && crate::sql::plain_begin(sql, Dialect::MySql)
    }

    /// Answers a `BEGIN` [`Session::defers_begin`] took: the client is in a transaction
    /// that has not started on any server yet.
    pub(super) async fn defer_begin(&mut self) -> Result<(), SessionError> {
        self.side.begin_deferred = true;
        self.side.status.insert(StatusFlags::SERVER_STATUS_IN_TRANS);
        self.reply_ok().await
    }

    /// Starts the transaction a deferred `BEGIN` opened, before its first command: past the
    /// migration gate, on a writer connection, with the `BEGIN` run there first. `false`
    /// when the command was answered here with the gate's error; the transaction is still
    /// to begin.
    pub(super) async fn begin_now(&mut self) -> Result<bool, SessionError> {
        // Where the server stands until the `BEGIN` runs: what the gate and a move look at.
        self.side.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
        if self.moved() {
            self.follow_active().await?;
        }
        if !self
            .gate(&Statement::of(Class::Begin { read_only: false }))
            .await?
        {
            self.side.status.insert(StatusFlags::SERVER_STATUS_IN_TRANS);
            return Ok(false);
        }
        self.side.begin_deferred = false;
        let Some(writer) = self.writer.as_mut() else {
            return Ok(true);
        };
        let mut begin = BytesMut::new();
        command::write_text_command(&mut begin, COM_QUERY, b"BEGIN");
        let (relayed, refused) = writer.run_silently(&begin).await?;
        if let Some(message) = refused {
            return Err(SessionError::BackendProtocol {
                addr: writer.conn.instance.addr.clone(),
                detail: format!("the server refused a BEGIN: {message}"),
            });
        }
        self.side.status = relayed
            .status
            .unwrap_or(self.side.status | StatusFlags::SERVER_STATUS_IN_TRANS);
        self.view.in_transaction = Some(Target::Writer);
        Ok(true)
    }
}
