//! Prepared statements whose result columns DDL changed (`ALTER TABLE … ADD COLUMN` under a
//! `SELECT *`), on connections whose statements many clients share. A server fails a
//! statement prepared before such DDL with "cached plan must not change result type"
//! (SQLSTATE 0A000). The rule: a client gets that error exactly when its own server would,
//! that is when the columns it was told (a digest of the RowDescription that answered its
//! Describe, `Prepared::described`) are not the statement's now. Through the proxy a
//! client's statement may instead be one prepared on the connection before the DDL by
//! another client (same name and text: sqlx, pgx and PHP PDO name statements the same in
//! every connection), or prepared lazily there after it.
//!
//! Two ways, one before and one after the server answers:
//! - **Check before** (`Backend::check_ahead`, `Backend::columns_check`): each statement
//!   on a connection keeps the columns the server last described (`Held::columns`). As a
//!   unit is sent, while nothing of it was written yet (so at most one write per unit in
//!   the common case), the first message that needs it — a Bind or Describe of a statement
//!   whose client was told columns and whose held columns differ, are unknown, or that the
//!   connection lacks, or any message that makes the proxy write before the end of the
//!   unit (a Close, a Parse closing a name first, a statement prepared inline) — starts one
//!   round trip of the proxy's own for every such statement from there to the end of the
//!   unit (kept: once per statement and connection; statements parsed in the unit were
//!   told nothing and need none). Each one's columns are then known: the same → used;
//!   others → the client's Bind or Describe is replaced by one of [`STALE_COLUMNS`], which
//!   the server fails in its place — the batch skips to its Sync and a transaction fails
//!   exactly as they would — and the relay answers that error as `0A000`. A unit whose
//!   statements' columns are all known costs nothing more: the lookup it does anyway.
//!   Not covered: the rest of a batch left open (Flush) that follows within the exchange
//!   (`forward_more`), where the server is mid-batch and no round trip fits; and a unit
//!   using more statements than `max_prepared_statements`, whose own evictions may drop
//!   one checked.
//! - **Retry after** (`Backend::replan`), for a client told nothing, or a statement the
//!   check could not reach: the server's error is held back when it is the first answer of a
//!   whole batch (up to its Sync, still in the client buffer: nothing of it ran or reached
//!   the client) that reused a statement the connection held (`Backend::reused`). When
//!   the ReadyForQuery after it says `I` (no transaction block: nothing is lost by running
//!   again), the statements are prepared again and, when each has the columns its client
//!   was told (or it was told none), the batch runs once more; a second such error is
//!   relayed (`Backend::hold_stale_plan` is off for the retry). In a transaction block the
//!   error is relayed (the transaction failed, as on a server) and the statements are
//!   marked so that their next use prepares them again.
//!
//! Why not only evict the stale statement: the client that prepared after the DDL did all a
//! client can, and the error would be the proxy's making; and why not only retry: a client
//! told the old columns must get the error (tokio-postgres reads rows by the columns it was
//! told, and prepares again after that error), and one told the new columns must not, also
//! inside a transaction, where no retry is possible.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::SessionError;
use super::backend::{Backend, MAX_BACKEND_MESSAGE};
use super::scan::Prepared;
use crate::backend::postgres::Held;
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::protocol::postgres::{frame, sqlstate};

/// The server routine that raises the error: its `R` field is never translated, unlike
/// the message, and other errors share the SQLSTATE.
const REVALIDATE_ROUTINE: &str = "RevalidateCachedQuery";
const REVALIDATE: &[u8] = REVALIDATE_ROUTINE.as_bytes();

/// The server's words for the error, which the proxy gives when it fails a statement in
/// its place.
const STALE_PLAN_MESSAGE: &str = "cached plan must not change result type";

/// A statement name no client uses, bound or described in place of a statement whose
/// columns changed since its client was told them: the server fails it where it would
/// have failed the client's own (the batch skipped to its Sync, the transaction failed),
/// and the proxy answers that error as `0A000`.
const STALE_COLUMNS: &[u8] = b"switchyard: columns changed";

