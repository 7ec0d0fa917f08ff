//! Transaction mode: a plain `BEGIN` between transactions is answered by the proxy, and
//! sent to the server with the transaction's first statement.
//!
//! A client that sends `BEGIN`, waits for its answer and then sends its first statement
//! would otherwise hold a pooled connection over one more round trip of its own per
//! transaction: with many clients over a small pool, where the pool is what they wait for,
//! that round trip is part of every transaction's hold time. Answered here, the `BEGIN`
//! takes no connection; the next unit takes one, and the `BEGIN` goes out ahead of it:
//!
//! - before an extended-protocol batch, as Parse/Bind/Execute of the unnamed statement
//!   without a Sync, in the same write as the batch ([`Ahead`]). Its three answers come
//!   first in the server's answer to the batch (one flush, at the batch's Sync), and are
//!   swallowed; anything else there is a failed `BEGIN`, and the connection is failed,
//!   before any of the batch's answers reach the client (the server skipped the batch, up
//!   to its Sync, after the error);
//! - before a simple Query (or anything else), as a Query of its own whose answer is read
//!   first: a simple Query cannot be skipped on a `BEGIN`'s error, and must not run
//!   outside the transaction its client opened.
//!
//! Only a `BEGIN` that can neither fail nor mean anything else is deferred: `BEGIN`,
//! `BEGIN WORK`, `BEGIN TRANSACTION`, `START TRANSACTION` (no options, no comments), alone
//! in its unit, which ends with Sync. The session is then in a transaction (`T`) for its
//! client and holds no connection; the cutover's drain does not wait for it (it runs
//! nothing), a shutdown's drain does (the client is mid-transaction), and the transaction's
//! first unit passes the migration gate as a `BEGIN` would have.

use bytes::BytesMut;

use super::backend::{Ahead, Backend};
use super::scan::{Ending, Prepared, Unit};
use super::{Session, SessionError};
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};
use crate::router::Target;
use crate::session::migration::Refusal;
use crate::sql::{Class, Dialect, plain_begin};

/// The `BEGIN` sent ahead of an extended-protocol batch: Parse of the unnamed statement,
/// Bind to the unnamed portal, Execute; no Sync (the batch's own ends it).
const AHEAD: &[u8] = b"P\0\0\0\x0d\0BEGIN\0\0\0\
    B\0\0\0\x0c\0\0\0\0\0\0\0\0\
    E\0\0\0\x09\0\0\0\0\0";

/// What the server answers [`AHEAD`] with: ParseComplete, BindComplete, CommandComplete.
const AHEAD_ANSWERS: [&[u8]; 3] = [b"1\0\0\0\x04", b"2\0\0\0\x04", b"C\0\0\0\x0aBEGIN\0"];

impl Session {
    /// Whether `unit` is a `BEGIN` to answer here (see the module's doc), and its answer.
    pub(super) fn deferred_begin(&self, unit: &Unit) -> Option<BytesMut> {
        let plain = matches!(unit.stmt.class, Class::Begin { read_only: false })
            && unit.stmt.count == 1
            && unit.ending == Ending::Ready
            && unit.refused.is_none()
            && self.pooled()
            && self.view.in_transaction.is_none()
            && !self.view.pinned_to_writer
            && self.writer.is_none();
        if !plain
            || !unit
                .refs
                .iter()
                .all(|p| p.as_deref().is_some_and(plain_statement))
        {
            return None;
        }
        begin_answer(&self.side.client.buf[..unit.end])
    }

    /// Answers `unit`, a `BEGIN` [`Session::deferred_begin`] took, with `answer`: the
    /// session is in a transaction that has not started on any server yet.
    pub(super) async fn defer_begin(
        &mut self,
        unit: Unit,
        answer: BytesMut,
    ) -> Result<(), SessionError> {
        self.side.begin_deferred = true;
        self.side.status = b'T';
        self.side.scanner.recycle(unit.refs);
        self.answer_with(unit.end, &answer).await
    }

    /// Whether `unit`, a batch of only Closes and its Sync (a driver closing statements it
    /// is done with: tokio-postgres after each one-off statement), is answered here: in
    /// transaction mode, holding no connection, outside a transaction or in one deferred.
    /// Such a unit needs no server: a client's Close never closes a statement on a pooled
    /// connection (it stays prepared there for the next client, `Backend::forward`), and
    /// outside a transaction no portal is left to close; the scanner already forgot the
    /// client's names. It would otherwise take a connection from the pool for nothing.
    pub(super) fn closes_here(&self, unit: &Unit) -> bool {
        let idle = self.view.in_transaction.is_none() && self.writer.is_none();
        self.pooled()
            && (idle || self.side.begin_deferred)
            && !self.view.pinned_to_writer
            && unit.ending == Ending::Ready
            && unit.refused.is_none()
    }

