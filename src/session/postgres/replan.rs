//! "cached plan must not change result type" (SQLSTATE 0A000) from a statement a pooled
//! connection kept for its clients: DDL such as `ALTER TABLE … ADD COLUMN` changes what a
//! `SELECT *` returns, and a statement prepared before it then fails when it runs. A
//! client of its own server connection sees that error only when it prepared the
//! statement before the DDL; through the proxy it may also see it when it prepared the
//! statement after the DDL (on another connection, or answered by one that held the same
//! name and text) and runs it on a connection that still holds the old one. Then the
//! proxy prepares it again there and runs the client's batch once more, as it
//! would have run on a server of the client's own.
//!
//! When (all must hold, else the error is relayed as the server sent it):
//! - the error is the first answer of a whole extended-protocol batch (up to its Sync,
//!   still in the client buffer): nothing of the batch ran or reached the client (a Bind
//!   or Describe fails before any Execute does), and the batch reused a statement the
//!   connection already held (`Backend::reused`);
//! - the ReadyForQuery after it says `I`: no transaction block, so nothing is lost by
//!   running again. In a transaction block the error is relayed (the transaction is
//!   failed, as on a server) and the statements are marked so that their next use
//!   prepares them again;
//! - each statement prepared again has the result columns the client was told for it
//!   (the RowDescription that answered its Describe, `Prepared::described`), or the client
//!   was told none. A client told the columns from before the DDL (tokio-postgres
//!   describes at prepare time and decodes rows by that description) would otherwise get
//!   rows it cannot read: it gets the error, as from a server of its own, and the
//!   connection keeps the statement prepared again for the others.
//!
//! Once: the retry runs with `Backend::hold_stale_plan` off, so a second such error is relayed.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::SessionError;
use super::backend::{Backend, MAX_BACKEND_MESSAGE};
use super::scan::Prepared;
use crate::protocol::postgres::messages::{self, tag};
use crate::protocol::postgres::{frame, sqlstate};

/// The server routine that raises the error: its `R` field is never translated, unlike
/// the message, and other errors share the SQLSTATE.
const REVALIDATE: &[u8] = b"RevalidateCachedQuery";

/// Whether an ErrorResponse body is "cached plan must not change result type".
pub fn is_stale_plan(body: &[u8]) -> bool {
    messages::error_field(body, b'C') == Some(sqlstate::FEATURE_NOT_SUPPORTED.as_bytes())
        && messages::error_field(body, b'R') == Some(REVALIDATE)
}

/// A digest of a RowDescription (or NoData) body; never 0, which stands for "told none".
pub fn digest(columns: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    columns.hash(&mut hasher);
    hasher.finish() | 1
}

/// What becomes of a unit whose first answer was that error.
#[derive(Debug)]
pub enum Replanned {
    /// Its statements are prepared again with the columns the client knows: send it again.
    Retry,
    /// Relay the error as the server sent it, with its ReadyForQuery (status `status`).
    Relay { answer: Vec<u8>, status: u8 },
}

impl Backend {
    /// Decides about the error the relay left in front of the buffer (`Relayed::stale_plan`),
    /// once the ReadyForQuery that follows it arrived; see the module's rules.
    pub async fn replan(
        &mut self,
        scratch: &mut BytesMut,
        cap: usize,
    ) -> Result<Replanned, SessionError> {
        self.hold_stale_plan = false;
        let (at, total, status) = loop {
            if let Some(found) = self.whole_ready_for_query() {
                break found;
            }
            self.fill().await?;
        };
        let answer = self.conn.buf[..at + total].to_vec();
        self.conn.consume(at + total);
        let skipped = self.owed_parses();
        self.forget_failed(skipped);
        let reused = std::mem::take(&mut self.reused);
        let retry = if status == b'I' {
            self.prepare_again(&reused, scratch, cap).await?
        } else {
            self.mark_stale(&reused);
            false
        };
        let outcome = if retry { "retried" } else { "error" };
        crate::metrics::prepared_replanned(&self.conn.instance.cluster, outcome);
        tracing::debug!(
            statements = reused.len(),
            outcome,
            "a statement prepared here before DDL changed its result columns"
        );
        Ok(if retry {
            Replanned::Retry
        } else {
            Replanned::Relay { answer, status }
        })
    }

