//! Tells the router what a query string does (read, write, transaction control, session
//! state) and which routing hint it carries, from a lexer pass instead of a full parse.
//!
//! - `lexer`: bytes → tokens; comments, strings, quoted identifiers and dollar-quoted
//!   bodies are skipped, so keywords inside them are never seen. Hints come from comments.
//! - `keyword`: keyword and side-effect-function lookup without allocation.
//! - `classify`: splits statements and classifies each by its first keyword.
//! - `scan`: one pass over a statement's tokens for what makes a read a write.
//! - `set`: SET statements (session, transaction, global, autocommit).
//! - `function`: the node-state rule, builtin functions known to read, and the calls of
//!   unknown functions left for the catalog cache (`crate::catalog`) to judge.
//! - `identity`: `CONNECTION_ID()` / `pg_backend_pid()` replaced by the id the proxy gave
//!   a pooled client.
//! - `signal`: `pg_cancel_backend` / `pg_terminate_backend` calls plain enough for the
//!   proxy to answer for its pooled clients' own pids.
//!
//! Anything the classifier cannot prove is a read is a `Write`: the writer can run
//! everything, a replica cannot.

mod classify;
#[cfg(test)]
mod corpus;
mod function;
pub mod hold;
mod identity;
mod keyword;
mod lexer;
mod scan;
mod set;
mod settings;
mod signal;

use classify::Statements;
pub use function::{FunctionId, Functions, MAX_CALLS};
pub use identity::rewrite_identity;
pub use set::{DefaultIsolation, postgres_default_isolation, postgres_settings};
pub use settings::{MysqlSetting, mysql_settings, postgres_literal_settings};
pub use signal::{Arg, Signal, SignalCall, signal_call};

/// The SQL dialect, which decides how quotes and comments are lexed and which
/// statements and functions are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// What a statement does, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Provably read-only: may run on a replica.
    Read,
    /// A read about the server itself, not the data (its activity, locks, prepared
    /// transactions, replication, transaction ids, this backend): runs on the session's own
    /// writer connection, where its transactions and locks are.
    Node,
    /// Writes, DDL, side-effect functions, SELECT ... FOR UPDATE/SHARE, SELECT ... INTO,
    /// data-modifying CTEs, and anything not provably a read (the safe default).
    Write,
    /// BEGIN / START TRANSACTION; `read_only` when READ ONLY is given.
    Begin { read_only: bool },
    /// COMMIT / ROLLBACK (and PostgreSQL END / ABORT); not `ROLLBACK TO SAVEPOINT`,
    /// which is a `Write`.
    End,
    /// Session state that can be replayed on another connection by re-running the same
    /// text: SET (not SET LOCAL or SET TRANSACTION in PostgreSQL), RESET, MySQL `USE db`.
    SessionSet,
    /// MySQL `SET autocommit = 0|1`; the bool is the new autocommit value.
    Autocommit(bool),
    /// Session state that cannot be replayed, so the session must stay on the writer:
    /// LISTEN, temporary tables, SQL-level PREPARE, cursors, session locks, HANDLER.
    Pin,
}

/// A routing hint given in a comment: `/* switchyard:writer */`, `-- switchyard:reader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Writer,
    Reader,
}

/// The classification of a whole query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// The combined class of every statement in the string.
    pub class: Class,
    /// The routing hint found in a comment, if any (`Writer` wins if both appear).
    pub hint: Option<Hint>,
    /// The number of non-empty statements in the string.
    pub count: u32,
    /// Functions called that the classifier cannot judge (a `Read` calling one is a read
    /// only if the catalog says the function is), and whether the string has DDL.
    pub functions: Functions,
}

impl Statement {
    /// One statement of this class, with no hint and no unknown calls.
    pub const fn of(class: Class) -> Statement {
        Statement {
            class,
            hint: None,
            count: 1,
            functions: Functions::NONE,
        }
    }
}