    /// Starts the transaction a deferred `BEGIN` opened, for `unit`, its first work: past
    /// the migration gate (as the `BEGIN` would have passed it), on a writer connection,
    /// with the `BEGIN` sent ahead of `unit` (see the module's doc). `false` when `unit`
    /// was answered here: no usable writer within `failover_timeout`, so the transaction
    /// failed before anything ran; its client is answered as for a lost transaction until
    /// it ends it.
    pub(super) async fn begin_now(&mut self, unit: &Unit) -> Result<bool, SessionError> {
        self.side.begin_deferred = false;
        if self.moved() {
            self.follow_active().await?;
        }
        if let Some(Refusal { code, message }) = self.migration_gate(false).await? {
            self.transaction(Some(Target::Writer));
            self.drop_writer();
            self.side.status = b'E';
            self.answer(unit.end, code, &message, b'E').await?;
            return Ok(false);
        }
        self.transaction(Some(Target::Writer));
        let Some(writer) = self.writer.as_mut() else {
            // Answered as a lost transaction by the flow (`writer_in_transaction`).
            return Ok(true);
        };
        if extended(unit) {
            // The unnamed statement on the connection is the `BEGIN` from now on.
            writer.conn.prepared.remove(&Vec::new());
            writer.begin = Ahead::Unsent;
            return Ok(true);
        }
        let scratch = &mut self.side.scratch;
        if let Some(message) = writer.run_silently("BEGIN", scratch).await? {
            return Err(SessionError::BackendProtocol {
                addr: writer.conn.instance.addr.clone(),
                detail: format!("the server refused a BEGIN: {message}"),
            });
        }
        Ok(true)
    }
}

/// Whether `unit` is an extended-protocol batch (it starts with one of its messages).
fn extended(unit: &Unit) -> bool {
    matches!(
        unit.first_tag,
        tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE
    )
}

/// The answer a server gives `bytes`, a unit that only begins a transaction in one of the
/// plain ways (a simple Query; or Parse, Bind, Describe, Execute of one statement without
/// parameters or options, then Sync); `None` for any other unit.
fn begin_answer(bytes: &[u8]) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    let (mut at, mut executed, mut synced) = (0, false, false);
    while let Ok(Some((h, body))) = frame::message(&bytes[at..], usize::MAX) {
        at += h.total;
        if synced {
            return None;
        }
        match h.tag {
            tag::QUERY if at == h.total && at == bytes.len() => {
                plain_begin(messages::query_text(body)?, Dialect::Postgres).then_some(())?;
                messages::command_complete(&mut out, "BEGIN");
                messages::ready_for_query(&mut out, b'T');
                return Some(out);
            }
            tag::PARSE => {
                let (_, sql) = messages::parse_fields(body)?;
                let no_types = messages::parse_type_count(body)? == 0;
                (plain_begin(sql, Dialect::Postgres) && no_types && !executed).then_some(())?;
                messages::parse_complete(&mut out);
            }
            tag::BIND => {
                let (portal, _) = messages::bind_without_values(body)?;
                (portal.is_empty() && !executed).then_some(())?;
                messages::bind_complete(&mut out);
            }
            tag::DESCRIBE => match messages::target_fields(body)? {
                (b'S', _) => {
                    messages::no_parameters(&mut out);
                    messages::no_data(&mut out);
                }
                (b'P', b"") => messages::no_data(&mut out),
                _ => return None,
            },
            tag::EXECUTE if messages::execute_portal(body)?.is_empty() && !executed => {
                executed = true;
                messages::command_complete(&mut out, "BEGIN");
            }
            tag::SYNC if executed => {
                synced = true;
                messages::ready_for_query(&mut out, b'T');
            }
            _ => return None,
        }
    }
    (synced && at == bytes.len()).then_some(out)
}

/// Whether the client's prepared statement `p` is a plain `BEGIN` without parameter types.
fn plain_statement(p: &Prepared) -> bool {
    let body = p.parse.get(frame::HEADER_LEN..).unwrap_or_default();
    let no_types = messages::parse_type_count(body) == Some(0);
    no_types
        && p.sql_bytes()
            .is_some_and(|sql| plain_begin(sql, Dialect::Postgres))
}

