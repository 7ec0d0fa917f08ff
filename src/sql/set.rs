//! SET statements: whether they change replayable session state, the next transaction,
//! the server (GLOBAL), or MySQL's autocommit, which the router tracks itself.

use super::classify::{Cursor, Fixed, Scanned, Verdict};
use super::keyword::Kw;
use super::lexer::Token;
use super::{Class, Dialect};

impl Cursor<'_, '_> {
    /// SET in either dialect, after the SET keyword.
    pub(super) fn set(&mut self) -> Verdict {
        match self.dialect {
            Dialect::Postgres => self.set_postgres(),
            Dialect::MySql => self.set_mysql(),
        }
    }

    /// PostgreSQL SET: session state, except the transaction-scoped `SET LOCAL`,
    /// `SET TRANSACTION` and `SET CONSTRAINTS`.
    fn set_postgres(&mut self) -> Verdict {
        match self.peek().map(|tok| tok.kw()) {
            None | Some(Kw::Local | Kw::Transaction | Kw::Constraints) => Scanned(Class::Write),
            Some(kw) => {
                if kw == Kw::Session {
                    self.next();
                }
                let name = match self.peek() {
                    Some(Token::Word(name, _) | Token::QuotedIdent(name)) => name,
                    _ => b"",
                };
                self.scan.default_isolation =
                    [&b"default_transaction_isolation"[..], b"characteristics"]
                        .iter()
                        .any(|n| name.eq_ignore_ascii_case(n));
                Scanned(Class::SessionSet)
            }
        }
    }