/// Whether `stmt` writes: a `Write`, or a string or batch of several with a write among
/// them, whatever class they combine to (what read-only mode refuses).
pub fn writes(stmt: &Statement) -> bool {
    stmt.class == Class::Write || stmt.functions.writes
}

/// Whether `sql` (a transaction start, or `SET TRANSACTION`) asks for a read-write
/// transaction in so many words (`READ WRITE`), overriding the session's read-only
/// default: what a cluster in read-only mode refuses at a transaction start, as a standby
/// refuses `BEGIN READ WRITE`.
pub fn says_read_write(sql: &[u8], dialect: Dialect) -> bool {
    // Asked at every transaction start: most texts (`BEGIN`) are done without lexing.
    let mentions_write = sql.windows(5).any(|w| w.eq_ignore_ascii_case(b"write"));
    if !mentions_write {
        return false;
    }
    let word = |t: &lexer::Token<'_>, w: &str| matches!(t, lexer::Token::Word(x, _) if x.eq_ignore_ascii_case(w.as_bytes()));
    lexer::Lexer::new(sql, dialect)
        .statements()
        .iter()
        .any(|tokens| {
            tokens
                .windows(2)
                .any(|p| word(&p[0], "read") && word(&p[1], "write"))
        })
}

/// Whether `sql` begins a transaction with nothing else said, as the proxy may answer it
/// and send it on with the transaction's first statement (transaction mode): `BEGIN`,
/// `BEGIN WORK`, `START TRANSACTION`, and PostgreSQL's `BEGIN TRANSACTION`; in any case,
/// with a `;` at most; no options, no comments.
pub fn plain_begin(sql: &[u8], dialect: Dialect) -> bool {
    let sql = sql.trim_ascii();
    let sql = sql.strip_suffix(b";").unwrap_or(sql);
    let mut words = sql.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    let mut next = || words.next().map(<[u8]>::to_ascii_lowercase);
    let (first, second) = (next(), next());
    let plain = match (first.as_deref(), second.as_deref()) {
        (Some(b"begin"), None | Some(b"work")) | (Some(b"start"), Some(b"transaction")) => true,
        (Some(b"begin"), Some(b"transaction")) => dialect == Dialect::Postgres,
        _ => false,
    };
    plain && next().is_none()
}

/// A read, possibly about the node: may run without a writer's transaction.
pub fn is_read(class: Class) -> bool {
    matches!(class, Class::Read | Class::Node)
}

/// A class that carries session state.
pub fn pins(class: Class) -> bool {
    matches!(class, Class::Pin | Class::SessionSet | Class::Autocommit(_))
}

/// Classify a whole query string (which may hold several `;`-separated statements).
///
/// Several statements combine: all `Read` → `Read`; all `Read` or `Node` → `Node`; all
/// `SessionSet` → `SessionSet` (replayed as the one text, recorded only once all of it ran
/// without error); any `Pin` → `Pin`; any `SessionSet` or `Autocommit` together with
/// anything else → `Pin` (a batch cannot be partly replayed); otherwise → `Write`. An empty
/// string is a `Read` with count 0.
pub fn classify(sql: &str, dialect: Dialect) -> Statement {
    classify_bytes(sql.as_bytes(), dialect)
}

/// [`classify`] of raw query bytes in any client encoding: the classifier reads only ASCII
/// keywords and punctuation, so bytes that are not UTF-8 are simply parts of words or strings.
pub fn classify_bytes(sql: &[u8], dialect: Dialect) -> Statement {
    let mut statements = Statements::new(sql, dialect);
    let mut combined = Combined::new();
    for class in statements.by_ref() {
        combined.add(class);
    }
    let mut functions = statements.functions();
    functions.writes = combined.count > 1 && combined.any_write;
    Statement {
        class: combined.class(),
        hint: statements.hint(),
        count: combined.count,
        functions,
    }
}

