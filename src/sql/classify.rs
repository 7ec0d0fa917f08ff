//! Classifies one statement at a time: its first keyword says what kind of statement it
//! is, and a scan of all its tokens finds what turns a read into a write (FOR UPDATE,
//! INTO, data-modifying CTEs, side-effect functions) or pins the session (session locks).

use super::keyword::{Effect, Kw, function_effect};
use super::lexer::{Lexer, Token};
use super::{Class, Dialect, Hint};

/// The statements of a query string, each as its class; empty statements are skipped.
pub(crate) struct Statements<'a> {
    lexer: Lexer<'a>,
    dialect: Dialect,
    done: bool,
}

impl<'a> Statements<'a> {
    pub(crate) fn new(sql: &'a str, dialect: Dialect) -> Self {
        Statements {
            lexer: Lexer::new(sql, dialect),
            dialect,
            done: false,
        }
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
            if class.is_some() {
                return class;
            }
        }
        None
    }
}

/// A token with the keyword it spells (`Kw::Other` if none), looked up once.
#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    token: Token<'a>,
    kw: Kw,
}

impl<'a> Tok<'a> {
    fn new(token: Token<'a>) -> Self {
        let kw = match token {
            Token::Word(word) => Kw::of(word),
            _ => Kw::Other,
        };
        Tok { token, kw }
    }

    fn is(self, kw: Kw) -> bool {
        self.kw == kw
    }

    fn is_punct(self, byte: u8) -> bool {
        self.token == Token::Punct(byte)
    }

    /// Whether this token can open a query: `SELECT`, `WITH`, `VALUES`, `TABLE`, `(`.
    fn starts_query(self) -> bool {
        matches!(self.kw, Kw::Select | Kw::With | Kw::Values | Kw::Table) || self.is_punct(b'(')
    }
}

/// What a statement handler concluded.
enum Verdict {
    /// This class, adjusted by what the scan of the whole statement found.
    Scanned(Class),
    /// This class as it is.
    Fixed(Class),
}

use Verdict::{Fixed, Scanned};

/// The tokens of one statement, up to its `;` or the end of the input. Every token
/// handed out also goes through the statement's `Scan`.
struct Cursor<'l, 'a> {
    lexer: &'l mut Lexer<'a>,
    dialect: Dialect,
    /// A token read ahead by `peek`; `Some(None)` is the end of the input.
    peeked: Option<Option<Tok<'a>>>,
    /// The statement's `;` or the end of the input was reached.
    ended: bool,
    /// The end of the input was reached.
    input_done: bool,
    scan: Scan<'a>,
}

impl<'l, 'a> Cursor<'l, 'a> {
    fn new(lexer: &'l mut Lexer<'a>, dialect: Dialect) -> Self {
        Cursor {
            lexer,
            dialect,
            peeked: None,
            ended: false,
            input_done: false,
            scan: Scan::new(dialect),
        }
    }

    fn postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        if self.ended {
            return None;
        }
        let tok = match self.peeked.take() {
            Some(tok) => tok,
            None => self.lexer.next_token().map(Tok::new),
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

    fn peek(&mut self) -> Option<Tok<'a>> {
        if self.ended {
            return None;
        }
        let tok = match self.peeked {
            Some(tok) => tok,
            None => {
                let tok = self.lexer.next_token().map(Tok::new);
                self.peeked = Some(tok);
                tok
            }
        };
        tok.filter(|tok| !tok.is_punct(b';'))
    }

    fn peek_is(&mut self, kw: Kw) -> bool {
        self.peek().is_some_and(|tok| tok.is(kw))
    }

