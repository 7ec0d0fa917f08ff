//! One backend connection as a session uses it: which of the client's statements are
//! prepared on it, and the replies to swallow (those to messages the proxy injected); the
//! relay of its responses to the client as runs of bytes is `relay`'s.

use crate::pool::Lease;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::SessionError;
use super::replan::Check;
use super::scan::{Deallocate, Prepared, Refusal, Refused};
use crate::backend::postgres::{BackendConn, Held};
use crate::net::Arrived;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};
use crate::protocol::postgres::sqlstate;

/// Backend messages are streamed, so this only bounds a declared length.
pub(super) const MAX_BACKEND_MESSAGE: usize = i32::MAX as usize;

/// A statement name no client uses: a client's Close of a statement is sent as a Close of
/// this one, which the server answers with CloseComplete and nothing else.
const NO_STATEMENT: &[u8] = b"switchyard: no statement";

/// The unit's Describe messages not answered yet, in order, each with the statement whose
/// columns the RowDescription (or NoData) answering it tells the client
/// (`Prepared::described`): of a statement (a ParameterDescription comes first), or of a
/// portal bound in the unit from a named statement (with the formats the Bind asked for).
/// Describes of other portals (libpq describes the unnamed portal of every query) before
/// any of those are only counted: no queue is kept for them.
#[derive(Debug, Default)]
pub(super) struct Describes {
    queue: VecDeque<Describing>,
    /// Portal Describes that tell nothing, answered before everything queued.
    untold_first: usize,
    /// The statement whose ParameterDescription just arrived: its RowDescription or
    /// NoData follows.
    now: Option<Arc<Prepared>>,
}

#[derive(Debug)]
enum Describing {
    Statement(Option<Arc<Prepared>>),
    Portal(Option<Arc<Prepared>>),
}

impl Describes {
    pub(super) fn statement(&mut self, p: Option<Arc<Prepared>>) {
        self.queue.push_back(Describing::Statement(p));
    }

    pub(super) fn portal(&mut self, p: Option<Arc<Prepared>>) {
        if p.is_none() && self.queue.is_empty() {
            self.untold_first += 1;
        } else {
            self.queue.push_back(Describing::Portal(p));
        }
    }

    /// A ParameterDescription arrived: it answers the first statement Describe.
    pub(super) fn parameters(&mut self) {
        self.now = match self.queue.pop_front() {
            Some(Describing::Statement(p)) => p,
            _ => None,
        };
    }

