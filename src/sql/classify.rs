//! Splits a query string into statements and classifies each one: its first keyword
//! says what kind of statement it is, a handler reads what that kind needs (EXPLAIN
//! options, COPY direction, transaction modes, ...), and the `Scan` of all its tokens
//! says whether it writes or pins the session after all.

use super::function::Functions;
use super::keyword::Kw;
use super::lexer::{Lexer, Token};
use super::scan::Scan;
use super::{Class, Dialect, Hint};

/// The statements of a query string, each as its class; empty statements are skipped.
pub(crate) struct Statements<'a> {
    lexer: Lexer<'a>,
    dialect: Dialect,
    done: bool,
    /// The unknown calls and DDL of the statements read so far.
    functions: Functions,
}

impl<'a> Statements<'a> {
    pub(crate) fn new(sql: &'a [u8], dialect: Dialect) -> Self {
        Statements {
            lexer: Lexer::new(sql, dialect),
            dialect,
            done: false,
            functions: Functions::NONE,
        }
    }

    /// The unknown calls and DDL of the statements read so far.
    pub(crate) fn functions(&self) -> Functions {
        self.functions
    }

    /// The routing hint in the comments read so far.
    pub(crate) fn hint(&self) -> Option<Hint> {
        self.lexer.hint()
    }
}

impl Iterator for Statements<'_> {
    type Item = Class;

    fn next(&mut self) -> Option<Class> {
        while !self.done {
            let mut cursor = Cursor::new(&mut self.lexer, self.dialect);
            let class = cursor.statement();
            self.done = cursor.input_done;
            let f = &cursor.scan.functions;
            if !f.is_empty() || f.ddl || f.identity {
                self.functions = self.functions.merge(&cursor.scan.functions);
            }
            if class.is_some() {
                return class;
            }
        }
        None
    }
}

/// Whether `tok` can open a query: `SELECT`, `WITH`, `VALUES`, `TABLE`, `(`.
fn starts_query(tok: Token<'_>) -> bool {
    matches!(tok.kw(), Kw::Select | Kw::With | Kw::Values | Kw::Table) || tok.is_punct(b'(')
}

/// What a statement handler concluded.
pub(super) enum Verdict {
    /// This class, adjusted by what the scan of the whole statement found.
    Scanned(Class),
    /// This class as it is.
    Fixed(Class),
}

pub(super) use Verdict::{Fixed, Scanned};

/// The tokens of one statement, up to its `;` or the end of the input. Every token
/// handed out also goes through the statement's `Scan`.
pub(super) struct Cursor<'l, 'a> {
    lexer: &'l mut Lexer<'a>,
    pub(super) dialect: Dialect,
    /// A token read ahead by `peek`; `Some(None)` is the end of the input.
    peeked: Option<Option<Token<'a>>>,
    /// The statement's `;` or the end of the input was reached.
    ended: bool,
    /// The end of the input was reached.
    input_done: bool,
    /// How many statements deep this one is (`EXPLAIN EXPLAIN ...`); bounded so that no
    /// input can recurse without limit.
    nesting: u32,
    pub(super) scan: Scan<'a>,
}

/// The deepest statement nesting classified; deeper input is a Write.
const MAX_NESTING: u32 = 8;

impl<'l, 'a> Cursor<'l, 'a> {
    fn new(lexer: &'l mut Lexer<'a>, dialect: Dialect) -> Self {
        Cursor {
            lexer,
            dialect,
            peeked: None,
            ended: false,
            input_done: false,
            nesting: 0,
            scan: Scan::new(dialect),
        }
    }