/// What [`Backend::write`] sends in place of `bytes`, the first bytes written after a
/// `BEGIN` was put ahead: both, in one write.
pub(super) fn after_begin(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AHEAD.len() + bytes.len());
    out.extend_from_slice(AHEAD);
    out.extend_from_slice(bytes);
    out
}

impl Backend {
    /// Takes the answers to a `BEGIN` sent ahead from what the server sent (see
    /// [`begin_answers`]); `false` while they have not all arrived. Anything else in their
    /// place fails the connection: the `BEGIN` failed, and the server skipped the unit
    /// after it.
    pub(super) fn swallow_begin(&mut self) -> Result<bool, SessionError> {
        let (from, to) = match begin_answers(&self.conn.buf) {
            Ok(Some(range)) => range,
            Ok(None) => return Ok(false),
            Err(detail) => {
                self.begin = Ahead::None;
                return Err(SessionError::BackendProtocol {
                    addr: self.conn.instance.addr.clone(),
                    detail,
                });
            }
        };
        self.begin = Ahead::None;
        if from == 0 {
            self.conn.consume(to);
        } else {
            let buf = &mut self.conn.buf;
            let len = buf.len();
            buf.copy_within(to.., from);
            buf.truncate(len - (to - from));
        }
        Ok(true)
    }
}