    /// A RowDescription or NoData arrived: the statement whose columns it tells, if any.
    pub(super) fn columns(&mut self) -> Option<Arc<Prepared>> {
        if let Some(p) = self.now.take() {
            return Some(p);
        }
        if self.untold_first > 0 {
            self.untold_first -= 1;
            return None;
        }
        match self.queue.front() {
            Some(Describing::Portal(_)) => match self.queue.pop_front() {
                Some(Describing::Portal(p)) => p,
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the RowDescription or NoData next tells a statement's columns.
    pub(super) fn tells_next(&self) -> bool {
        self.now.is_some()
            || self.untold_first == 0
                && matches!(self.queue.front(), Some(Describing::Portal(Some(_))))
    }

    /// An error: the backend skips to Sync, and the descriptions still owed do not come.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.untold_first = 0;
        self.now = None;
    }
}

/// A statement name no client uses, described in place of a client message its server
/// would refuse (`Refused`): the server fails it, and the relay answers with the error the
/// client's own server gives (`AfterErrors::refusals`).
pub(super) const REFUSED: &[u8] = b"switchyard: refused";

/// Whether an ErrorResponse body answers a Describe of [`REFUSED`].
pub(super) fn answers_refusal(body: &[u8]) -> bool {
    messages::error_field(body, b'C') == Some(sqlstate::INVALID_SQL_STATEMENT_NAME.as_bytes())
        && messages::error_field(body, b'M')
            .is_some_and(|m| m.windows(REFUSED.len()).any(|w| w == REFUSED))
}

/// What a unit's failures leave to do (see `Backend::after_errors`).
#[derive(Debug, Default)]
pub(super) struct AfterErrors {
    /// The errors owed, in order, for client messages failed in place (`Refused`).
    pub(super) refusals: VecDeque<Refusal>,
    /// The client's own Parses that the server did not run (they failed, or an error
    /// before them skipped them): the session forgets those statements, as the server
    /// never had them.
    pub(super) failed_client_parses: Vec<(Vec<u8>, Bytes)>,
}

/// A ParseComplete or CloseComplete the backend owes, in order.
#[derive(Debug)]
pub(super) struct Owed {
    /// The statement a Parse prepares here: its name and Parse message.
    pub(super) parse: Option<(Vec<u8>, Bytes)>,
    pub(super) swallow: bool,
}

/// What a backend queues while a unit runs, behind one pointer: a backend is moved several
/// times a transaction as the session takes and gives back its connection, and without
/// its queues in line it moves in a few register moves instead of a `memcpy`. Emptied,
/// the box and the queues' capacity go from one connection to the next (see [`Spare`]).
#[derive(Debug, Default)]
pub struct Queues {
    pub(super) owed: VecDeque<Owed>,
    /// The statements the unit being sent binds or describes as this connection already
    /// held them (prepared here before, by this client or another): the ones a "cached
    /// plan must not change result type" can be about (see `replan`).
    pub(super) reused: Vec<Arc<Prepared>>,
    /// The unit's Describe messages not answered yet (see [`Describes`]).
    pub(super) describing: Describes,
    /// The columns Describes of statements showed, while a response is relayed (kept
    /// here for its capacity).
    pub(super) learned: Vec<(Arc<Prepared>, u64)>,
    /// Set for a unit that may drop prepared statements on the server (SQL `DISCARD ALL`,
    /// `DEALLOCATE`, which pin the session): its CommandComplete tags are watched so the
    /// connection's cache follows what the server did. Holds the name a lone `DEALLOCATE
    /// name` drops, when the unit is one.
    pub(super) watch_drops: Option<Option<Vec<u8>>>,
    /// What the server confirmed it dropped, for the session to forget as well.
    pub(super) deallocated: Option<Deallocate>,
}

impl Queues {
    /// Empties it for the next connection, keeping the capacity.
    fn clear(&mut self) {
        self.owed.clear();
        self.reused.clear();
        self.describing.clear();
        self.learned.clear();
        self.watch_drops = None;
        self.deallocated = None;
    }
}

/// A backend's queues, empty, kept with their capacity from one connection to the next
/// (see `flow::Held::Spare`).
pub type Spare = Box<Queues>;

pub struct Backend {
    pub conn: Lease<BackendConn>,
    /// What it queues while a unit runs (see [`Queues`]).
    pub(super) q: Spare,
    /// Bytes of a forwarded message still to arrive from the backend.
    pub(super) forward_remaining: usize,
    /// How many recorded session SETs this connection has run.
    pub applied: usize,
    /// Set while that error, should it answer the unit first, is held back for a retry
    /// instead of relayed (`Relayed::stale_plan`); cleared once anything reached the client.
    pub(super) hold_stale_plan: bool,
    /// Set while the first message of a unit is being sent: nothing of it was written yet,
    /// so a statement can be prepared and described in a round trip of its own first.
    pub(super) unit_start: bool,
    /// A Bind or Describe of a statement whose columns changed since the client was told
    /// them was sent failing (`replan::fail_in_place`): its error is answered as `0A000`.
    pub(super) stale_columns_sent: bool,
    /// What the unit's failures left to do, kept only once there is some (a backend is
    /// moved as a session takes and gives back its connection: it stays small).
    pub(super) after_errors: Option<Box<AfterErrors>>,
    /// Transaction mode: the process id the client was given. A notification this
    /// connection raised (the client's own NOTIFY) is relayed with it (see `relay`).
    pub client_pid: Option<i32>,
    /// A BEGIN the proxy answered itself, on its way to this connection ahead of the
    /// transaction's first statement (see `begin`).
    pub(super) begin: Ahead,
}

/// Where a BEGIN sent ahead of a unit stands on its connection: written with the unit's
/// first bytes, in the same write; its answers swallowed before the unit's are relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ahead {
    None,
    /// To go out with the next bytes written.
    Unsent,
    /// Sent: its answers are the first the connection gives.
    Owed,
}

// Moved at every checkout and give-back: kept small enough to move without a `memcpy`.
const _: () = assert!(std::mem::size_of::<Backend>() <= 128);

impl Backend {
    pub fn new(conn: Lease<BackendConn>) -> Backend {
        Backend::with_spare(conn, Spare::default())
    }

    /// A backend for `conn` with the queues of `spare`.
    pub fn with_spare(conn: Lease<BackendConn>, spare: Spare) -> Backend {
        Backend {
            conn,
            q: spare,
            forward_remaining: 0,
            applied: 0,
            hold_stale_plan: false,
            unit_start: false,
            stale_columns_sent: false,
            after_errors: None,
            client_pid: None,
            begin: Ahead::None,
        }
    }

    /// Its connection, and its queues emptied for the next.
    pub fn into_parts(self) -> (Lease<BackendConn>, Spare) {
        let Backend { conn, mut q, .. } = self;
        q.clear();
        (conn, q)
    }

