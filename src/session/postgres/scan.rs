//! Finds the next unit of client work in the read buffer (a simple Query, a FunctionCall,
//! or an extended-protocol batch up to Sync/Flush) and classifies it for routing, without
//! consuming or copying it. Also keeps the session's prepared statements: each named or
//! unnamed statement the client parsed, so it can be prepared lazily on another backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::{Bytes, BytesMut};

use crate::protocol::postgres::frame::{self, FrameError};
use crate::protocol::postgres::messages::{self, tag};
use crate::protocol::postgres::sqlstate;
use crate::sql::{self, Class, Dialect, Statement};

/// A statement the client prepared with Parse, as the session knows it.
#[derive(Debug)]
pub struct Prepared {
    pub name: Vec<u8>,
    /// The client's whole Parse message, replayed on a backend that lacks the statement.
    pub parse: Bytes,
    pub class: Statement,
    /// Its text names a function ending in `_backend` (`pg_cancel_backend`,
    /// `pg_terminate_backend`): a batch running it may be a signal call the proxy answers
    /// (see `signal`). Known from the text's classifying, so no statement is read twice.
    pub names_backend: bool,
    /// A digest of the result columns the client was last told for it (the RowDescription
    /// or NoData that answered its Describe of the statement); 0 while it was told none.
    /// A statement prepared again after DDL is run in its place only when its columns are
    /// still these (see `replan`).
    pub described: AtomicU64,
}

impl Prepared {
    /// The statement's SQL text, when it is UTF-8.
    pub fn sql(&self) -> Option<&str> {
        std::str::from_utf8(self.sql_bytes()?).ok()
    }

    /// The statement's SQL text in the client's encoding.
    pub fn sql_bytes(&self) -> Option<&[u8]> {
        let (_, sql) = messages::parse_fields(self.parse.get(5..)?)?;
        Some(sql)
    }

    /// The SQL text of a SET statement (PostgreSQL takes no parameters in a SET, so the
    /// text replays as it is); `None` for anything else, or text that is not UTF-8.
    fn set_text(&self) -> Option<&str> {
        if self.class.class != Class::SessionSet {
            return None;
        }
        self.sql()
    }
}

/// The client's prepared statements by name. The unnamed one, which extended-protocol
/// drivers parse for almost every statement, is kept apart from the map: no hashing nor
/// key comparison for it.
#[derive(Debug, Default)]
pub struct Statements {
    unnamed: Option<Arc<Prepared>>,
    by_name: HashMap<Vec<u8>, Arc<Prepared>, foldhash::fast::RandomState>,
    classified: Classified,
}

/// How many parsed texts a session keeps the class of.
const CLASSIFIED_SLOTS: usize = 32;

/// The longest text kept there (with its last unnamed statement): a longer one, a bulk
/// `INSERT` with its values written out say, costs more to keep than to classify again.
const CLASSIFIED_MAX_TEXT: usize = 4096;

/// The classes of the texts a session parsed lately. Extended-protocol drivers parse the
/// same few texts over and over (an unnamed statement per execution), and classifying a
/// text costs far more than hashing and comparing it. Any text may take any slot (their
/// hashes are scanned: a few compares), so the few texts of a workload never push one
/// another out; past `CLASSIFIED_SLOTS`, the slots are taken over in turn. Allocated at
/// the first Parse: a client that never parses (or stays idle) pays nothing for it.
#[derive(Debug, Default)]
struct Classified {
    /// Each slot's text hash, scanned first.
    hashes: Vec<u64>,
    texts: Vec<ClassifiedText>,
    /// The slot taken over next once all are in use.
    next: usize,
}

/// A parsed text, its class, whether it names a `…_backend` function, and the unnamed
/// statement last parsed with it.
type ClassifiedText = (Box<[u8]>, Statement, bool, Option<Arc<Prepared>>);

/// A text's class, whether it names a `…_backend` function, and its slot in `Classified`
/// (out of range for a text not kept).
type Known = (Statement, bool, usize);