/// Where in `buf`, what a server sent after a `BEGIN` was sent ahead, its three answers
/// are: after any messages a server sends unasked (a notice, a parameter status, a
/// notification), which stay for the relay. `None` while they have not all arrived; the
/// words for the log when something else came in their place.
fn begin_answers(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let unasked = |tag: u8| {
        matches!(
            tag,
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS | tag::NOTIFICATION_RESPONSE
        )
    };
    let mut from = 0;
    loop {
        let rest = &buf[from..];
        match frame::header(rest, usize::MAX) {
            Ok(Some(h)) if unasked(h.tag) => {
                if rest.len() < h.total {
                    return Ok(None);
                }
                from += h.total;
            }
            Ok(None) if rest.first().copied().is_some_and(unasked) => return Ok(None),
            _ => break,
        }
    }
    let mut to = from;
    for answer in AHEAD_ANSWERS {
        let rest = &buf[to..];
        if rest.starts_with(answer) {
            to += answer.len();
        } else if answer.starts_with(rest) {
            return Ok(None);
        } else {
            return Err(match frame::message(rest, usize::MAX).ok().flatten() {
                Some((h, body)) if h.tag == tag::ERROR_RESPONSE => {
                    let (_, message) = messages::error_fields(body);
                    format!("the server refused a BEGIN: {message}")
                }
                _ => "the server answered a BEGIN with something else".to_owned(),
            });
        }
    }
    Ok(Some((from, to)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::messages::Severity;

    #[test]
    fn the_begin_sent_ahead_is_what_a_client_sends() {
        let mut out = BytesMut::new();
        messages::parse(&mut out, b"", b"BEGIN");
        messages::bind_plain(&mut out, b"");
        messages::execute(&mut out, b"");
        assert_eq!(&out[..], AHEAD);
        let mut answers = BytesMut::new();
        messages::parse_complete(&mut answers);
        messages::bind_complete(&mut answers);
        messages::command_complete(&mut answers, "BEGIN");
        assert_eq!(&answers[..], AHEAD_ANSWERS.concat());
    }

    fn query(sql: &str) -> BytesMut {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        out
    }

    fn tags(answer: &[u8]) -> Vec<u8> {
        let mut at = 0;
        let mut tags = Vec::new();
        while let Ok(Some((h, _))) = frame::message(&answer[at..], usize::MAX) {
            tags.push(h.tag);
            at += h.total;
        }
        tags
    }

    #[test]
    fn a_simple_begin_is_answered_as_the_server_does() {
        let answer = begin_answer(&query("BEGIN")).expect("a plain BEGIN");
        assert_eq!(tags(&answer), b"CZ");
        assert!(answer.ends_with(b"Z\0\0\0\x05T"));
        assert!(begin_answer(&query("BEGIN READ ONLY")).is_none());
        let mut two = query("BEGIN");
        two.extend_from_slice(&query("SELECT 1"));
        assert!(begin_answer(&two).is_none(), "a unit of one Query only");
    }

    #[test]
    fn an_extended_begin_is_answered_message_by_message() {
        // libpq's PQexecParams: Parse, Bind, Describe portal, Execute, Sync.
        let mut unit = BytesMut::new();
        messages::parse(&mut unit, b"", b"BEGIN");
        messages::bind_plain(&mut unit, b"");
        messages::describe(&mut unit, b'P', b"");
        messages::execute(&mut unit, b"");
        messages::sync(&mut unit);
        let answer = begin_answer(&unit).expect("a plain BEGIN");
        assert_eq!(tags(&answer), b"12nCZ");
        // A prepared one (pgbench -M prepared): Bind, Describe, Execute, Sync.
        let mut unit = BytesMut::new();
        messages::bind_plain(&mut unit, b"P0_0");
        messages::describe(&mut unit, b'P', b"");
        messages::execute(&mut unit, b"");
        messages::sync(&mut unit);
        assert_eq!(tags(&begin_answer(&unit).expect("plain")), b"2nCZ");
        // Its statement described: ParameterDescription and NoData.
        let mut unit = BytesMut::new();
        messages::parse(&mut unit, b"s1", b"START TRANSACTION");
        messages::describe(&mut unit, b'S', b"s1");
        messages::bind_plain(&mut unit, b"s1");
        messages::execute(&mut unit, b"");
        messages::sync(&mut unit);
        assert_eq!(tags(&begin_answer(&unit).expect("plain")), b"1tn2CZ");
    }

    #[test]
    fn anything_more_than_a_plain_begin_goes_to_the_server() {
        let with = |build: &dyn Fn(&mut BytesMut)| {
            let mut unit = BytesMut::new();
            build(&mut unit);
            begin_answer(&unit)
        };
        let plain = |u: &mut BytesMut| {
            messages::parse(u, b"", b"BEGIN");
            messages::bind_plain(u, b"");
            messages::execute(u, b"");
        };
        assert!(with(&|u| plain(u)).is_none(), "no Sync: a batch left open");
        assert!(
            with(&|u| {
                plain(u);
                messages::sync(u);
                messages::sync(u);
            })
            .is_none(),
            "two Syncs"
        );
        assert!(
            with(&|u| {
                plain(u);
                messages::execute(u, b"");
                messages::sync(u);
            })
            .is_none(),
            "two Executes"
        );
        assert!(
            with(&|u| {
                messages::parse(u, b"", b"BEGIN ISOLATION LEVEL SERIALIZABLE");
                messages::bind_plain(u, b"");
                messages::execute(u, b"");
                messages::sync(u);
            })
            .is_none(),
            "options"
        );
        assert!(
            with(&|u| {
                plain(u);
                messages::close(u, b'S', b"");
                messages::sync(u);
            })
            .is_none(),
            "a Close"
        );
        // A Bind with a parameter value.
        let mut unit = BytesMut::new();
        messages::parse(&mut unit, b"", b"BEGIN");
        unit.extend_from_slice(b"B\0\0\0\x12\0\0\0\0\0\x01\0\0\0\x01x\0\0");
        messages::execute(&mut unit, b"");
        messages::sync(&mut unit);
        assert!(begin_answer(&unit).is_none(), "a parameter value");
        // Parameter types declared.
        let mut unit = BytesMut::new();
        unit.extend_from_slice(b"P\0\0\0\x11\0BEGIN\0\0\x01\0\0\0\x17");
        messages::bind_plain(&mut unit, b"");
        messages::execute(&mut unit, b"");
        messages::sync(&mut unit);
        assert!(begin_answer(&unit).is_none(), "a parameter type");
    }

    #[test]
    fn the_answers_to_a_begin_sent_ahead_are_found_whole_after_unasked_messages() {
        let answers = AHEAD_ANSWERS.concat();
        let mut after = answers.clone();
        after.extend_from_slice(b"2\0\0\0\x04");
        assert_eq!(begin_answers(&after), Ok(Some((0, 21))));
        for cut in 0..answers.len() {
            assert_eq!(begin_answers(&answers[..cut]), Ok(None), "{cut} bytes");
        }
        let mut notice = BytesMut::new();
        messages::warning(&mut notice, "01000", "a notice");
        let n = notice.len();
        for cut in 0..n {
            assert_eq!(begin_answers(&notice[..cut]), Ok(None), "{cut} bytes");
        }
        notice.extend_from_slice(&answers);
        assert_eq!(begin_answers(&notice), Ok(Some((n, n + 21))));
        let mut refused = BytesMut::new();
        messages::parse_complete(&mut refused);
        messages::error_response(&mut refused, Severity::Error, "XX000", "no");
        let err = begin_answers(&refused).expect_err("an error in their place");
        assert!(err.contains("no"), "{err}");
        assert!(begin_answers(b"Z\0\0\0\x05I").is_err());
    }
}
