//! The client's own connection id in SQL, when the proxy gave the client an id of its own
//! (transaction pooling): the calls `CONNECTION_ID()` (MySQL) and `pg_backend_pid()`
//! (PostgreSQL) are replaced by that id as a literal, so that the id a client reads with SQL
//! is the one `KILL` and CancelRequest know it by, whichever server connection runs the
//! statement.
//!
//! The call keeps the column name the client would see: an unaliased select item is named
//! after its text in MySQL (`CONNECTION_ID()`) and after the function in PostgreSQL
//! (`pg_backend_pid`), so such an item becomes `<id> AS <that name>`. A statement that also
//! reads something else about the server (`information_schema.processlist`,
//! `pg_stat_activity`, `pg_blocking_pids(...)`) is left as it is: those know server ids only,
//! and `WHERE pid = pg_backend_pid()` there means the connection the statement runs on.
//! Only unqualified calls without arguments are replaced.

use std::fmt::Write as _;

use super::Dialect;
use super::function::{describes_node, is_identity};
use super::keyword::Kw;
use super::lexer::{Lexer, Token};

/// One call to replace: bytes `start..end` of the text, and whether it is a whole
/// unaliased select item (which then keeps its column name).
#[derive(Debug, Clone, Copy)]
struct Call {
    start: usize,
    end: usize,
    named: bool,
}

/// `sql` with each call of the identity function replaced by `id` (see the module's note);
/// `None` when nothing was replaced.
pub fn rewrite_identity(sql: &[u8], dialect: Dialect, id: u32) -> Option<Vec<u8>> {
    let calls = calls(sql, dialect);
    if calls.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 32 * calls.len());
    let mut copied = 0;
    for call in calls {
        out.extend_from_slice(&sql[copied..call.start]);
        out.extend_from_slice(
            replacement(&sql[call.start..call.end], dialect, id, call.named).as_bytes(),
        );
        copied = call.end;
    }
    out.extend_from_slice(&sql[copied..]);
    Some(out)
}

/// What replaces the call `text`.
fn replacement(text: &[u8], dialect: Dialect, id: u32, named: bool) -> String {
    let mut out = id.to_string();
    if named {
        match dialect {
            Dialect::Postgres => out.push_str(" AS pg_backend_pid"),
            Dialect::MySql => {
                // MySQL names the item after its text as written; a backtick in it (in a
                // comment) is doubled inside the quoted alias.
                let name = String::from_utf8_lossy(text).replace('`', "``");
                let _ = write!(out, " AS `{name}`");
            }
        }
    }
    out
}

/// The calls to replace, in order, of the statements that read nothing else about the server.
fn calls(sql: &[u8], dialect: Dialect) -> Vec<Call> {
    let mut lexer = Lexer::new(sql, dialect);
    let mut found = Vec::new();
    let mut statement = Statement::default();
    let mut prev: Option<Token<'_>> = None;
    while let Some(tok) = lexer.next_token() {
        if let Token::Word(word, _) = tok
            && is_identity(word, dialect)
        {
            let start = lexer.offset() - word.len();
            let mut ahead = lexer.clone();
            let qualified = prev.is_some_and(|p| p.is_punct(b'.'));
            let empty_call = ahead.next_token() == Some(Token::Punct(b'('))
                && ahead.next_token() == Some(Token::Punct(b')'));
            if !qualified && empty_call {
                let end = ahead.offset();
                let item_starts = statement.in_select_list() && prev.is_some_and(starts_item);
                let item_ends = ends_item(ahead.clone().next_token());
                statement.calls.push(Call {
                    start,
                    end,
                    named: item_starts && item_ends,
                });
                lexer = ahead;
                prev = Some(Token::Punct(b')'));
                continue;
            }
        }
        match tok {
            Token::Word(word, _) | Token::QuotedIdent(word) => {
                statement.other_node |=
                    describes_node(word, dialect) && !is_identity(word, dialect);
            }
            _ => {}
        }
        match tok {
            Token::Punct(b'(') => statement.depth += 1,
            Token::Punct(b')') => {
                statement.depth = statement.depth.saturating_sub(1);
                let depth = statement.depth;
                while statement.lists.last().is_some_and(|&d| d > depth) {
                    statement.lists.pop();
                }
            }
            Token::Punct(b';') => statement.end(&mut found),
            Token::Word(_, Kw::Select) => statement.lists.push(statement.depth),
            Token::Word(word, _) if ends_list(word) && statement.in_select_list() => {
                statement.lists.pop();
            }
            _ => {}
        }
        prev = Some(tok);
    }
    statement.end(&mut found);
    found
}

/// What the scan knows of the statement it is in.
#[derive(Default)]
struct Statement {
    calls: Vec<Call>,
    /// It names something else about the server.
    other_node: bool,
    /// Open parentheses.
    depth: u32,
    /// The depths of the select lists open here (a subquery's inside another's).
    lists: Vec<u32>,
}

impl Statement {
    /// At the top level of the innermost open select list.
    fn in_select_list(&self) -> bool {
        self.lists.last() == Some(&self.depth)
    }

    /// The statement ended: its calls are replaced unless it reads other server state.
    fn end(&mut self, found: &mut Vec<Call>) {
        if !self.other_node {
            found.append(&mut self.calls);
        }
        *self = Statement::default();
    }
}

/// A token after which a select item starts.
fn starts_item(tok: Token<'_>) -> bool {
    match tok {
        Token::Punct(b',') => true,
        Token::Word(word, kw) => {
            kw == Kw::Select
                || word.eq_ignore_ascii_case(b"distinct")
                || word.eq_ignore_ascii_case(b"all")
        }
        _ => false,
    }
}