impl Classified {
    fn known(&mut self, sql: &[u8]) -> Known {
        use std::hash::BuildHasher as _;
        if sql.len() > CLASSIFIED_MAX_TEXT {
            // In no slot: nothing kept.
            return (
                classify(sql),
                super::signal::mentions_backend(sql),
                usize::MAX,
            );
        }
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one(sql);
        let found = self.hashes.iter().enumerate().find_map(|(at, h)| {
            let (text, stmt, backend, _) = &self.texts[at];
            (*h == hash && **text == *sql).then_some((*stmt, *backend, at))
        });
        if let Some(known) = found {
            return known;
        }
        let (stmt, backend) = (classify(sql), super::signal::mentions_backend(sql));
        let entry = (sql.into(), stmt, backend, None);
        let at = if self.texts.len() < CLASSIFIED_SLOTS {
            self.hashes.push(hash);
            self.texts.push(entry);
            self.texts.len() - 1
        } else {
            let at = self.next % CLASSIFIED_SLOTS;
            self.next = at + 1;
            self.hashes[at] = hash;
            self.texts[at] = entry;
            at
        };
        (stmt, backend, at)
    }

    /// The unnamed statement last parsed with the text in `slot`, when `message` is that
    /// same Parse (same text and parameter types), as new: drivers parse the unnamed
    /// statement for every execution, and a fresh one each time cost a copy of the message
    /// and two allocations.
    fn reparsed(&self, slot: usize, message: &[u8]) -> Option<Arc<Prepared>> {
        let (.., last) = self.texts.get(slot)?;
        let p = last.as_ref().filter(|p| p.parse[..] == *message)?;
        // What the client was told of its columns went with the Parse before.
        p.described.store(0, std::sync::atomic::Ordering::Relaxed);
        Some(Arc::clone(p))
    }
}

impl Statements {
    fn parse(
        &mut self,
        name: &[u8],
        message: &[u8],
        (class, names_backend, slot): Known,
    ) -> Arc<Prepared> {
        if name.is_empty()
            && let Some(p) = self.classified.reparsed(slot, message)
        {
            self.unnamed = Some(Arc::clone(&p));
            return p;
        }
        let p = Arc::new(Prepared {
            name: name.to_vec(),
            parse: Bytes::copy_from_slice(message),
            class,
            names_backend,
            described: AtomicU64::new(0),
        });
        if name.is_empty() {
            self.unnamed = Some(Arc::clone(&p));
            if let Some(entry) = self.classified.texts.get_mut(slot) {
                entry.3 = Some(Arc::clone(&p));
            }
        } else {
            self.by_name.insert(name.to_vec(), Arc::clone(&p));
        }
        p
    }

    fn close(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.by_name.remove(name);
        }
    }

    fn get(&self, name: &[u8]) -> Option<&Arc<Prepared>> {
        match name {
            [] => self.unnamed.as_ref(),
            name => self.by_name.get(name),
        }
    }

    /// Forgets what a SQL `DEALLOCATE` names, when every statement it names is one of the
    /// client's protocol-level statements; whether it did (then the proxy answers it: the
    /// statement may live on connections other than the one the SQL would reach).
    /// Forgets statement `name` when the client's is the one Parse `parse` prepared: its
    /// server did not run that Parse.
    pub fn forget_failed(&mut self, name: &[u8], parse: &Bytes) {
        if name.is_empty() {
            if self.unnamed.as_ref().is_some_and(|p| p.parse == *parse) {
                self.unnamed = None;
            }
        } else if self.by_name.get(name).is_some_and(|p| p.parse == *parse) {
            self.by_name.remove(name);
        }
    }

    /// Whether every statement `target` names is one of the client's (`ALL` always is).
    pub fn knows(&self, target: &Deallocate) -> bool {
        match target {
            Deallocate::All => true,
            Deallocate::Name(name) => self.by_name.contains_key(name.as_slice()),
        }
    }

    pub fn deallocate(&mut self, target: &Deallocate) -> bool {
        match target {
            Deallocate::All => {
                self.unnamed = None;
                self.by_name.clear();
                true
            }
            Deallocate::Name(name) => self.by_name.remove(name.as_slice()).is_some(),
        }
    }
}

/// What a lone SQL `DEALLOCATE [PREPARE] name | ALL` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    All,
    Name(Vec<u8>),
}

/// The target of `sql` when it is one `DEALLOCATE` statement (as PHP PDO sends for the
/// statements it prepared with Parse); `None` for anything else. An unquoted name folds
/// to lower case, as PostgreSQL folds it.
pub fn deallocate(sql: &[u8]) -> Option<Deallocate> {
    let sql = sql.trim_ascii();
    let sql = sql.strip_suffix(b";").unwrap_or(sql).trim_ascii_end();
    let rest = strip_keyword(sql, b"deallocate")?;
    let rest = strip_keyword(rest, b"prepare").unwrap_or(rest);
    if rest.eq_ignore_ascii_case(b"all") {
        return Some(Deallocate::All);
    }
    if let Some(quoted) = rest.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
        if quoted.is_empty() || quoted.contains(&b'"') {
            return None;
        }
        return Some(Deallocate::Name(quoted.to_vec()));
    }
    let plain = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$';
    if rest.is_empty() || !rest.iter().all(plain) || rest[0].is_ascii_digit() {
        return None;
    }
    Some(Deallocate::Name(rest.to_ascii_lowercase()))
}