/// The running combination of the classes of a multi-statement string.
struct Combined {
    count: u32,
    first: Class,
    /// Every statement is a `Read` or a `Node`.
    all_read: bool,
    any_node: bool,
    /// Every statement is a `SessionSet`.
    all_set: bool,
    /// Some statement pins the session or changes session state.
    pins: bool,
    /// Some statement is a `Write`.
    any_write: bool,
}

impl Combined {
    fn new() -> Self {
        Combined {
            count: 0,
            first: Class::Read,
            all_read: true,
            any_node: false,
            all_set: true,
            pins: false,
            any_write: false,
        }
    }

    fn add(&mut self, class: Class) {
        self.add_class(class, 1);
        self.all_read &= is_read(class);
        self.any_node |= class == Class::Node;
        self.all_set &= class == Class::SessionSet;
        self.pins |= pins(class);
        self.any_write |= class == Class::Write;
    }

    fn add_class(&mut self, class: Class, count: u32) {
        if self.count == 0 {
            self.first = class;
        }
        self.count = self.count.saturating_add(count);
    }

    fn class(&self) -> Class {
        match self.count {
            0 => Class::Read,
            1 => self.first,
            _ if self.all_read && self.any_node => Class::Node,
            _ if self.all_read => Class::Read,
            _ if self.all_set => Class::SessionSet,
            _ if self.pins => Class::Pin,
            _ => Class::Write,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_in_so_many_words_is_seen_outside_strings_and_comments() {
        for (sql, says) in [
            ("BEGIN READ WRITE", true),
            (
                "start transaction isolation level serializable, read\n write",
                true,
            ),
            ("SET TRANSACTION READ WRITE", true),
            ("BEGIN READ ONLY", false),
            ("BEGIN /* read write */", false),
            ("SELECT 'read write'", false),
            ("BEGIN", false),
        ] {
            assert_eq!(
                says_read_write(sql.as_bytes(), Dialect::Postgres),
                says,
                "{sql}"
            );
        }
    }

    #[test]
    fn a_write_among_several_statements_is_a_write_whatever_they_combine_to() {
        for (sql, dialect, writes) in [
            ("SET @a = 1; INSERT INTO t VALUES (1)", Dialect::MySql, true),
            (
                "SET SESSION TRANSACTION READ WRITE; UPDATE t SET a = 1",
                Dialect::MySql,
                true,
            ),
            (
                "SET search_path TO app; DELETE FROM t",
                Dialect::Postgres,
                true,
            ),
            ("INSERT INTO t VALUES (1)", Dialect::Postgres, true),
            ("SET @a = 1; SELECT 1", Dialect::MySql, false),
            ("SET a.b = 1; LISTEN c", Dialect::Postgres, false),
            ("SELECT 1", Dialect::Postgres, false),
        ] {
            assert_eq!(super::writes(&classify(sql, dialect)), writes, "{sql}");
        }
    }

    #[test]
    fn empty_input_is_a_read_of_no_statements() {
        for sql in [
            "",
            "   ",
            ";",
            " ; ;; ",
            "-- only a comment",
            "/* c */ ; /* d */",
        ] {
            let s = classify(sql, Dialect::Postgres);
            assert_eq!((s.class, s.count), (Class::Read, 0), "{sql:?}");
            let s = classify(sql, Dialect::MySql);
            assert_eq!((s.class, s.count), (Class::Read, 0), "{sql:?}");
        }
    }

    #[test]
    fn count_is_the_number_of_non_empty_statements() {
        let cases = [
            ("SELECT 1", 1),
            ("SELECT 1;", 1),
            ("SELECT 1; SELECT 2", 2),
            ("SELECT 1;; ;SELECT 2;", 2),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT;", 3),
            ("SELECT ';'; SELECT $$;$$", 2),
            ("/* ; */ SELECT 1 -- ;", 1),
        ];
        for (sql, count) in cases {
            assert_eq!(classify(sql, Dialect::Postgres).count, count, "{sql:?}");
        }
    }

    #[test]
    fn combination_rules() {
        let w = Class::Write;
        let cases = [
            ("SELECT 1; SELECT 2", Class::Read),
            ("SELECT 1; INSERT INTO t VALUES (1)", w),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT", w),
            ("BEGIN; COMMIT", w),
            ("SET x = 1; SELECT 1", Class::Pin),
            ("SELECT 1; LISTEN c", Class::Pin),
        ];
        for (sql, class) in cases {
            assert_eq!(classify(sql, Dialect::Postgres).class, class, "{sql:?}");
        }
        let s = classify("SET autocommit = 0; SELECT 1", Dialect::MySql);
        assert_eq!(s.class, Class::Pin);
    }

    #[test]
    fn a_text_of_session_sets_only_is_session_state() {
        let set = Class::SessionSet;
        let pg = [
            ("SET x = 1; SET y = 2", set),
            ("SET search_path TO app; SET statement_timeout = 0;", set),
            ("SET a.b = '1'; RESET work_mem; SET TIME ZONE 'UTC'", set),
            ("SET x = 1; SELECT 1", Class::Pin),
            ("SET x = 1; SET LOCAL y = 2", Class::Pin),
            ("BEGIN; SET x = 1; COMMIT", Class::Pin),
            ("SET x = 1; LISTEN c", Class::Pin),
            ("SET x = 1; SET myapp.level = 'serializable'", Class::Pin),
            // The session follows its default isolation, whatever the level.
            ("SET default_transaction_isolation = 'serializable'", set),
            (
                "SET x = 1; SET default_transaction_isolation TO serializable",
                set,
            ),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                set,
            ),
        ];
        for (sql, class) in pg {
            let s = classify(sql, Dialect::Postgres);
            assert_eq!(s.class, class, "{sql:?}");
        }
        let mysql = [
            ("SET NAMES utf8mb4; SET time_zone = '+00:00'", set),
            ("SET @a = 1; USE app; SET SESSION sql_mode = 'ANSI'", set),
            (
                "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE; SET @b = 2",
                set,
            ),
            ("SET NAMES utf8mb4; SET autocommit = 0", Class::Pin),
            ("SET NAMES utf8mb4; SET GLOBAL x = 1", Class::Pin),
            ("SET @a = 1; SELECT @a", Class::Pin),
            ("SET @a = 1; SET @b = (SELECT GET_LOCK('x', 1))", Class::Pin),
        ];
        for (sql, class) in mysql {
            let s = classify(sql, Dialect::MySql);
            assert_eq!(s.class, class, "{sql:?}");
        }
    }

    #[test]
    fn only_a_begin_with_nothing_else_said_is_plain() {
        use Dialect::{MySql, Postgres};
        let table: &[(&str, bool, bool)] = &[
            // text, plain for PostgreSQL, plain for MySQL
            ("BEGIN", true, true),
            ("begin;", true, true),
            ("  BEGIN WORK ; ", true, true),
            ("Begin Transaction", true, false),
            ("START TRANSACTION;", true, true),
            ("START  TRANSACTION", true, true),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE", false, false),
            ("BEGIN READ ONLY", false, false),
            ("START TRANSACTION READ WRITE", false, false),
            ("START TRANSACTION WITH CONSISTENT SNAPSHOT", false, false),
            ("BEGIN; SELECT 1", false, false),
            ("BEGIN;;", false, false),
            ("/* x */ BEGIN", false, false),
            ("BEGIN -- x", false, false),
            ("START", false, false),
            ("BEGINNING", false, false),
            ("", false, false),
        ];
        for &(sql, postgres, mysql) in table {
            assert_eq!(plain_begin(sql.as_bytes(), Postgres), postgres, "{sql:?}");
            assert_eq!(plain_begin(sql.as_bytes(), MySql), mysql, "{sql:?}");
        }
    }
}