    /// MySQL SET: an assignment list (session, global or user variables, autocommit),
    /// SET [scope] TRANSACTION, SET NAMES, SET PASSWORD, MariaDB SET STATEMENT ... FOR.
    fn set_mysql(&mut self) -> Verdict {
        let Some(first) = self.peek() else {
            return Scanned(Class::Write);
        };
        let mut global = false;
        match first.kw() {
            // SET TRANSACTION covers only the next transaction; the others are not
            // session state: PASSWORD, DEFAULT ROLE and RESOURCE GROUP persist or act
            // on other threads.
            Kw::Transaction | Kw::Password | Kw::Default | Kw::Resource => {
                return Scanned(Class::Write);
            }
            Kw::Statement => return self.set_statement(),
            Kw::Global | Kw::Persist | Kw::PersistOnly | Kw::Session | Kw::Local => {
                self.next();
                global = !matches!(first.kw(), Kw::Session | Kw::Local);
                if self.peek_is(Kw::Transaction) {
                    // The session's (or the server's) default for later transactions.
                    return Scanned(if global {
                        Class::Write
                    } else {
                        Class::SessionSet
                    });
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
            } else if tok.is_punct(b'=') || tok == Token::Assign {
                item.in_value = true;
            } else if tok.is_punct(b',') {
                list.add(&item);
                item = Assignment::new(global);
            } else {
                item.named = true;
                match tok.kw() {
                    _ if item.ats == 1 => {
                        // A user variable, whatever its name: always session state.
                        item.global = false;
                        item.name = Kw::Other;
                    }
                    Kw::Global | Kw::Persist | Kw::PersistOnly | Kw::Session | Kw::Local => {
                        item.global = !matches!(tok.kw(), Kw::Session | Kw::Local);
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
}

/// A boolean value as MySQL takes it for a switch such as autocommit.
fn bool_value(tok: Token<'_>) -> Option<bool> {
    let text = match tok {
        Token::Word(text, _) | Token::Number(text) | Token::String(text) => text,
        _ => return None,
    };
    if [&b"1"[..], b"on", b"true"]
        .iter()
        .any(|word| text.eq_ignore_ascii_case(word))
    {
        Some(true)
    } else if [&b"0"[..], b"off", b"false"]
        .iter()
        .any(|word| text.eq_ignore_ascii_case(word))
    {
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

    fn value(&mut self, tok: Token<'_>) {
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
            self.autocommit_value = if item.value_tokens == 1 {
                item.value
            } else {
                None
            };
        }
    }

    /// Global-only → Write; global and session mixed → Pin (the session part cannot be
    /// replayed apart); one literal autocommit → Autocommit; a literal `autocommit = 1`
    /// among other session settings → SessionSet (MariaDB Connector/J opens every
    /// connection with `set autocommit=1, sql_mode = …`: autocommit is already on in an
    /// idle pooled session, and replayed elsewhere it changes nothing); autocommit off among
    /// others, or set from an expression → Pin; otherwise SessionSet.
    fn class(&self) -> Class {
        match (
            self.items,
            self.global,
            self.autocommit,
            self.autocommit_value,
        ) {
            (0, _, _, _) => Class::Write,
            (items, global, _, _) if global == items => Class::Write,
            (_, global, _, _) if global > 0 => Class::Pin,
            (1, _, 1, Some(on)) => Class::Autocommit(on),
            (_, _, 1, Some(true)) => Class::SessionSet,
            (_, _, autocommit, _) if autocommit > 0 => Class::Pin,
            _ => Class::SessionSet,
        }
    }
}

/// The PostgreSQL settings `sql` changes, one per statement, when every statement is a
/// plain `SET [SESSION] name {TO | =} …`, `SET TIME ZONE …`, `SET SCHEMA …`, `SET NAMES …`
/// or `RESET name`: names lowercased unless quoted, as `current_setting()` takes them.
/// `None` for anything else (`RESET ALL`, `SET ROLE`, `SET LOCAL` …), whose effect the
/// caller cannot read back by name.
pub fn postgres_settings(sql: &[u8]) -> Option<Vec<String>> {
    let statements = super::lexer::Lexer::new(sql, Dialect::Postgres).statements();
    let mut names = Vec::new();
    for tokens in &statements {
        match characteristics(tokens) {
            Some(set) => names.extend(set?),
            None => names.push(setting_name(tokens)?),
        }
    }
    (!names.is_empty()).then_some(names)
}

/// The settings `SET SESSION CHARACTERISTICS AS TRANSACTION <modes>` changes (one per mode:
/// `default_transaction_isolation`, `…_read_only`, `…_deferrable`); `Some(None)` for one
/// whose modes are not read; `None` for any other statement.
fn characteristics(tokens: &[Token<'_>]) -> Option<Option<Vec<String>>> {
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some(Token::Word(t, _)) if t.eq_ignore_ascii_case(w.as_bytes()));
    let head = ["set", "session", "characteristics", "as", "transaction"];
    if !head.iter().take(3).enumerate().all(|(i, w)| word(i, w)) {
        return None;
    }
    if !head.iter().enumerate().all(|(i, w)| word(i, w)) {
        return Some(None);
    }
    let mut names: Vec<String> = Vec::new();
    let mut at = head.len();
    while at < tokens.len() {
        let (name, next) = if word(at, "isolation") && word(at + 1, "level") {
            let two_words = (word(at + 2, "read")
                && (word(at + 3, "committed") || word(at + 3, "uncommitted")))
                || (word(at + 2, "repeatable") && word(at + 3, "read"));
            let level = if two_words {
                4
            } else if word(at + 2, "serializable") {
                3
            } else {
                return Some(None);
            };
            ("default_transaction_isolation", at + level)
        } else if word(at, "read") && (word(at + 1, "only") || word(at + 1, "write")) {
            ("default_transaction_read_only", at + 2)
        } else if word(at, "deferrable") {
            ("default_transaction_deferrable", at + 1)
        } else if word(at, "not") && word(at + 1, "deferrable") {
            ("default_transaction_deferrable", at + 2)
        } else {
            return Some(None);
        };
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        at = next;
        if tokens.get(at).is_some_and(|t| t.is_punct(b',')) {
            at += 1;
        }
    }
    Some((!names.is_empty()).then_some(names))
}

/// The default transaction isolation of a PostgreSQL session, as a `SET` leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultIsolation {
    /// Serializable: a hot standby refuses every transaction of the session.
    Serializable,
    /// Another level.
    Other,
    /// What the session started with (`RESET`, `SET … TO DEFAULT`).
    Login,
}

/// What `sql`, session-state statements (`Class::SessionSet`), leaves the session's default
/// transaction isolation at, by the last of them that changes it: `SET [SESSION]
/// default_transaction_isolation`, `SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION
/// LEVEL …`, `RESET default_transaction_isolation`, `RESET ALL`. `None` when none does.
pub fn postgres_default_isolation(sql: &[u8]) -> Option<DefaultIsolation> {
    let statements = super::lexer::Lexer::new(sql, Dialect::Postgres).statements();
    statements.iter().rev().find_map(|t| default_isolation(t))
}

/// What one statement (its tokens) sets the default isolation to, if it sets it.
fn default_isolation(tokens: &[Token<'_>]) -> Option<DefaultIsolation> {
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some(Token::Word(t, _) | Token::QuotedIdent(t)) if t.eq_ignore_ascii_case(w.as_bytes()));
    const NAME: &str = "default_transaction_isolation";
    if word(0, "reset") {
        return (word(1, "all") || word(1, NAME)).then_some(DefaultIsolation::Login);
    }
    if !word(0, "set") {
        return None;
    }
    let at = if word(1, "session") { 2 } else { 1 };
    let level = |i: usize| match tokens.get(i) {
        Some(Token::Word(t, _) | Token::String(t)) if t.eq_ignore_ascii_case(b"serializable") => {
            DefaultIsolation::Serializable
        }
        _ if word(i, "default") => DefaultIsolation::Login,
        _ => DefaultIsolation::Other,
    };
    if word(at, NAME) {
        return Some(level(at + 2));
    }
    if at == 2 && word(at, "characteristics") {
        let isolation =
            (at..tokens.len()).find(|&i| word(i, "isolation") && word(i + 1, "level"))?;
        return Some(level(isolation + 2));
    }
    None
}

/// The setting one `SET`/`RESET` statement (its tokens) changes, if it is a plain one.
fn setting_name(tokens: &[Token<'_>]) -> Option<String> {
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some(Token::Word(t, _)) if t.eq_ignore_ascii_case(w.as_bytes()));
    let reset = word(0, "reset");
    if !reset && !word(0, "set") {
        return None;
    }
    let mut at = 1;
    if !reset && word(at, "session") {
        at += 1;
        if word(at, "authorization") || word(at, "characteristics") {
            return None;
        }
    }
    if !reset && word(at, "time") && word(at + 1, "zone") {
        return Some("timezone".into());
    }
    if !reset && word(at, "schema") {
        return Some("search_path".into());
    }
    if !reset && word(at, "names") {
        return Some("client_encoding".into());
    }
    if word(at, "all") || word(at, "role") || word(at, "local") || word(at, "session") {
        return None;
    }
    let mut name = String::new();
    loop {
        match tokens.get(at)? {
            Token::Word(w, _) => name.push_str(&std::str::from_utf8(w).ok()?.to_ascii_lowercase()),
            Token::QuotedIdent(w) => name.push_str(std::str::from_utf8(w).ok()?),
            _ => return None,
        }
        at += 1;
        if tokens.get(at).is_some_and(|t| t.is_punct(b'.')) {
            name.push('.');
            at += 1;
        } else {
            break;
        }
    }
    let rest_ok = if reset {
        tokens.len() == at
    } else {
        word(at, "to") || tokens.get(at).is_some_and(|t| t.is_punct(b'='))
    };
    rest_ok.then_some(name)
}

#[cfg(test)]
mod setting_tests {
    use super::postgres_settings;

    #[test]
    fn sets_of_the_default_isolation_say_what_they_leave() {
        use super::{DefaultIsolation::*, postgres_default_isolation};
        let cases = [
            (
                "SET default_transaction_isolation = 'serializable'",
                Some(Serializable),
            ),
            (
                "set session DEFAULT_TRANSACTION_ISOLATION to SERIALIZABLE",
                Some(Serializable),
            ),
            (
                "SET default_transaction_isolation = 'read committed'",
                Some(Other),
            ),
            ("SET default_transaction_isolation TO DEFAULT", Some(Login)),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE, ISOLATION LEVEL SERIALIZABLE",
                Some(Serializable),
            ),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                Some(Other),
            ),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", None),
            ("RESET default_transaction_isolation", Some(Login)),
            ("RESET ALL", Some(Login)),
            (
                "SET default_transaction_isolation = serializable; SET a.b = 1; \
                 SET default_transaction_isolation = 'read committed'",
                Some(Other),
            ),
            ("SET work_mem = '4MB'; RESET work_mem", None),
        ];
        for (sql, want) in cases {
            assert_eq!(postgres_default_isolation(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn plain_sets_name_the_setting_they_change() {
        let names = |sql: &str| postgres_settings(sql.as_bytes());
        let some = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            names("SET search_path TO app, public"),
            some(&["search_path"])
        );
        assert_eq!(names("set SESSION Work_Mem = '64MB'"), some(&["work_mem"]));
        assert_eq!(names("SET TIME ZONE 'UTC'"), some(&["timezone"]));
        assert_eq!(names("SET myapp.tenant = '7'"), some(&["myapp.tenant"]));
        assert_eq!(names("RESET work_mem"), some(&["work_mem"]));
        assert_eq!(
            names("SET a TO 1;\nSET schema 'x'"),
            some(&["a", "search_path"])
        );
        assert_eq!(
            names("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            some(&["default_transaction_isolation"])
        );
        assert_eq!(
            names(
                "set session characteristics as transaction read only, isolation level \
                 repeatable read not deferrable"
            ),
            some(&[
                "default_transaction_read_only",
                "default_transaction_isolation",
                "default_transaction_deferrable"
            ])
        );
        for sql in [
            "RESET ALL",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION x",
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SOMETHING",
            "SET SESSION CHARACTERISTICS AS TRANSACTION",
            "SET LOCAL a = 1",
            "SET a = 1; SELECT 1",
            "",
        ] {
            assert_eq!(names(sql), None, "{sql}");
        }
    }
}