/// `sql` after the keyword `word` (any case) and the white space that follows it.
fn strip_keyword<'a>(sql: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let head = sql.get(..word.len())?;
    let rest = &sql[word.len()..];
    let separated = rest.first().is_some_and(u8::is_ascii_whitespace);
    (head.eq_ignore_ascii_case(word) && separated).then(|| rest.trim_ascii_start())
}

/// How a unit ends, which decides what the proxy waits for after sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Query, FunctionCall or Sync: exactly one ReadyForQuery follows.
    Ready,
    /// Flush, or a batch too large to hold: the rest of the batch follows on the same backend.
    Open,
}

/// A unit found in the buffer: bytes `..end`, its combined statement class, and, in
/// message order, the prepared statements its Parse/Bind/Describe messages refer to.
#[derive(Debug)]
pub struct Unit {
    pub end: usize,
    pub ending: Ending,
    pub first_tag: u8,
    pub stmt: Statement,
    /// The SQL text of what the unit runs, for recording SETs: a simple Query's, or the
    /// SET statements a batch binds (a batch of only SETs), in order.
    pub simple_sql: Option<Box<str>>,
    pub refs: Vec<Option<Arc<Prepared>>>,
    /// Messages the server would refuse for what the client's statements are (see
    /// [`Refused`]), in order; most units have none (boxed when some: a unit is moved
    /// several times per statement, and kept at 128 bytes it moves without a `memcpy`).
    #[allow(clippy::box_collection)] // a thin pointer: the unit stays at 128 bytes
    pub refused: Option<Box<Vec<Refused>>>,
    /// It holds a Bind or Execute: it runs something, rather than only preparing and
    /// describing statements.
    pub executes: bool,
}

impl Unit {
    /// The messages to fail in place (see [`Refused`]).
    pub fn refused(&self) -> &[Refused] {
        self.refused.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// A client message its own server would refuse, for a name its statements do not have as
/// the message needs: a connection the proxy lends may have that name prepared (by the
/// client before it deallocated it, or by another client), so the message is failed in its
/// place instead of sent (`Backend::forward`), with the server's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Where the message starts in the unit's bytes.
    pub at: usize,
    pub why: Refusal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A Parse of a named statement the client has: `42P05`, and its statement stays.
    NameInUse(Vec<u8>),
    /// A Bind or Describe of a statement the client does not have: `26000`.
    NoSuchStatement(Vec<u8>),
}

impl Refusal {
    /// The ErrorResponse its own server sends.
    pub fn error(&self, out: &mut BytesMut) {
        let (code, message) = match self {
            Refusal::NameInUse(name) => (
                sqlstate::DUPLICATE_PREPARED_STATEMENT,
                format!(
                    "prepared statement \"{}\" already exists",
                    String::from_utf8_lossy(name)
                ),
            ),
            Refusal::NoSuchStatement(name) if name.is_empty() => (
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                "unnamed prepared statement does not exist".to_owned(),
            ),
            Refusal::NoSuchStatement(name) => (
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                format!(
                    "prepared statement \"{}\" does not exist",
                    String::from_utf8_lossy(name)
                ),
            ),
        };
        messages::error_response(out, messages::Severity::Error, code, &message);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("invalid message from client")]
    Frame(#[from] FrameError),
    #[error("malformed {0:?} message from client")]
    Malformed(char),
    #[error("unexpected message {0:?} from client")]
    Unexpected(char),
}

/// Scan state kept between reads so a batch split across reads is scanned once.
#[derive(Debug)]
pub struct Scanner {
    pos: usize,
    stmt: Option<Statement>,
    refs: Vec<Option<Arc<Prepared>>>,
    refused: Vec<Refused>,
    /// Batches larger than this are sent on before their Sync arrives.
    hold_limit: usize,
    max_message: usize,
    /// The unit so far holds a Bind or Execute.
    executes: bool,
    /// The text of the SET statements the unit binds so far.
    bound_sets: String,
    /// The text of the SET statements the unit parses so far.
    parsed_sets: String,
    /// Transaction mode: the process id the client was given, which its statements' calls
    /// of `pg_backend_pid()` answer (see `sql::rewrite_identity`).
    pub identity: Option<u32>,
    /// A Query or Parse message found to call `pg_backend_pid()`: where it starts, and the
    /// message that replaces it (see [`Scanner::next_in`]).
    rewrite: Option<(usize, BytesMut)>,
}

const READ_ONLY: Statement = Statement {
    count: 0,
    ..Statement::of(Class::Read)
};

impl Scanner {
    pub fn new(max_message: usize) -> Scanner {
        Scanner {
            pos: 0,
            stmt: None,
            refs: Vec::new(),
            refused: Vec::new(),
            hold_limit: 1 << 20,
            max_message,
            executes: false,
            bound_sets: String::new(),
            parsed_sets: String::new(),
            identity: None,
            rewrite: None,
        }
    }