    fn lost(&self, source: std::io::Error) -> SessionError {
        SessionError::BackendLost {
            addr: self.conn.instance.addr.clone(),
            source,
        }
    }

    /// Sends the client messages in `buf` (whole messages), preparing on this backend the
    /// statements they use that it lacks. `refs` holds, in order, the statement each
    /// Parse/Bind/Describe-statement message refers to. The connection's statements are
    /// shared by every session that uses it (`StatementCache`, at most `cap`): a name it
    /// holds with other text is closed first, one it holds with the same text is used as
    /// it is, and a client's Close of a statement leaves it prepared for the others.
    pub async fn forward(
        &mut self,
        buf: &[u8],
        refs: &[Option<Arc<Prepared>>],
        refused: &[Refused],
        scratch: &mut BytesMut,
        cap: usize,
    ) -> Result<(), SessionError> {
        // The index in `refs` of the next message's statement.
        let mut next_ref = 0;
        let mut refused = refused;
        // Nothing of the unit written yet: its statements' columns can still be checked in a
        // round trip of the proxy's own (`check_ahead`), once, which fills `verified`.
        let mut may_check = self.unit_start;
        let mut verified = Vec::new();
        // The portal the last Bind made, and its named statement.
        let mut bound: Option<(&[u8], Option<Arc<Prepared>>)> = None;
        let mut run_start = 0;
        let mut pos = 0;
        while let Ok(Some((h, body))) = frame::message(&buf[pos..], usize::MAX) {
            let at = pos;
            pos += h.total;
            scratch.clear();
            if let Some((refusal, rest)) = refused.split_first().filter(|(r, _)| r.at == at) {
                refused = rest;
                // Failed in its place with its server's error (see `Refused`): its ref is
                // skipped, and the batch skips to its Sync on the server as it would.
                next_ref += 1;
                may_check = false;
                self.write(&buf[run_start..at]).await?;
                run_start = pos;
                messages::describe(scratch, b'S', REFUSED);
                self.after_errors().refusals.push_back(refusal.why.clone());
                let poison = std::mem::take(scratch);
                let result = self.write(&poison).await;
                *scratch = poison;
                result?;
                scratch.clear();
                continue;
            }
            match h.tag {
                tag::PARSE => {
                    let named = refs.get(next_ref);
                    next_ref += 1;
                    let Some(Some(p)) = named else { continue };
                    // Prepared here by this very unit: fresh, whatever the cache held.
                    self.q.reused.retain(|r| r.name != p.name);
                    let mut held = self.conn.prepared.peek(&p.name).is_some();
                    let writes = if held {
                        !p.name.is_empty()
                    } else {
                        self.conn.prepared.len() >= cap.max(1)
                    };
                    if writes && may_check {
                        // A Close (of this name, or of one it evicts) goes out before it: the
                        // statements after it are checked first.
                        may_check = false;
                        let after = refs.get(next_ref..).unwrap_or_default();
                        verified = self.check_ahead(after, scratch, cap).await?;
                        held = self.conn.prepared.peek(&p.name).is_some();
                    }
                    if held && !p.name.is_empty() {
                        // Another statement of that name is prepared here: close it first.
                        self.inject_close(scratch, &p.name);
                    }
                    self.note_prepared(scratch, p, cap);
                    self.q.owed.push_back(Owed {
                        parse: Some((p.name.clone(), p.parse.clone())),
                        swallow: false,
                    });
                }
                tag::DESCRIBE
                    if messages::target_fields(body).is_some_and(|(kind, _)| kind == b'P') =>
                {
                    // The columns of the statement the portal was bound from in this unit.
                    let portal = messages::target_fields(body).map(|(_, name)| name);
                    let of = bound
                        .as_ref()
                        .filter(|(name, _)| Some(*name) == portal)
                        .and_then(|(_, p)| p.clone());
                    self.q.describing.portal(of);
                }
                tag::BIND | tag::DESCRIBE => {
                    let named = refs.get(next_ref);
                    next_ref += 1;
                    if h.tag == tag::DESCRIBE {
                        self.q.describing.statement(named.cloned().flatten());
                    } else {
                        // Told by a Describe of that portal: a named statement's columns
                        // (an unnamed one is parsed again before each use).
                        bound = match named {
                            Some(Some(p)) if !p.name.is_empty() => messages::bind_fields(body)
                                .map(|(portal, _)| (portal, Some(Arc::clone(p)))),
                            _ => None,
                        };
                    }
                    let Some(Some(p)) = named else { continue };
                    let mut check = self.columns_check(p, &verified);
                    if may_check && matches!(check, Check::Unknown { .. } | Check::Prepare) {
                        // Its columns are to check, or a Parse goes out before it: this
                        // statement and those after it are checked first, in one round trip.
                        may_check = false;
                        let from = refs.get(next_ref - 1..).unwrap_or_default();
                        verified = self.check_ahead(from, scratch, cap).await?;
                        check = self.columns_check(p, &verified);
                    }
                    match check.unverified() {
                        Check::Held => {
                            if !self.q.reused.iter().any(|r| Arc::ptr_eq(r, p)) {
                                self.q.reused.push(Arc::clone(p));
                            }
                            continue;
                        }
                        Check::Fresh => continue,
                        Check::Changed => {
                            // Failed in its place, as the client's own server fails it.
                            crate::metrics::prepared_replanned(
                                &self.conn.instance.cluster,
                                "error",
                            );
                            may_check = false;
                            self.write(&buf[run_start..at]).await?;
                            run_start = pos;
                            scratch.clear();
                            super::replan::fail_in_place(scratch, h.tag);
                            self.stale_columns_sent = true;
                            let poison = std::mem::take(scratch);
                            let result = self.write(&poison).await;
                            *scratch = poison;
                            result?;
                            scratch.clear();
                            continue;
                        }
                        Check::Prepare | Check::Unknown { .. } => {}
                    }
                    if self.conn.prepared.peek(&p.name).is_some() && !p.name.is_empty() {
                        self.inject_close(scratch, &p.name);
                    }
                    self.note_prepared(scratch, p, cap);
                    scratch.extend_from_slice(&p.parse);
                    self.q.owed.push_back(Owed {
                        parse: Some((p.name.clone(), p.parse.clone())),
                        swallow: true,
                    });
                }
                tag::CLOSE => {
                    self.q.owed.push_back(Owed {
                        parse: None,
                        swallow: false,
                    });
                    if let Some((kind, name)) = messages::target_fields(body)
                        && kind == b'S'
                        && !name.is_empty()
                    {
                        if may_check {
                            // Written in part before it: the statements after it are checked
                            // first.
                            may_check = false;
                            let after = refs.get(next_ref..).unwrap_or_default();
                            verified = self.check_ahead(after, scratch, cap).await?;
                        }
                        // Left prepared for the next client that needs it (the cache bounds
                        // how many): closing a name the server does not know is not an
                        // error, and answers the client's Close the same way.
                        messages::close(scratch, b'S', NO_STATEMENT);
                        self.write(&buf[run_start..at]).await?;
                        run_start = pos;
                    }
                }
                // A simple query destroys the unnamed statement.
                tag::QUERY => {
                    self.conn.prepared.remove(&Vec::new());
                }
                _ => {}
            }
            if !scratch.is_empty() {
                may_check = false;
                if h.tag != tag::CLOSE {
                    self.write(&buf[run_start..at]).await?;
                    run_start = at;
                }
                let injected = std::mem::take(scratch);
                let result = self.write(&injected).await;
                *scratch = injected;
                result?;
            }
        }
        self.write(&buf[run_start..pos]).await
    }