    pub(super) fn postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    pub(super) fn next(&mut self) -> Option<Token<'a>> {
        if self.ended {
            return None;
        }
        let tok = match self.peeked.take() {
            Some(tok) => tok,
            None => self.lexer.next_token(),
        };
        match tok {
            None => {
                self.ended = true;
                self.input_done = true;
                None
            }
            Some(tok) if tok.is_punct(b';') => {
                self.ended = true;
                None
            }
            Some(tok) => {
                self.scan.feed(tok);
                Some(tok)
            }
        }
    }

    pub(super) fn peek(&mut self) -> Option<Token<'a>> {
        if self.ended {
            return None;
        }
        let tok = match self.peeked {
            Some(tok) => tok,
            None => {
                let tok = self.lexer.next_token();
                self.peeked = Some(tok);
                tok
            }
        };
        tok.filter(|tok| !tok.is_punct(b';'))
    }

    pub(super) fn peek_is(&mut self, kw: Kw) -> bool {
        self.peek().is_some_and(|tok| tok.is(kw))
    }

    /// Reads the rest of the statement (through the scan).
    fn finish(&mut self) {
        if self.peeked.is_some() && self.next().is_none() {
            return;
        }
        // The hot loop of every statement: the lexer and the scan inline into it.
        while !self.ended {
            match self.lexer.next_token() {
                None => {
                    self.ended = true;
                    self.input_done = true;
                }
                Some(tok) if tok.is_punct(b';') => self.ended = true,
                Some(tok) => self.scan.feed(tok),
            }
        }
    }

    /// Classifies the next statement; `None` if it is empty.
    fn statement(&mut self) -> Option<Class> {
        let mut saw_paren = false;
        loop {
            match self.next() {
                None => return saw_paren.then_some(Class::Write),
                Some(tok) if tok.is_punct(b'(') => saw_paren = true,
                Some(tok) => return Some(self.dispatch(tok)),
            }
        }
    }

    /// The statement inside EXPLAIN or SET STATEMENT ... FOR; a missing one, or one
    /// nested too deep, is a Write.
    pub(super) fn inner_statement(&mut self) -> Class {
        if self.nesting >= MAX_NESTING {
            self.finish();
            return Class::Write;
        }
        self.nesting += 1;
        self.statement().unwrap_or(Class::Write)
    }

    fn dispatch(&mut self, first: Token<'a>) -> Class {
        let pg = self.postgres();
        let verdict = match first.kw() {
            Kw::Select | Kw::Values | Kw::Table | Kw::With => Scanned(Class::Read),
            Kw::Show if pg => Fixed(Class::Read),
            Kw::Show => self.show_mysql(),
            Kw::Explain if pg => self.explain_postgres(),
            Kw::Explain | Kw::Describe | Kw::Desc if !pg => self.explain_mysql(),
            Kw::Copy if pg => self.copy(),
            Kw::Begin => self.begin(),
            Kw::Start => self.start(),
            Kw::Commit | Kw::Rollback => self.end(),
            Kw::End | Kw::Abort if pg => self.end(),
            Kw::Set => self.set(),
            Kw::Reset if pg => Scanned(Class::SessionSet),
            Kw::Use if !pg => Scanned(Class::SessionSet),
            Kw::Create => {
                self.scan.functions.ddl = true;
                self.create()
            }
            Kw::Drop | Kw::Alter => {
                self.scan.functions.ddl = true;
                if !pg && first.is(Kw::Drop) && self.peek_is(Kw::Prepare) {
                    Fixed(Class::Pin)
                } else {
                    Scanned(Class::Write)
                }
            }
            Kw::Prepare => self.prepare(),
            Kw::Deallocate => Fixed(Class::Pin),
            Kw::Declare if pg => self.declare(),
            Kw::Listen | Kw::Unlisten | Kw::Discard if pg => Fixed(Class::Pin),
            Kw::Lock | Kw::Unlock | Kw::Handler if !pg => Fixed(Class::Pin),
            Kw::Flush if !pg => self.flush(),
            _ => Scanned(Class::Write),
        };
        self.finish();
        match verdict {
            Fixed(class) => class,
            Scanned(class) => self.scan.adjust(class),
        }
    }

    /// `EXPLAIN [ANALYZE] [VERBOSE] stmt` or `EXPLAIN (option [value], ...) stmt`.
    fn explain_postgres(&mut self) -> Verdict {
        let mut analyze = false;
        loop {
            let Some(tok) = self.peek() else {
                return Fixed(Class::Write);
            };
            match tok.kw() {
                Kw::Analyze | Kw::Analyse => {
                    self.next();
                    analyze = true;
                }
                Kw::Verbose => {
                    self.next();
                }
                _ if tok.is_punct(b'(') => {
                    self.next();
                    if self.peek().is_some_and(starts_query) {
                        break; // `EXPLAIN (SELECT ...)`: the parenthesis is the query's.
                    }
                    analyze = self.explain_options(analyze);
                }
                _ => break,
            }
        }
        self.scan = Scan::new(self.dialect);
        Fixed(explained(self.inner_statement(), analyze))
    }

    /// Reads an EXPLAIN option list through its `)`: whether ANALYZE ends up on.
    fn explain_options(&mut self, mut analyze: bool) -> bool {
        let mut after_analyze = false;
        let mut depth = 0u32;
        while let Some(tok) = self.next() {
            if after_analyze && is_false(tok) {
                analyze = false;
            }
            after_analyze = tok.is(Kw::Analyze) || tok.is(Kw::Analyse);
            analyze |= after_analyze;
            if tok.is_punct(b'(') {
                depth += 1;
            } else if tok.is_punct(b')') {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
        }
        analyze
    }

    /// MySQL `EXPLAIN`/`DESCRIBE`/`DESC`: of a statement (with EXTENDED, PARTITIONS,
    /// FORMAT=x, ANALYZE), or of a table or connection, which is a read.
    fn explain_mysql(&mut self) -> Verdict {
        let mut analyze = false;
        loop {
            let Some(tok) = self.peek() else {
                return Fixed(Class::Write);
            };
            match tok.kw() {
                Kw::Extended | Kw::Partitions => {
                    self.next();
                }
                Kw::Analyze => {
                    self.next();
                    analyze = true;
                }
                Kw::Format => {
                    self.next();
                    if self.peek().is_some_and(|tok| tok.is_punct(b'=')) {
                        self.next();
                    }
                    self.next();
                }
                Kw::Insert | Kw::Update | Kw::Delete | Kw::Replace => break,
                _ if starts_query(tok) => break,
                _ => return Fixed(Class::Read),
            }
        }
        self.scan = Scan::new(self.dialect);
        Fixed(explained(self.inner_statement(), analyze))
    }

    /// `COPY ... TO STDOUT` is a read; `COPY ... FROM` and `TO` a file or program is not.
    fn copy(&mut self) -> Verdict {
        let mut depth = 0u32;
        while let Some(tok) = self.next() {
            if tok.is_punct(b'(') {
                depth += 1;
            } else if tok.is_punct(b')') {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && tok.is(Kw::From) {
                return Scanned(Class::Write);
            } else if depth == 0 && tok.is(Kw::To) {
                let stdout = self.peek_is(Kw::Stdout);
                return Scanned(if stdout { Class::Read } else { Class::Write });
            }
        }
        Scanned(Class::Write)
    }

    fn begin(&mut self) -> Verdict {
        if !self.postgres() && self.peek_is(Kw::Not) {
            return Scanned(Class::Write); // MariaDB `BEGIN NOT ATOMIC` compound statement.
        }
        Fixed(Class::Begin {
            read_only: self.read_only_modes(),
        })
    }

    fn start(&mut self) -> Verdict {
        if !self.peek_is(Kw::Transaction) {
            return Scanned(Class::Write); // START SLAVE / REPLICA / GROUP_REPLICATION
        }
        Fixed(Class::Begin {
            read_only: self.read_only_modes(),
        })
    }

    /// Reads transaction modes to the end: whether they say READ ONLY and not READ WRITE,
    /// and, in PostgreSQL, not SERIALIZABLE, which a hot standby refuses.
    fn read_only_modes(&mut self) -> bool {
        let (mut only, mut write) = (false, false);
        let mut prev = Kw::Other;
        while let Some(tok) = self.next() {
            if prev == Kw::Read {
                only |= tok.is(Kw::Only);
                write |= tok.is(Kw::Write);
            }
            prev = tok.kw();
        }
        let standby_refuses = self.postgres() && self.scan.serializable;
        only && !write && !standby_refuses
    }

    /// MySQL SHOW: the statements about the server itself (its threads, status counters,
    /// engines, binary logs and replication, open tables, a thread's plan) are `Node`;
    /// the rest (tables, columns, variables, grants, ...) are reads.
    fn show_mysql(&mut self) -> Verdict {
        const NODE: &[&[u8]] = &[
            b"processlist",
            b"status",
            b"engine",
            b"master",
            b"binary",
            b"binlog",
            b"slave",
            b"slaves",
            b"replica",
            b"replicas",
            b"relaylog",
            b"open",
            b"profile",
            b"profiles",
            b"explain",
            b"analyze",
        ];
        const SKIP: &[&[u8]] = &[b"full", b"global", b"session", b"all", b"local"];
        while let Some(tok) = self.next() {
            let Token::Word(word, _) = tok else {
                break;
            };
            if SKIP.iter().any(|w| word.eq_ignore_ascii_case(w)) {
                continue;
            }
            if NODE.iter().any(|w| word.eq_ignore_ascii_case(w)) {
                return Fixed(Class::Node);
            }
            break;
        }
        Fixed(Class::Read)
    }

    /// COMMIT / ROLLBACK / END / ABORT. `ROLLBACK TO SAVEPOINT`, two-phase
    /// `COMMIT/ROLLBACK PREPARED` and `AND CHAIN` (the transaction goes on) are not an end.
    fn end(&mut self) -> Verdict {
        let mut prev = Kw::Other;
        while let Some(tok) = self.next() {
            match tok.kw() {
                Kw::To | Kw::Prepared => return Scanned(Class::Write),
                Kw::Chain if prev != Kw::No => return Scanned(Class::Write),
                _ => {}
            }
            prev = tok.kw();
        }
        Fixed(Class::End)
    }

    /// CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY ... pins; other CREATEs write.
    fn create(&mut self) -> Verdict {
        while let Some(tok) = self.peek() {
            match tok.kw() {
                Kw::Or | Kw::Replace | Kw::Global | Kw::Local => {
                    self.next();
                }
                Kw::Temp | Kw::Temporary => return Fixed(Class::Pin),
                _ => break,
            }
        }
        Scanned(Class::Write)
    }

    /// SQL-level PREPARE pins; PostgreSQL `PREPARE TRANSACTION 'gid'` is two-phase commit.
    fn prepare(&mut self) -> Verdict {
        if self.postgres() && self.peek_is(Kw::Transaction) {
            self.next();
            if self
                .peek()
                .is_some_and(|tok| matches!(tok, Token::String(_)))
            {
                return Scanned(Class::Write);
            }
        }
        Fixed(Class::Pin)
    }

    /// PostgreSQL DECLARE ... CURSOR pins.
    fn declare(&mut self) -> Verdict {
        while let Some(tok) = self.next() {
            if tok.is(Kw::Cursor) {
                return Fixed(Class::Pin);
            }
        }
        Scanned(Class::Write)
    }

    /// MySQL `FLUSH TABLES ... WITH READ LOCK` / `FOR EXPORT` hold a session lock.
    fn flush(&mut self) -> Verdict {
        while let Some(tok) = self.next() {
            if tok.is(Kw::Lock) || tok.is(Kw::Export) {
                return Fixed(Class::Pin);
            }
        }
        Scanned(Class::Write)
    }
}

/// The class of `EXPLAIN stmt`: without ANALYZE nothing runs, but only the plan of a
/// read is called a read; with ANALYZE the statement runs.
fn explained(inner: Class, analyze: bool) -> Class {
    match inner {
        Class::Read => Class::Read,
        Class::Node if analyze => Class::Node,
        Class::Node => Class::Read,
        Class::Pin if analyze => Class::Pin,
        _ => Class::Write,
    }
}

/// Whether an option value says false: `false`, `off`, `no`, `0`, quoted or not.
fn is_false(tok: Token<'_>) -> bool {
    match tok {
        Token::Word(_, kw) => matches!(kw, Kw::False | Kw::Off | Kw::No),
        Token::Number(number) => number == b"0",
        Token::String(text) => [&b"false"[..], b"off", b"no", b"0"]
            .iter()
            .any(|word| text.eq_ignore_ascii_case(word)),
        _ => false,
    }
}