    /// The next whole unit of `buf[from..]` (see [`Scanner::next`]), with each Query or
    /// Parse that calls `pg_backend_pid()` rewritten in `buf` first, when the client has an
    /// identity of its own.
    pub fn next_in(
        &mut self,
        buf: &mut BytesMut,
        from: usize,
        statements: &mut Statements,
    ) -> Result<Option<Unit>, ScanError> {
        loop {
            let unit = self.next(&buf[from..], statements)?;
            let Some((at, message)) = self.rewrite.take() else {
                return Ok(unit);
            };
            // The message is scanned again from where it starts.
            let at = from + at;
            let old_len = frame::message(&buf[at..], usize::MAX)?.map_or(0, |(h, _)| h.total);
            let tail = buf.split_off(at + old_len);
            buf.truncate(at);
            buf.extend_from_slice(&message);
            buf.unsplit(tail);
        }
    }

    /// The message to replace a Query or Parse (`tag`, `body`) of SQL text `sql`, classified
    /// as `class`, when it calls `pg_backend_pid()` and the client has its own pid.
    fn own_identity(
        &self,
        class: &Statement,
        tag: u8,
        body: &[u8],
        sql: &[u8],
    ) -> Option<BytesMut> {
        let id = self.identity.filter(|_| class.functions.identity)?;
        let sql = sql::rewrite_identity(sql, Dialect::Postgres, id)?;
        let mut message = BytesMut::new();
        match tag {
            tag::QUERY => messages::query_bytes(&mut message, &sql),
            _ => messages::parse_with_text(&mut message, body, &sql)?,
        }
        Some(message)
    }

    /// Gives back a unit's reference list so its allocation is reused.
    pub fn recycle(&mut self, mut refs: Vec<Option<Arc<Prepared>>>) {
        refs.clear();
        if self.refs.is_empty() && self.pos == 0 {
            self.refs = refs;
        }
    }

    /// Forgets progress; called once the unit was sent (the buffer was consumed).
    fn reset(&mut self) {
        self.pos = 0;
        self.stmt = None;
        self.executes = false;
        self.bound_sets.clear();
        self.parsed_sets.clear();
    }

    fn refuse(&mut self, at: usize, why: Refusal) {
        self.refused.push(Refused { at, why });
    }

    fn take(
        &mut self,
        end: usize,
        ending: Ending,
        first_tag: u8,
        simple_sql: Option<String>,
    ) -> Unit {
        let stmt = self.stmt.unwrap_or(READ_ONLY);
        // What runs: the SETs bound, or, in a batch left open (whose Bind follows within
        // the same exchange), the SETs parsed.
        let sets = match (&self.bound_sets, ending) {
            (bound, _) if !bound.is_empty() => bound,
            (_, Ending::Open) => &self.parsed_sets,
            _ => &self.bound_sets,
        };
        let sets = (stmt.class == Class::SessionSet && !sets.is_empty()).then(|| sets.clone());
        let unit = Unit {
            end,
            ending,
            first_tag,
            stmt,
            simple_sql: simple_sql.or(sets).map(String::into_boxed_str),
            refs: std::mem::take(&mut self.refs),
            refused: (!self.refused.is_empty())
                .then(|| Box::new(std::mem::take(&mut self.refused))),
            executes: self.executes,
        };
        self.reset();
        unit
    }

    /// Whether statement `p` is in the unit already (parsed, bound or described in it): a
    /// statement counts once however many messages name it.
    fn counted(&self, p: Option<&Arc<Prepared>>) -> bool {
        p.is_some_and(|p| self.refs.iter().flatten().any(|r| Arc::ptr_eq(r, p)))
    }