    pub(super) fn after_errors(&mut self) -> &mut AfterErrors {
        self.after_errors.get_or_insert_with(Default::default)
    }

    /// Whether an error is owed for a client message failed in place.
    pub(super) fn refusing(&self) -> bool {
        self.after_errors
            .as_ref()
            .is_some_and(|a| !a.refusals.is_empty())
    }

    /// Adds to `scratch` a Close of statement `name`, whose CloseComplete is swallowed.
    fn inject_close(&mut self, scratch: &mut BytesMut, name: &[u8]) {
        messages::close(scratch, b'S', name);
        self.q.owed.push_back(Owed {
            parse: None,
            swallow: true,
        });
    }

    /// Records `p` as prepared here, adding to `scratch` a Close of each statement that no
    /// longer fits under `cap`.
    fn note_prepared(&mut self, scratch: &mut BytesMut, p: &Prepared, cap: usize) {
        let evicted = self
            .conn
            .prepared
            .insert(p.name.clone(), Held::new(p.parse.clone()), cap);
        for (name, _) in evicted {
            crate::metrics::prepared_evicted(&self.conn.instance.cluster);
            if !name.is_empty() {
                self.inject_close(scratch, &name);
            }
        }
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let ahead;
        let bytes = if self.begin == Ahead::Unsent {
            self.begin = Ahead::Owed;
            ahead = super::begin::after_begin(bytes);
            &ahead[..]
        } else {
            bytes
        };
        let result = match self.conn.stream.write_or_rest(bytes) {
            Ok(None) => return Ok(()),
            Ok(Some(rest)) => rest.await,
            Err(e) => Err(e),
        };
        result.map_err(|e| self.lost(e))
    }