/// Whether the token after a call ends the select item (so the call is the whole item,
/// without an alias).
fn ends_item(next: Option<Token<'_>>) -> bool {
    match next {
        None | Some(Token::Punct(b',' | b';' | b')')) => true,
        Some(Token::Word(word, _)) => ends_list(word),
        _ => false,
    }
}

/// A word that ends a select list at its level.
fn ends_list(word: &[u8]) -> bool {
    const CLAUSES: &[&[u8]] = &[
        b"from",
        b"into",
        b"where",
        b"group",
        b"having",
        b"window",
        b"order",
        b"limit",
        b"offset",
        b"fetch",
        b"for",
        b"lock",
        b"union",
        b"except",
        b"intersect",
        b"minus",
    ];
    (3..=9).contains(&word.len()) && CLAUSES.iter().any(|c| word.eq_ignore_ascii_case(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my(sql: &str) -> Option<String> {
        rewrite_identity(sql.as_bytes(), Dialect::MySql, 1073741824)
            .map(|s| String::from_utf8(s).unwrap())
    }

    fn pg(sql: &str) -> Option<String> {
        rewrite_identity(sql.as_bytes(), Dialect::Postgres, 7)
            .map(|s| String::from_utf8(s).unwrap())
    }

    #[test]
    fn a_whole_select_item_keeps_its_column_name() {
        let cases = [
            (
                "SELECT CONNECTION_ID()",
                "SELECT 1073741824 AS `CONNECTION_ID()`",
            ),
            (
                "select connection_id( );",
                "select 1073741824 AS `connection_id( )`;",
            ),
            (
                "SELECT 1, CONNECTION_ID() FROM dual",
                "SELECT 1, 1073741824 AS `CONNECTION_ID()` FROM dual",
            ),
            (
                "SELECT (SELECT CONNECTION_ID())",
                "SELECT (SELECT 1073741824 AS `CONNECTION_ID()`)",
            ),
            (
                "SELECT CONNECTION_ID(/*`*/)",
                "SELECT 1073741824 AS `CONNECTION_ID(/*``*/)`",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(my(sql).as_deref(), Some(want), "{sql}");
        }
        assert_eq!(
            pg("SELECT PG_BACKEND_PID()").as_deref(),
            Some("SELECT 7 AS pg_backend_pid")
        );
        assert_eq!(
            pg("select distinct pg_backend_pid() from t").as_deref(),
            Some("select distinct 7 AS pg_backend_pid from t")
        );
    }

    #[test]
    fn elsewhere_the_call_becomes_the_literal() {
        let cases = [
            ("SELECT CONNECTION_ID() AS id", "SELECT 1073741824 AS id"),
            ("SELECT CONNECTION_ID() id", "SELECT 1073741824 id"),
            ("SELECT CONNECTION_ID() + 0", "SELECT 1073741824 + 0"),
            (
                "INSERT INTO t (connection_id) VALUES (CONNECTION_ID())",
                "INSERT INTO t (connection_id) VALUES (1073741824)",
            ),
            ("SET @me = CONNECTION_ID()", "SET @me = 1073741824"),
            (
                "SELECT 1 FROM t ORDER BY a, CONNECTION_ID()",
                "SELECT 1 FROM t ORDER BY a, 1073741824",
            ),
            (
                "SELECT CONNECTION_ID(); SHOW PROCESSLIST",
                "SELECT 1073741824 AS `CONNECTION_ID()`; SHOW PROCESSLIST",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(my(sql).as_deref(), Some(want), "{sql}");
        }
        assert_eq!(
            pg("SELECT pg_cancel_backend(pg_backend_pid())").as_deref(),
            Some("SELECT pg_cancel_backend(7)")
        );
        assert_eq!(
            pg("SELECT pg_backend_pid() AS pid, 1").as_deref(),
            Some("SELECT 7 AS pid, 1")
        );
    }

    #[test]
    fn the_classifier_flags_the_statements_that_call_it() {
        let flagged = |sql: &str, d| crate::sql::classify(sql, d).functions.identity;
        assert!(flagged("SELECT CONNECTION_ID()", Dialect::MySql));
        assert!(flagged(
            "SELECT 1; INSERT INTO t VALUES (connection_id ())",
            Dialect::MySql
        ));
        assert!(flagged(
            "SELECT x FROM t WHERE p = pg_backend_pid()",
            Dialect::Postgres
        ));
        assert!(!flagged("SELECT connection_id FROM t", Dialect::MySql));
        assert!(!flagged("SELECT 'connection_id()'", Dialect::MySql));
        assert!(!flagged("SELECT connection_id()", Dialect::Postgres));
    }

    #[test]
    fn left_alone() {
        for sql in [
            "SELECT 1",
            "SELECT 'CONNECTION_ID()'",
            "SELECT `CONNECTION_ID`()",
            "SELECT 1 /* CONNECTION_ID() */",
            "SELECT db.CONNECTION_ID()",
            "SELECT CONNECTION_ID(1)",
            "SELECT connection_id FROM t",
            "SELECT * FROM information_schema.processlist WHERE id = CONNECTION_ID()",
            "SELECT * FROM performance_schema.threads WHERE processlist_id = CONNECTION_ID()",
        ] {
            assert_eq!(my(sql), None, "{sql}");
        }
        for sql in [
            "SELECT * FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            "SELECT pg_blocking_pids(pg_backend_pid())",
            "SELECT pg_catalog.pg_backend_pid()",
            "SELECT $$pg_backend_pid()$$",
            "SELECT connection_id()",
        ] {
            assert_eq!(pg(sql), None, "{sql}");
        }
    }
}