    fn add(&mut self, s: Statement) {
        self.stmt = Some(match self.stmt {
            None => s,
            Some(prev) => combine(prev, s),
        });
    }

    /// Returns the next whole unit, or `None` when more bytes are needed.
    pub fn next(
        &mut self,
        buf: &[u8],
        statements: &mut Statements,
    ) -> Result<Option<Unit>, ScanError> {
        loop {
            let Some((h, body)) = frame::message(&buf[self.pos..], self.max_message)? else {
                if self.pos >= self.hold_limit {
                    return Ok(Some(self.take(self.pos, Ending::Open, buf[0], None)));
                }
                return Ok(None);
            };
            let start = self.pos;
            let message = &buf[start..start + h.total];
            match h.tag {
                tag::QUERY | tag::FUNCTION_CALL if start > 0 => {
                    // An open batch ends before a Query: send it as it is.
                    return Ok(Some(self.take(start, Ending::Open, buf[0], None)));
                }
                tag::QUERY => {
                    let sql = messages::query_text(body).ok_or(ScanError::Malformed('Q'))?;
                    let class = classify(sql);
                    if let Some(message) = self.own_identity(&class, h.tag, body, sql) {
                        self.rewrite = Some((start, message));
                        return Ok(None);
                    }
                    self.stmt = Some(class);
                    // Text that is not UTF-8 is not recorded (a SET of it pins instead).
                    let text = std::str::from_utf8(sql).ok().map(str::to_owned);
                    return Ok(Some(self.take(h.total, Ending::Ready, h.tag, text)));
                }
                tag::FUNCTION_CALL => {
                    self.stmt = Some(Statement::of(Class::Write));
                    return Ok(Some(self.take(h.total, Ending::Ready, h.tag, None)));
                }
                tag::PARSE => {
                    let (name, sql) =
                        messages::parse_fields(body).ok_or(ScanError::Malformed('P'))?;
                    let classes = statements.classified.known(sql);
                    let class = classes.0;
                    if let Some(message) = self.own_identity(&class, h.tag, body, sql) {
                        self.rewrite = Some((start, message));
                        return Ok(None);
                    }
                    self.add(class);
                    if !name.is_empty() && statements.by_name.contains_key(name) {
                        // The client's statement of that name stays, as on its server.
                        self.refuse(start, Refusal::NameInUse(name.to_vec()));
                        self.refs.push(None);
                    } else {
                        let p = statements.parse(name, message, classes);
                        if let Some(sql) = p.set_text() {
                            append(&mut self.parsed_sets, sql);
                        }
                        self.refs.push(Some(p));
                    }
                }
                tag::BIND => {
                    self.executes = true;
                    let (_, name) = messages::bind_fields(body).ok_or(ScanError::Malformed('B'))?;
                    let p = statements.get(name).cloned();
                    if p.is_none() {
                        self.refuse(start, Refusal::NoSuchStatement(name.to_vec()));
                    }
                    if !self.counted(p.as_ref()) {
                        self.add(p.as_ref().map_or(UNKNOWN, |p| p.class));
                    }
                    if let Some(sql) = p.as_ref().and_then(|p| p.set_text()) {
                        append(&mut self.bound_sets, sql);
                    }
                    self.refs.push(p);
                }
                tag::DESCRIBE => {
                    let (kind, name) =
                        messages::target_fields(body).ok_or(ScanError::Malformed('D'))?;
                    if kind == b'S' {
                        let p = statements.get(name).cloned();
                        if p.is_none() {
                            self.refuse(start, Refusal::NoSuchStatement(name.to_vec()));
                        }
                        if let Some(p) = p.as_ref().filter(|p| !self.counted(Some(p))) {
                            self.add(p.class);
                        }
                        self.refs.push(p);
                    }
                }
                tag::CLOSE => {
                    let (kind, name) =
                        messages::target_fields(body).ok_or(ScanError::Malformed('C'))?;
                    if kind == b'S' {
                        statements.close(name);
                    }
                }
                tag::EXECUTE => {
                    self.executes = true;
                    messages::execute_portal(body).ok_or(ScanError::Malformed('E'))?;
                }
                tag::SYNC => {
                    self.pos += h.total;
                    return Ok(Some(self.take(self.pos, Ending::Ready, buf[0], None)));
                }
                tag::FLUSH => {
                    self.pos += h.total;
                    return Ok(Some(self.take(self.pos, Ending::Open, buf[0], None)));
                }
                // Copy messages outside COPY are ignored by PostgreSQL; Terminate is the caller's.
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::TERMINATE if start == 0 => {
                    return Ok(Some(self.take(h.total, Ending::Open, h.tag, None)));
                }
                other => return Err(ScanError::Unexpected(other as char)),
            }
            self.pos += h.total;
        }
    }
}

/// Classifies SQL text in the client's encoding, which need not be UTF-8 (`client_encoding`
/// LATIN1, WIN1252, SJIS …): the classifier looks only at ASCII keywords and punctuation,
/// so invalid sequences become U+FFFD and the rest is classified as it is. One exception
/// keeps this safe: in SJIS, BIG5, GBK and the like the second byte of a character may be
/// a backslash, which would end an `E'…'` string early or late for the lexer; a non-UTF-8
/// text with a backslash is therefore never taken for a read.
fn classify(sql: &[u8]) -> Statement {
    match std::str::from_utf8(sql) {
        Ok(text) => sql::classify(text, Dialect::Postgres),
        Err(_) => {
            let mut stmt = sql::classify(&String::from_utf8_lossy(sql), Dialect::Postgres);
            if stmt.class == Class::Read && sql.contains(&b'\\') {
                stmt.class = Class::Write;
            }
            stmt
        }
    }
}

/// How many Close messages a unit's bytes hold when it holds nothing else but its Sync (a
/// driver closing statements it no longer needs, in a batch of their own); `None` for any
/// other unit.
pub fn only_closes(bytes: &[u8]) -> Option<usize> {
    let (mut at, mut closes) = (0, 0);
    while let Ok(Some((h, _))) = frame::message(&bytes[at..], usize::MAX) {
        match h.tag {
            tag::CLOSE => closes += 1,
            tag::SYNC => {}
            _ => return None,
        }
        at += h.total;
    }
    (closes > 0 && at == bytes.len()).then_some(closes)
}

/// Adds one statement's text to a list of them.
fn append(sets: &mut String, sql: &str) {
    if !sets.is_empty() {
        sets.push_str(";\n");
    }
    sets.push_str(sql);
}

/// Bind of a statement the session does not know: route it safely.
const UNKNOWN: Statement = Statement::of(Class::Write);

/// Two statements of one batch: reads stay reads (about the node if one is); a hint
/// survives; anything else is a write unless it carries session state.
fn combine(a: Statement, b: Statement) -> Statement {
    let class = match (a.class, b.class) {
        (Class::Read, Class::Read) => Class::Read,
        (Class::Read | Class::Node, Class::Read | Class::Node) => Class::Node,
        (Class::Pin | Class::SessionSet | Class::Autocommit(_), _)
        | (_, Class::Pin | Class::SessionSet | Class::Autocommit(_)) => Class::Pin,
        (x, y) if x == y => x,
        _ => Class::Write,
    };
    let mut functions = a.functions.merge(&b.functions);
    functions.writes |= a.class == Class::Write || b.class == Class::Write;
    Statement {
        class,
        hint: a.hint.or(b.hint),
        count: a.count + b.count,
        functions,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    /// Appends a client message with `tag` and `body` to `out`.
    pub(in crate::session::postgres) fn msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
        out.put_u8(tag);
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(body);
    }

    fn parse(out: &mut BytesMut, name: &str, sql: &str) {
        let body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat();
        msg(out, b'P', &body);
    }

    fn bind(out: &mut BytesMut, stmt: &str) {
        let body = [b"\0", stmt.as_bytes(), b"\0\0\0\0\0\0\0"].concat();
        msg(out, b'B', &body);
    }

    #[test]
    fn a_batch_is_a_unit_up_to_sync() {
        let mut buf = BytesMut::new();
        parse(&mut buf, "s1", "SELECT 1");
        bind(&mut buf, "s1");
        msg(&mut buf, b'E', b"\0\0\0\0\0");
        let mut st = Statements::default();
        let mut sc = Scanner::new(1 << 20);
        assert!(sc.next(&buf, &mut st).unwrap().is_none(), "no Sync yet");
        msg(&mut buf, b'S', b"");
        let unit = sc.next(&buf, &mut st).unwrap().unwrap();
        assert_eq!(unit.end, buf.len());
        assert_eq!(unit.ending, Ending::Ready);
        assert_eq!(unit.stmt.class, Class::Read);
        assert_eq!(unit.refs.len(), 2);
    }

    #[test]
    fn a_bound_write_makes_the_batch_a_write() {
        let mut st = Statements::default();
        let mut sc = Scanner::new(1 << 20);
        let mut buf = BytesMut::new();
        parse(&mut buf, "w", "INSERT INTO t VALUES (1)");
        msg(&mut buf, b'S', b"");
        let n = sc.next(&buf, &mut st).unwrap().unwrap().end;
        let _ = buf.split_to(n);
        bind(&mut buf, "w");
        msg(&mut buf, b'S', b"");
        let unit = sc.next(&buf, &mut st).unwrap().unwrap();
        assert_eq!(unit.stmt.class, Class::Write);
        assert_eq!(unit.refs[0].as_ref().unwrap().name, b"w");
    }

    #[test]
    fn a_client_with_its_own_pid_has_its_calls_rewritten_in_the_buffer() {
        let mut st = Statements::default();
        let mut sc = Scanner::new(1 << 20);
        sc.identity = Some(1 << 30);
        let mut buf = BytesMut::new();
        // A batch left open before: the rewrite starts where the scan stands.
        parse(&mut buf, "a", "SELECT 1");
        let held = buf.len();
        parse(&mut buf, "s", "SELECT pg_backend_pid()");
        bind(&mut buf, "s");
        msg(&mut buf, b'S', b"");
        let unit = sc.next_in(&mut buf, held, &mut st).unwrap().unwrap();
        let want = "SELECT 1073741824 AS pg_backend_pid";
        let mut expected = BytesMut::new();
        parse(&mut expected, "a", "SELECT 1");
        parse(&mut expected, "s", want);
        bind(&mut expected, "s");
        msg(&mut expected, b'S', b"");
        assert_eq!(&buf[..], &expected[..], "the Parse is rewritten in place");
        assert_eq!(held + unit.end, buf.len());
        assert_eq!(st.get(b"s").unwrap().sql(), Some(want), "and recorded so");
        assert!(!unit.stmt.functions.identity);
        let _ = buf.split_to(buf.len());
        msg(&mut buf, b'Q', b"select pg_backend_pid() AS me, 1\0");
        let unit = sc.next_in(&mut buf, 0, &mut st).unwrap().unwrap();
        assert_eq!(&buf[5..unit.end], b"select 1073741824 AS me, 1\0");
        assert_eq!(
            unit.simple_sql.as_deref(),
            Some("select 1073741824 AS me, 1")
        );
        // Without an identity of its own (session mode), bytes stay as they came.
        let mut sc = Scanner::new(1 << 20);
        let mut buf = BytesMut::new();
        msg(&mut buf, b'Q', b"SELECT pg_backend_pid()\0");
        let before = buf.clone();
        let unit = sc.next_in(&mut buf, 0, &mut st).unwrap().unwrap();
        assert_eq!(buf, before);
        assert!(unit.stmt.functions.identity);
    }

    #[test]
    fn the_same_unnamed_parse_again_is_the_statement_before_as_new() {
        let mut st = Statements::default();
        let mut sc = Scanner::new(1 << 20);
        let mut unnamed = |sql: &str, types: &[u8]| {
            let mut buf = BytesMut::new();
            let body = [b"\0", sql.as_bytes(), b"\0", types].concat();
            msg(&mut buf, b'P', &body);
            msg(&mut buf, b'S', b"");
            let unit = sc.next(&buf, &mut st).unwrap().unwrap();
            let p = unit.refs[0].clone().unwrap();
            sc.recycle(unit.refs);
            assert!(
                Arc::ptr_eq(st.get(b"").unwrap(), &p),
                "the unnamed statement"
            );
            p
        };
        let no_types = b"\0\0";
        let first = unnamed("SELECT $1::int", no_types);
        first
            .described
            .store(7, std::sync::atomic::Ordering::Relaxed);
        let other = unnamed("UPDATE t SET a = 1", no_types);
        let again = unnamed("SELECT $1::int", no_types);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            again.described.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "told nothing of its columns yet, as a new Parse"
        );
        assert!(!Arc::ptr_eq(&first, &other));
        // Other parameter types: another statement.
        let typed = unnamed("SELECT $1::int", b"\0\x01\0\0\0\x17");
        assert!(!Arc::ptr_eq(&first, &typed));
        assert_eq!(typed.sql(), Some("SELECT $1::int"));
        // A text too long to keep: classified each time, a new statement each time.
        let long = format!("SELECT 1 /* {} */", "x".repeat(CLASSIFIED_MAX_TEXT));
        let once = unnamed(&long, no_types);
        let twice = unnamed(&long, no_types);
        assert!(!Arc::ptr_eq(&once, &twice));
        assert_eq!(twice.class.class, Class::Read);
    }