    /// Whether the server has closed this connection or is closing it, judged from what has
    /// already arrived, without waiting: the end of the stream, or an ErrorResponse while no
    /// work runs (a server sends one unasked only as it ends the connection: FATAL on
    /// shutdown, termination, or a postmaster that died). Anything else that arrived
    /// (a notice, a parameter status) stays buffered for the next relay.
    pub fn closed(&mut self) -> bool {
        let conn = &mut *self.conn;
        if conn.stream.read_arrived(&mut conn.buf) == Arrived::Closed {
            return true;
        }
        let mut pos = 0;
        let buf = &self.conn.buf;
        while let Ok(Some(h)) =
            frame::header(buf.get(pos..).unwrap_or_default(), MAX_BACKEND_MESSAGE)
        {
            if h.tag == tag::ERROR_RESPONSE {
                return true;
            }
            pos += h.total;
        }
        false
    }

    /// The error for a connection the server ended with the FATAL in front of the buffer.
    pub fn ended(&self) -> SessionError {
        let said = frame::message(&self.conn.buf, MAX_BACKEND_MESSAGE)
            .ok()
            .flatten()
            .map(|(_, body)| {
                let (code, message) = messages::error_fields(body);
                format!("the server ended the connection: {code} {message}")
            })
            .unwrap_or_else(|| "the server ended the connection".to_owned());
        self.lost(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            said,
        ))
    }

    /// The FATAL ErrorResponse with which the server ended this connection, whole, if it
    /// arrived; `None` too when the last relay stopped inside a message (the client could
    /// not take another now).
    pub fn take_fatal(&mut self) -> Option<Vec<u8>> {
        if self.mid_message() {
            return None;
        }
        let conn = &mut *self.conn;
        conn.stream.read_arrived(&mut conn.buf);
        let buf = &self.conn.buf;
        let mut pos = 0;
        while let Ok(Some((h, body))) = frame::message(&buf[pos..], MAX_BACKEND_MESSAGE) {
            if h.tag == tag::ERROR_RESPONSE && messages::ends_connection(body) {
                return Some(buf[pos..pos + h.total].to_vec());
            }
            pos += h.total;
        }
        None
    }

    /// Whether the last relay stopped inside a message (the client has part of it).
    pub fn mid_message(&self) -> bool {
        self.forward_remaining > 0
    }

    /// Waits for bytes from the backend (cancel-safe: only reads into the buffer).
    pub async fn fill(&mut self) -> Result<(), SessionError> {
        if self.conn.buf.capacity() - self.conn.buf.len() < 4096 {
            self.conn.buf.reserve(64 * 1024);
        }
        let conn = &mut *self.conn;
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => Err(self.lost(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) => Err(self.lost(e)),
        }
    }
}

/// Whether two Parse messages are equal; one Bytes shared by the session and the cache (a
/// statement parsed in this batch or on this connection before) compares without a memcmp.
pub(super) fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

#[cfg(test)]
mod describes_tests {
    use super::*;

    fn prepared(name: &str) -> Arc<Prepared> {
        Arc::new(Prepared {
            name: name.as_bytes().to_vec(),
            parse: Bytes::new(),
            class: crate::sql::Statement::of(crate::sql::Class::Read),
            names_backend: false,
            described: Default::default(),
        })
    }

    fn name(p: Option<Arc<Prepared>>) -> Option<String> {
        p.map(|p| String::from_utf8_lossy(&p.name).into_owned())
    }

    #[test]
    fn each_description_tells_the_statement_its_describe_named() {
        let mut d = Describes::default();
        // libpq: the unnamed portal of each query, then a named statement's portal, a
        // statement, another unnamed portal.
        d.portal(None);
        d.portal(None);
        d.portal(Some(prepared("s1")));
        d.statement(Some(prepared("s2")));
        d.portal(None);
        assert!(!d.tells_next());
        assert_eq!(name(d.columns()), None);
        assert_eq!(name(d.columns()), None);
        assert!(d.tells_next());
        assert_eq!(name(d.columns()), Some("s1".into()));
        d.parameters();
        assert!(d.tells_next());
        assert_eq!(name(d.columns()), Some("s2".into()));
        assert_eq!(name(d.columns()), None);
        assert!(!d.tells_next());
        // An error skips the rest.
        d.portal(None);
        d.statement(Some(prepared("s3")));
        d.clear();
        d.portal(Some(prepared("s4")));
        assert_eq!(name(d.columns()), Some("s4".into()));
    }
}