/// Whether an ErrorResponse body is "cached plan must not change result type".
pub fn is_stale_plan(body: &[u8]) -> bool {
    messages::error_field(body, b'C') == Some(sqlstate::FEATURE_NOT_SUPPORTED.as_bytes())
        && messages::error_field(body, b'R') == Some(REVALIDATE)
}

/// The digests' hasher: foldhash, fixed (a digest is compared with others of this process
/// only), computed for every RowDescription a Describe of a statement brings.
const DIGEST: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0);

/// A digest of a RowDescription (or NoData) body; never 0, which stands for "told none".
/// Each column's format code is left out: a Describe of a statement says 0 (text) for
/// every column, a Describe of a portal the formats its Bind asked for, and both tell a
/// client the same columns (pgjdbc learns a statement's columns from the portal's).
pub fn digest(columns: &[u8]) -> u64 {
    fields_digest(columns).unwrap_or_else(|| {
        // Not a RowDescription this proxy can read (NoData's empty body is one): as it is.
        DIGEST.hash_one(columns) | 1
    })
}

/// [`digest`] of a RowDescription body, field by field without the format codes.
fn fields_digest(columns: &[u8]) -> Option<u64> {
    /// A field after its name: table oid, column number, type oid, type size, type
    /// modifier, then the format code, which is left out.
    const FIXED: usize = 4 + 2 + 4 + 2 + 4;
    const FORMAT: usize = 2;
    let (count, mut rest) = columns.split_first_chunk::<2>()?;
    let mut hasher = DIGEST.build_hasher();
    for _ in 0..u16::from_be_bytes(*count) {
        let (name, after) = frame::cstr(rest)?;
        name.hash(&mut hasher);
        after.get(..FIXED)?.hash(&mut hasher);
        rest = after.get(FIXED + FORMAT..)?;
    }
    rest.is_empty().then(|| hasher.finish() | 1)
}

/// What a Bind or Describe of a client's statement meets on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The connection holds it with the client's text, and its columns are the ones the
    /// client was told as far as the proxy knows: used as it is.
    Held,
    /// Prepared again just now, with the client's columns: used as it is.
    Fresh,
    /// Its columns here are not the ones the client was told (DDL came between): its own
    /// server would fail it with `0A000`, so it is failed in place.
    Changed,
    /// To prepare here, as part of the unit.
    Prepare,
    /// The client was told columns that are not known to be the statement's here (the
    /// connection holds it with other or unknown columns, or lacks it): a round trip of the
    /// proxy's own tells, while nothing of the unit was written (`Backend::check_ahead`).
    /// `held`: the connection holds it with the client's text.
    Unknown { held: bool },
}

impl Check {
    /// What a statement whose columns could not be checked meets: it is used as held or
    /// prepared as part of the unit, and the server decides (see `Backend::replan`).
    pub fn unverified(self) -> Check {
        match self {
            Check::Unknown { held: true } => Check::Held,
            Check::Unknown { held: false } => Check::Prepare,
            other => other,
        }
    }
}

/// Adds to `out` the message sent in place of a client's Bind (`tag` B) or Describe of a
/// statement whose columns changed: one naming [`STALE_COLUMNS`], which fails.
pub fn fail_in_place(out: &mut BytesMut, tag: u8) {
    if tag == tag::BIND {
        messages::bind_plain(out, STALE_COLUMNS);
    } else {
        messages::describe(out, b'S', STALE_COLUMNS);
    }
}

/// Whether an ErrorResponse body answers [`fail_in_place`]'s message: the statement name
/// appears quoted in the server's message, translated or not.
pub fn failed_in_place(body: &[u8]) -> bool {
    messages::error_field(body, b'C') == Some(sqlstate::INVALID_SQL_STATEMENT_NAME.as_bytes())
        && messages::error_field(body, b'M')
            .is_some_and(|m| m.windows(STALE_COLUMNS.len()).any(|w| w == STALE_COLUMNS))
}