    /// Reads the rest of the statement (through the scan).
    fn finish(&mut self) {
        while self.next().is_some() {}
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

    /// The statement inside EXPLAIN or SET STATEMENT ... FOR; a missing one is a Write.
    fn inner_statement(&mut self) -> Class {
        self.statement().unwrap_or(Class::Write)
    }

    fn dispatch(&mut self, first: Tok<'a>) -> Class {
        let pg = self.postgres();
        let verdict = match first.kw {
            Kw::Select | Kw::Values | Kw::Table | Kw::With => Scanned(Class::Read),
            Kw::Show => Fixed(Class::Read),
            Kw::Explain if pg => self.explain_postgres(),
            Kw::Explain | Kw::Describe | Kw::Desc if !pg => self.explain_mysql(),
            Kw::Copy if pg => self.copy(),
            Kw::Begin => self.begin(),
            Kw::Start => self.start(),
            Kw::Commit | Kw::Rollback => self.end(),
            Kw::End | Kw::Abort if pg => self.end(),
            Kw::Set if pg => self.set_postgres(),
            Kw::Set => self.set_mysql(),
            Kw::Reset if pg => Scanned(Class::SessionSet),
            Kw::Use if !pg => Scanned(Class::SessionSet),
            Kw::Create => self.create(),
            Kw::Prepare => self.prepare(),
            Kw::Deallocate => Fixed(Class::Pin),
            Kw::Drop if !pg && self.peek_is(Kw::Prepare) => Fixed(Class::Pin),
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
            match tok.kw {
                Kw::Analyze | Kw::Analyse => {
                    self.next();
                    analyze = true;
                }
                Kw::Verbose => {
                    self.next();
                }
                _ if tok.is_punct(b'(') => {
                    self.next();
                    if self.peek().is_some_and(Tok::starts_query) {
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
            match tok.kw {
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
                _ if tok.starts_query() => break,
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

    /// Reads transaction modes to the end: whether they say READ ONLY and not READ WRITE.
    fn read_only_modes(&mut self) -> bool {
        let (mut only, mut write) = (false, false);
        let mut prev = Kw::Other;
        while let Some(tok) = self.next() {
            if prev == Kw::Read {
                only |= tok.is(Kw::Only);
                write |= tok.is(Kw::Write);
            }
            prev = tok.kw;
        }
        only && !write
    }

    /// COMMIT / ROLLBACK / END / ABORT. `ROLLBACK TO SAVEPOINT`, two-phase
    /// `COMMIT/ROLLBACK PREPARED` and `AND CHAIN` (the transaction goes on) are not an end.
    fn end(&mut self) -> Verdict {
        let mut prev = Kw::Other;
        while let Some(tok) = self.next() {
            match tok.kw {
                Kw::To | Kw::Prepared => return Scanned(Class::Write),
                Kw::Chain if prev != Kw::No => return Scanned(Class::Write),
                _ => {}
            }
            prev = tok.kw;
        }
        Fixed(Class::End)
    }

    /// PostgreSQL SET: session state, except the transaction-scoped `SET LOCAL`,
    /// `SET TRANSACTION` and `SET CONSTRAINTS`.
    fn set_postgres(&mut self) -> Verdict {
        match self.peek().map(|tok| tok.kw) {
            None | Some(Kw::Local | Kw::Transaction | Kw::Constraints) => Scanned(Class::Write),
            Some(_) => Scanned(Class::SessionSet),
        }
    }

    /// MySQL SET: an assignment list (session, global or user variables, autocommit),
    /// SET [scope] TRANSACTION, SET NAMES, SET PASSWORD, MariaDB SET STATEMENT ... FOR.
    fn set_mysql(&mut self) -> Verdict {
        let Some(first) = self.peek() else {
            return Scanned(Class::Write);
        };
        let mut global = false;
        match first.kw {
            Kw::Transaction | Kw::Password | Kw::Default | Kw::Resource => {
                return Scanned(Class::Write);
            }
            Kw::Statement => return self.set_statement(),
            Kw::Global | Kw::Persist | Kw::PersistOnly | Kw::Session | Kw::Local => {
                self.next();
                global = !matches!(first.kw, Kw::Session | Kw::Local);
                if self.peek_is(Kw::Transaction) {
                    // SET TRANSACTION alone only covers the next transaction.
                    return Scanned(if global { Class::Write } else { Class::SessionSet });
                }
            }
            _ => {}
        }
        let verdict = self.assignments(global);
        self.scan.assigns = false; // In SET, `:=` is a plain assignment.
        verdict
    }

    /// Reads a MySQL SET assignment list to the end. A scope keyword carries over to the
    /// assignments after it; `@@global.x` covers only its own.
    fn assignments(&mut self, mut global: bool) -> Verdict {
        let mut list = AssignmentList::default();
        let mut item = Assignment::new(global);
        let mut depth = 0u32;
        while let Some(tok) = self.next() {
            if item.in_value {
                if depth == 0 && tok.is_punct(b',') {
                    list.add(&item);
                    item = Assignment::new(global);
                    continue;
                }
                if tok.is_punct(b'(') {
                    depth += 1;
                } else if tok.is_punct(b')') {
                    depth = depth.saturating_sub(1);
                }
                item.value(tok);
            } else if tok.is_punct(b'@') {
                item.ats += 1;
            } else if tok.is_punct(b'=') || tok.token == Token::Assign {
                item.in_value = true;
            } else if tok.is_punct(b',') {
                list.add(&item);
                item = Assignment::new(global);
            } else {
                item.named = true;
                match tok.kw {
                    _ if item.ats == 1 => item.name = Kw::Other, // a user variable
                    Kw::Global | Kw::Persist | Kw::PersistOnly | Kw::Session | Kw::Local => {
                        item.global = !matches!(tok.kw, Kw::Session | Kw::Local);
                        if item.ats == 0 {
                            global = item.global;
                        }
                    }
                    kw => item.name = kw,
                }
            }
        }
        list.add(&item);
        Scanned(list.class())
    }

    /// MariaDB `SET STATEMENT var = value, ... FOR statement`: the inner statement's class.
    fn set_statement(&mut self) -> Verdict {
        self.next();
        let mut depth = 0u32;
        while let Some(tok) = self.next() {
            if tok.is_punct(b'(') {
                depth += 1;
            } else if tok.is_punct(b')') {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && tok.is(Kw::For) {
                return Fixed(self.inner_statement());
            }
        }
        Scanned(Class::Write)
    }

    /// CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY ... pins; other CREATEs write.
    fn create(&mut self) -> Verdict {
        while let Some(tok) = self.peek() {
            match tok.kw {
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
            if self.peek().is_some_and(|tok| matches!(tok.token, Token::String(_))) {
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
        Class::Pin if analyze => Class::Pin,
        _ => Class::Write,
    }
}

/// Whether an option value says false: `false`, `off`, `no`, `0`, quoted or not.
fn is_false(tok: Tok<'_>) -> bool {
    match tok.token {
        Token::Word(_) => matches!(tok.kw, Kw::False | Kw::Off | Kw::No),
        Token::Number(number) => number == b"0",
        Token::String(text) => [&b"false"[..], b"off", b"no", b"0"]
            .iter()
            .any(|word| text.eq_ignore_ascii_case(word)),
        _ => false,
    }
}

/// A boolean value as MySQL takes it for a switch such as autocommit.
fn bool_value(tok: Tok<'_>) -> Option<bool> {
    let text = match tok.token {
        Token::Word(text) | Token::Number(text) | Token::String(text) => text,
        _ => return None,
    };
    if [&b"1"[..], b"on", b"true"].iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Some(true)
    } else if [&b"0"[..], b"off", b"false"].iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Some(false)
    } else {
        None
    }
}

/// One assignment of a MySQL SET statement, as it is read.
struct Assignment {
    global: bool,
    /// `@` signs before the name: 1 for a user variable, 2 for `@@system`.
    ats: u32,
    named: bool,
    name: Kw,
    in_value: bool,
    value_tokens: u32,
    value: Option<bool>,
}

impl Assignment {
    fn new(global: bool) -> Self {
        Assignment {
            global,
            ats: 0,
            named: false,
            name: Kw::Other,
            in_value: false,
            value_tokens: 0,
            value: None,
        }
    }

    fn value(&mut self, tok: Tok<'_>) {
        if self.value_tokens == 0 {
            self.value = bool_value(tok);
        }
        self.value_tokens += 1;
    }
}

/// What a MySQL SET assignment list sets.
#[derive(Default)]
struct AssignmentList {
    items: u32,
    global: u32,
    /// Session autocommit assignments, and the value if there is exactly one literal.
    autocommit: u32,
    autocommit_value: Option<bool>,
}

impl AssignmentList {
    fn add(&mut self, item: &Assignment) {
        if !item.named && !item.in_value {
            return;
        }
        self.items += 1;
        if item.global {
            self.global += 1;
        } else if item.name == Kw::Autocommit {
            self.autocommit += 1;
            self.autocommit_value = if item.value_tokens == 1 { item.value } else { None };
        }
    }

    /// Global-only → Write; global and session mixed → Pin (the session part cannot be
    /// replayed apart); one literal autocommit → Autocommit; autocommit among others or
    /// set from an expression → Pin; otherwise SessionSet.
    fn class(&self) -> Class {
        match (self.items, self.global, self.autocommit, self.autocommit_value) {
            (0, _, _, _) => Class::Write,
            (items, global, _, _) if global == items => Class::Write,
            (_, global, _, _) if global > 0 => Class::Pin,
            (1, _, 1, Some(on)) => Class::Autocommit(on),
            (_, _, autocommit, _) if autocommit > 0 => Class::Pin,
            _ => Class::SessionSet,
        }
    }
}

/// What one pass over a statement's tokens found, whatever the statement is.
struct Scan<'a> {
    dialect: Dialect,
    prev: Option<Token<'a>>,
    prev_kw: Kw,
    /// The previous words were INTO [LOCAL|GLOBAL].
    after_into: bool,
    /// INSERT/UPDATE/DELETE/MERGE was just seen; a `(` next makes it a function call.
    pending_modify: bool,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE, LOCK IN SHARE MODE.
    locks_rows: bool,
    /// SELECT ... INTO (a new table, a variable, a file).
    into: bool,
    /// SELECT ... INTO TEMP table (PostgreSQL): a temporary table.
    into_temp: bool,
    /// INSERT/UPDATE/DELETE/MERGE as a statement (a data-modifying CTE).
    modifies: bool,
    /// A side-effect function, NEXT/PREVIOUS VALUE FOR, SQL_CALC_FOUND_ROWS.
    side_effect: bool,
    /// A MySQL user-variable assignment `@v := ...`.
    assigns: bool,
    /// A function that takes session-level state.
    pins: bool,
}

impl<'a> Scan<'a> {
    fn new(dialect: Dialect) -> Self {
        Scan {
            dialect,
            prev: None,
            prev_kw: Kw::Other,
            after_into: false,
            pending_modify: false,
            locks_rows: false,
            into: false,
            into_temp: false,
            modifies: false,
            side_effect: false,
            assigns: false,
            pins: false,
        }
    }

    fn feed(&mut self, tok: Tok<'a>) {
        if self.pending_modify {
            self.pending_modify = false;
            // MySQL's INSERT(str, pos, len, new) is a string function.
            self.modifies |= !tok.is_punct(b'(');
        }
        let after_into = std::mem::take(&mut self.after_into);
        match tok.token {
            Token::Word(word) => match tok.kw {
                Kw::Insert | Kw::Delete | Kw::Merge => self.pending_modify = true,
                Kw::Update => {
                    self.locks_rows |= self.prev_kw == Kw::For;
                    self.pending_modify = true;
                }
                Kw::Share | Kw::No | Kw::Key => self.locks_rows |= self.prev_kw == Kw::For,
                Kw::In => self.locks_rows |= self.prev_kw == Kw::Lock,
                Kw::Into => {
                    self.into = true;
                    self.after_into = true;
                }
                Kw::Local | Kw::Global => self.after_into = after_into,
                Kw::Temp | Kw::Temporary => self.into_temp |= after_into,
                Kw::Value => {
                    self.side_effect |= matches!(self.prev_kw, Kw::Next | Kw::Previous);
                }
                Kw::Other => {
                    self.side_effect |= self.dialect == Dialect::MySql
                        && word.eq_ignore_ascii_case(b"sql_calc_found_rows");
                }
                _ => {}
            },
            Token::Punct(b'(') => {
                if let Some(Token::Word(name) | Token::QuotedIdent(name)) = self.prev {
                    match function_effect(name, self.dialect) {
                        Some(Effect::Write) => self.side_effect = true,
                        Some(Effect::Pin) => self.pins = true,
                        None => {}
                    }
                }
            }
            Token::Assign => self.assigns |= self.dialect == Dialect::MySql,
            _ => {}
        }
        self.prev = Some(tok.token);
        self.prev_kw = tok.kw;
    }

    fn writes(&self) -> bool {
        self.locks_rows
            || self.into
            || self.modifies
            || self.pending_modify
            || self.side_effect
            || self.assigns
    }

    /// `class` as changed by what the scan found: session locks pin; a read that writes
    /// is a write (SELECT INTO TEMP pins); session state set from a side effect pins.
    fn adjust(&self, class: Class) -> Class {
        if self.pins {
            return Class::Pin;
        }
        match class {
            Class::Read if self.into_temp => Class::Pin,
            Class::Read if self.writes() => Class::Write,
            Class::SessionSet | Class::Autocommit(_) if self.writes() => Class::Pin,
            other => other,
        }
    }
}