    /// Closes and prepares `statements` again on this connection, describing each, in one
    /// batch whose answers are swallowed; whether each has the columns its client was told.
    async fn prepare_again(
        &mut self,
        statements: &[Arc<Prepared>],
        scratch: &mut BytesMut,
        cap: usize,
    ) -> Result<bool, SessionError> {
        scratch.clear();
        for p in statements {
            if !p.name.is_empty() {
                messages::close(scratch, b'S', &p.name);
            }
            scratch.extend_from_slice(&p.parse);
            messages::describe(scratch, b'S', &p.name);
            let evicted = self
                .conn
                .prepared
                .insert(p.name.clone(), p.parse.clone(), cap);
            for (name, _) in evicted {
                crate::metrics::prepared_evicted(&self.conn.instance.cluster);
                if !name.is_empty() {
                    messages::close(scratch, b'S', &name);
                }
            }
        }
        messages::sync(scratch);
        let out = std::mem::take(scratch);
        let sent = self.write(&out).await;
        *scratch = out;
        sent?;
        let mut described = statements.iter();
        let (mut same, mut failed) = (true, false);
        loop {
            while let Ok(Some((h, body))) = frame::message(&self.conn.buf, MAX_BACKEND_MESSAGE) {
                let total = h.total;
                match h.tag {
                    tag::ERROR_RESPONSE if messages::ends_connection(body) => {
                        return Err(self.ended());
                    }
                    tag::ERROR_RESPONSE => failed = true,
                    tag::ROW_DESCRIPTION | tag::NO_DATA => {
                        if let Some(p) = described.next() {
                            let told = p.described.load(Ordering::Relaxed);
                            same &= told == 0 || told == digest(body);
                        }
                    }
                    tag::READY_FOR_QUERY => {
                        self.conn.consume(total);
                        if failed {
                            // Closed, and perhaps not prepared again: trust none of them.
                            self.mark_stale(statements);
                        }
                        return Ok(same && !failed);
                    }
                    _ => {}
                }
                self.conn.consume(total);
            }
            self.fill().await?;
        }
    }

    /// Marks `statements` as not to be trusted here: their next use closes and prepares
    /// them again (a Parse no client sends never matches an empty one).
    fn mark_stale(&mut self, statements: &[Arc<Prepared>]) {
        for p in statements {
            if let Some(parse) = self.conn.prepared.peek_mut(&p.name) {
                *parse = Bytes::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (field, value) in fields {
            body.push(*field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn only_the_plan_cache_error_is_a_stale_plan() {
        let stale = error_body(&[
            (b'S', "ERROR"),
            (b'C', "0A000"),
            (b'M', "cached plan must not change result type"),
            (b'R', "RevalidateCachedQuery"),
        ]);
        assert!(is_stale_plan(&stale));
        // Translated message, same code and routine.
        let translated = error_body(&[
            (b'C', "0A000"),
            (
                b'M',
                "le plan en cache ne doit pas modifier le type en résultat",
            ),
            (b'R', "RevalidateCachedQuery"),
        ]);
        assert!(is_stale_plan(&translated));
        let other = error_body(&[(b'C', "0A000"), (b'R', "transformSelectStmt")]);
        assert!(!is_stale_plan(&other));
        let other = error_body(&[(b'C', "42P01"), (b'R', "RevalidateCachedQuery")]);
        assert!(!is_stale_plan(&other));
        assert!(!is_stale_plan(b""));
        assert_ne!(digest(b""), 0);
        assert_ne!(digest(b"\0\x01a"), digest(b"\0\x02a"));
    }
}