/// The error a statement failed in place is answered with: the server's own.
pub fn stale_columns_error(out: &mut BytesMut) {
    // With the server's file and routine: pgjdbc prepares the statement again and retries
    // (outside a transaction) only for an error raised by this routine.
    messages::error_response_with(
        out,
        Severity::Error,
        sqlstate::FEATURE_NOT_SUPPORTED,
        STALE_PLAN_MESSAGE,
        &[(b'F', "plancache.c"), (b'R', REVALIDATE_ROUTINE)],
    );
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
        let reused = std::mem::take(&mut self.q.reused);
        let retry = if status == b'I' {
            self.prepare_again(&reused, scratch, cap).await? == Some(true)
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

    /// What a Bind or Describe of `p` meets here (see [`Check`]), `verified` holding the
    /// statements of the unit [`Backend::check_ahead`] prepared and described just now.
    pub(super) fn columns_check(&mut self, p: &Arc<Prepared>, verified: &[Arc<Prepared>]) -> Check {
        let told = p.described.load(Ordering::Relaxed);
        let held = self.conn.prepared.get(&p.name);
        let same_text = held.is_some_and(|h| super::backend::same_bytes(&h.parse, &p.parse));
        if !verified.is_empty() && verified.iter().any(|v| Arc::ptr_eq(v, p)) {
            return match held {
                Some(h) if same_text && h.columns == told => Check::Fresh,
                Some(_) if same_text => Check::Changed,
                // Refused, or evicted since: prepared as part of the unit.
                _ => Check::Prepare,
            };
        }
        match held {
            _ if told == 0 && same_text => Check::Held,
            _ if told == 0 => Check::Prepare,
            Some(h) if same_text && h.columns == told => Check::Held,
            _ => Check::Unknown { held: same_text },
        }
    }

    /// Before anything of a unit is written: prepares and describes again, in one round
    /// trip of the proxy's own, each statement among `refs` (the unit's, from the message
    /// about to be sent on) whose client was told columns when the connection lacks it,
    /// holds other text under its name, or holds it with other or unknown columns. Returns
    /// those statements, whose columns are then known here (`Held::columns`). Every
    /// statement of `refs` is marked used first, so that those prepared now do not evict
    /// them (unless the unit uses more than `cap`). Nothing is done while bytes the server
    /// sent wait unread.
    pub(super) async fn check_ahead(
        &mut self,
        refs: &[Option<Arc<Prepared>>],
        scratch: &mut BytesMut,
        cap: usize,
    ) -> Result<Vec<Arc<Prepared>>, SessionError> {
        let mut stale: Vec<Arc<Prepared>> = Vec::new();
        if !self.conn.buf.is_empty() {
            return Ok(stale);
        }
        for p in refs.iter().flatten() {
            // Statements parsed in the unit were told nothing yet: fresh.
            let told = p.described.load(Ordering::Relaxed);
            let known = match self.conn.prepared.get(&p.name) {
                Some(held) => {
                    told == 0
                        || (super::backend::same_bytes(&held.parse, &p.parse)
                            && held.columns == told)
                }
                None => told == 0,
            };
            if !known && !stale.iter().any(|s| Arc::ptr_eq(s, p)) {
                stale.push(Arc::clone(p));
            }
        }
        if !stale.is_empty() {
            self.prepare_again(&stale, scratch, cap).await?;
            scratch.clear();
        }
        Ok(stale)
    }

    /// Closes and prepares `statements` again on this connection, describing each, in one
    /// batch whose answers are swallowed: whether each has the columns its client was told
    /// (or was told none); `None` when the server refused (they are then marked stale).
    /// Anything else that arrives meanwhile (a notice, a notification) is kept for the relay.
    async fn prepare_again(
        &mut self,
        statements: &[Arc<Prepared>],
        scratch: &mut BytesMut,
        cap: usize,
    ) -> Result<Option<bool>, SessionError> {
        scratch.clear();
        for p in statements {
            if !p.name.is_empty() {
                messages::close(scratch, b'S', &p.name);
            }
            scratch.extend_from_slice(&p.parse);
            messages::describe(scratch, b'S', &p.name);
            let evicted =
                self.conn
                    .prepared
                    .insert(p.name.clone(), Held::new(p.parse.clone()), cap);
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
        let mut columns = Vec::with_capacity(statements.len());
        let mut aside = Vec::new();
        loop {
            // A BEGIN sent ahead went out with this round trip: its answers come first.
            if self.begin == super::backend::Ahead::Owed && !self.swallow_begin()? {
                self.fill().await?;
                continue;
            }
            while let Ok(Some((h, body))) = frame::message(&self.conn.buf, MAX_BACKEND_MESSAGE) {
                let total = h.total;
                match h.tag {
                    tag::ERROR_RESPONSE if messages::ends_connection(body) => {
                        return Err(self.ended());
                    }
                    tag::ERROR_RESPONSE => failed = true,
                    tag::ROW_DESCRIPTION | tag::NO_DATA => {
                        if let Some(p) = described.next() {
                            let now = digest(body);
                            let told = p.described.load(Ordering::Relaxed);
                            same &= told == 0 || told == now;
                            columns.push((p, now));
                        }
                    }
                    tag::READY_FOR_QUERY => {
                        self.conn.consume(total);
                        if !aside.is_empty() {
                            let rest = self.conn.buf.split();
                            self.conn.buf.extend_from_slice(&aside);
                            self.conn.buf.extend_from_slice(&rest);
                        }
                        if failed {
                            // Closed, and perhaps not prepared again: trust none of them.
                            self.mark_stale(statements);
                            return Ok(None);
                        }
                        for (p, now) in columns {
                            if let Some(held) = self.conn.prepared.peek_mut(&p.name) {
                                held.columns = now;
                            }
                        }
                        return Ok(Some(same));
                    }
                    tag::PARSE_COMPLETE | tag::CLOSE_COMPLETE | tag::PARAMETER_DESCRIPTION => {}
                    _ => aside.extend_from_slice(&self.conn.buf[..total]),
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
            if let Some(held) = self.conn.prepared.peek_mut(&p.name) {
                held.parse = Bytes::new();
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
        // Columns that could not be checked: the statement is used or prepared as it is.
        assert_eq!(Check::Unknown { held: true }.unverified(), Check::Held);
        assert_eq!(Check::Unknown { held: false }.unverified(), Check::Prepare);
        assert_eq!(Check::Changed.unverified(), Check::Changed);
        assert_ne!(digest(b""), 0);
        assert_ne!(digest(b"\0\x01a"), digest(b"\0\x02a"));
    }

    /// A RowDescription body of columns (name, type oid, format code).
    fn row_description(columns: &[(&str, u32, u16)]) -> Vec<u8> {
        let mut body = (columns.len() as u16).to_be_bytes().to_vec();
        for (name, oid, format) in columns {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&[0, 0, 0x40, 0, 0, 1]);
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&[0, 4, 0xff, 0xff, 0xff, 0xff]);
            body.extend_from_slice(&format.to_be_bytes());
        }
        body
    }

    #[test]
    fn the_error_given_in_place_reads_as_the_servers() {
        let mut out = BytesMut::new();
        stale_columns_error(&mut out);
        let body = &out[frame::HEADER_LEN..];
        assert!(is_stale_plan(body), "the routine drivers look for is there");
        assert_eq!(
            messages::error_field(body, b'M'),
            Some(STALE_PLAN_MESSAGE.as_bytes())
        );
    }

    #[test]
    fn a_portal_and_its_statement_describe_the_same_columns() {
        let statement = row_description(&[("id", 23, 0), ("a", 23, 0)]);
        let portal = row_description(&[("id", 23, 1), ("a", 23, 1)]);
        assert_eq!(digest(&statement), digest(&portal), "formats left out");
        let added = row_description(&[("id", 23, 0), ("a", 23, 0), ("b", 25, 0)]);
        assert_ne!(digest(&statement), digest(&added), "a column more");
        let retyped = row_description(&[("id", 23, 0), ("a", 20, 0)]);
        assert_ne!(
            digest(&statement),
            digest(&retyped),
            "a column of another type"
        );
        let renamed = row_description(&[("id", 23, 0), ("b", 23, 0)]);
        assert_ne!(digest(&statement), digest(&renamed), "a column renamed");
        let mut cut = statement.clone();
        cut.pop();
        assert_ne!(
            digest(&cut),
            digest(&statement),
            "a body cut short is digested as it is"
        );
    }
}