    #[test]
    fn unknown_statements_and_garbage() {
        let mut st = Statements::default();
        let mut sc = Scanner::new(1 << 20);
        let mut buf = BytesMut::new();
        bind(&mut buf, "nope");
        msg(&mut buf, b'S', b"");
        assert_eq!(
            sc.next(&buf, &mut st).unwrap().unwrap().stmt.class,
            Class::Write
        );
        let mut sc = Scanner::new(1 << 20);
        assert!(sc.next(b"\x01\0\0\0\x04", &mut st).is_err());
        assert!(
            sc.next(b"Q\0\0\0\x05x", &mut st).is_err(),
            "query without NUL"
        );
    }

    #[test]
    fn text_in_any_client_encoding_is_classified() {
        let mut st = Statements::default();
        let table: [(&[u8], Class, bool); 5] = [
            (b"SELECT 'caf\xe9'", Class::Read, false),
            (b"INSERT INTO t VALUES ('caf\xe9')", Class::Write, false),
            // SJIS: the second byte of this character is a backslash.
            (b"SELECT E'\x83\\'; DELETE FROM t", Class::Write, false),
            (
                b"SET application_name = 'caf\xc3\xa9'",
                Class::SessionSet,
                true,
            ),
            (
                b"SET application_name = 'caf\xe9'",
                Class::SessionSet,
                false,
            ),
        ];
        for (sql, class, recorded) in table {
            let mut sc = Scanner::new(1 << 20);
            let mut buf = BytesMut::new();
            msg(&mut buf, b'Q', &[sql, b"\0"].concat());
            let unit = sc.next(&buf, &mut st).unwrap().unwrap();
            assert_eq!(unit.stmt.class, class, "{}", String::from_utf8_lossy(sql));
            assert_eq!(unit.simple_sql.is_some(), recorded);
            let mut buf = BytesMut::new();
            msg(&mut buf, b'P', &[b"\0", sql, b"\0\0\0"].concat());
            msg(&mut buf, b'S', b"");
            let unit = sc.next(&buf, &mut st).unwrap().unwrap();
            assert_eq!(unit.stmt.class, class, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn a_query_after_an_open_batch_splits_it() {
        let mut st = Statements::default();
        let mut sc = Scanner::new(1 << 20);
        let mut buf = BytesMut::new();
        parse(&mut buf, "", "SELECT 1");
        let first = buf.len();
        msg(&mut buf, b'Q', b"SELECT 2\0");
        let unit = sc.next(&buf, &mut st).unwrap().unwrap();
        assert_eq!((unit.end, unit.ending), (first, Ending::Open));
    }

    #[test]
    fn parsed_texts_keep_their_class_whatever_slot_they_share() {
        let mut classified = Classified::default();
        let texts: Vec<String> = (0..40)
            .map(|i| match i % 3 {
                0 => format!("SELECT {i}"),
                1 => format!("INSERT INTO t VALUES ({i})"),
                _ => format!("SET x.y = {i}"),
            })
            .collect();
        // Twice over: 40 texts in 32 slots, so some are classified again after another
        // took their slot, and the rest come from the slots.
        for _ in 0..2 {
            for text in &texts {
                let (stmt, backend, _) = classified.known(text.as_bytes());
                assert_eq!(
                    (stmt, backend),
                    (classify(text.as_bytes()), false),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn a_lone_deallocate_is_recognised() {
        use super::{Deallocate, deallocate};
        let name = |n: &str| Some(Deallocate::Name(n.as_bytes().to_vec()));
        assert_eq!(
            deallocate(b"DEALLOCATE pdo_stmt_00000001"),
            name("pdo_stmt_00000001")
        );
        assert_eq!(deallocate(b"  deallocate prepare S_1 ;"), name("s_1"));
        assert_eq!(deallocate(b"DEALLOCATE \"S_1\""), name("S_1"));
        assert_eq!(deallocate(b"DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(deallocate(b"DEALLOCATE PREPARE all"), Some(Deallocate::All));
        for other in [
            &b"DEALLOCATE"[..],
            b"DEALLOCATE a; SELECT 1",
            b"DEALLOCATEx y",
            b"SELECT 1",
            b"DEALLOCATE \"\"",
            b"DEALLOCATE 1x",
        ] {
            assert_eq!(
                deallocate(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
