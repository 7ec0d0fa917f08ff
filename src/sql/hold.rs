//! What a statement does to the session state that pins a pooled client to its server
//! connection (issue 13): which state it takes (a temporary table, a SQL-level prepared
//! statement, a named lock, table locks, a HANDLER) and which it gives back, by name,
//! so that the session can tell when that state is gone and its connection may go back
//! to the pool. Only forms whose effect is certain are recognized: anything else that
//! pins is `Untracked`, which keeps the pin for as long as the session's state lasts.
//!
//! MySQL is read in full (its server cannot list a session's temporary tables or named
//! locks). For PostgreSQL only the statements that may give state back matter: its
//! catalogs then say exactly what the connection still holds (see the PostgreSQL session).

use super::Dialect;
use super::lexer::{Lexer, Token};

/// A kind of state that keeps a session on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldKind {
    /// `CREATE TEMPORARY TABLE name`.
    TempTable,
    /// SQL `PREPARE name FROM ...`.
    Prepared,
    /// A named lock: MySQL `GET_LOCK('name', ...)`; PostgreSQL advisory locks.
    NamedLock,
    /// `LOCK TABLES`, `FLUSH TABLES ... WITH READ LOCK` (no name).
    TableLocks,
    /// MySQL `HANDLER t OPEN [AS alias]`.
    Handler,
    /// PostgreSQL `LISTEN channel`.
    Listen,
    /// PostgreSQL `DECLARE name CURSOR WITH HOLD`.
    Cursor,
}

/// One change a statement makes to the pinning state of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldChange {
    /// Takes state of `kind` named `name` (as written, unquoted; empty when it has none).
    Take(HeldKind, Vec<u8>),
    /// Gives back the state of `kind` named `name`.
    Release(HeldKind, Vec<u8>),
    /// Gives back every state of `kind` (`RELEASE_ALL_LOCKS()`, `UNLOCK TABLES`).
    ReleaseAll(HeldKind),
    /// Takes state whose end the proxy cannot see (a lock named by an expression, a
    /// setting that cannot be replayed …).
    Untracked,
}

impl HoldChange {
    /// Whether the change may give state back.
    pub fn releases(&self) -> bool {
        matches!(self, HoldChange::Release(..) | HoldChange::ReleaseAll(_))
    }
}

/// The changes `sql` makes, statement by statement, in order. `pins` says whether the
/// classifier found that the text pins (`Class::Pin`): a pinning text with a statement
/// the proxy does not follow, or with more than one statement (what else it did to the
/// session cannot be told apart), also takes `Untracked` state.
pub fn changes(sql: &[u8], dialect: Dialect, pins: bool) -> Vec<HoldChange> {
    let mut lexer = Lexer::new(sql, dialect);
    let mut out = Vec::new();
    let mut statements = 0;
    let mut followed = true;
    let mut tokens = Vec::new();
    loop {
        tokens.clear();
        let mut ended = true;
        while let Some(tok) = lexer.next_token() {
            if tok.is_punct(b';') {
                ended = false;
                break;
            }
            tokens.push(tok);
        }
        if !tokens.is_empty() {
            statements += 1;
            followed &= statement(&tokens, dialect, &mut out);
        }
        if ended {
            break;
        }
    }
    if pins && (statements > 1 || !followed) && !out.contains(&HoldChange::Untracked) {
        out.push(HoldChange::Untracked);
    }
    out
}

/// The changes of one statement (its tokens, without the `;`), pushed to `out`; whether
/// they are all it does to the pinning state (a statement the proxy does not follow may
/// pin for reasons of its own).
fn statement(tokens: &[Token<'_>], dialect: Dialect, out: &mut Vec<HoldChange>) -> bool {
    let word = |i: usize, w: &str| is_word(tokens.get(i), w);
    let mysql = dialect == Dialect::MySql;
    let before = out.len();
    let followed = if word(0, "create") {
        let mut i = 1;
        while word(i, "or") || word(i, "replace") || word(i, "global") || word(i, "local") {
            i += 1;
        }
        let temporary = word(i, "temporary") || word(i, "temp");
        if temporary && mysql && word(i + 1, "table") {
            let mut at = i + 2;
            if word(at, "if") && word(at + 1, "not") && word(at + 2, "exists") {
                at += 3;
            }
            out.extend(named(tokens, at, HoldChange::Take, HeldKind::TempTable));
        } else if temporary {
            // PostgreSQL: temporary tables, views, sequences (its catalog tells which).
            out.push(HoldChange::Take(HeldKind::TempTable, Vec::new()));
        }
        true
    } else if word(0, "drop") {
        if mysql && word(1, "prepare") {
            out.extend(named(tokens, 2, HoldChange::Release, HeldKind::Prepared));
        } else if !mysql {
            out.push(HoldChange::Release(HeldKind::TempTable, Vec::new()));
        } else {
            let mut i = 1;
            if word(i, "temporary") {
                i += 1;
            }
            if word(i, "table") || word(i, "tables") {
                i += 1;
                if word(i, "if") && word(i + 1, "exists") {
                    i += 2;
                }
                for name in names(tokens.get(i..).unwrap_or_default()) {
                    out.push(HoldChange::Release(HeldKind::TempTable, name));
                }
            }
        }
        true
    } else if word(0, "prepare") && (mysql || !word(1, "transaction")) {
        out.extend(named(tokens, 1, HoldChange::Take, HeldKind::Prepared));
        true
    } else if word(0, "deallocate") {
        let at = if word(1, "prepare") { 2 } else { 1 };
        if word(at, "all") && !mysql {
            out.push(HoldChange::ReleaseAll(HeldKind::Prepared));
        } else {
            out.extend(named(tokens, at, HoldChange::Release, HeldKind::Prepared));
        }
        true
    } else if mysql && word(0, "lock") && (word(1, "table") || word(1, "tables")) {
        out.push(HoldChange::Take(HeldKind::TableLocks, Vec::new()));
        true
    } else if mysql && word(0, "unlock") && (word(1, "table") || word(1, "tables")) {
        out.push(HoldChange::ReleaseAll(HeldKind::TableLocks));
        true
    } else if mysql && word(0, "flush") {
        if tokens
            .iter()
            .any(|t| is_word(Some(t), "lock") || is_word(Some(t), "export"))
        {
            out.push(HoldChange::Take(HeldKind::TableLocks, Vec::new()));
        }
        true
    } else if mysql && (word(0, "begin") || (word(0, "start") && word(1, "transaction"))) {
        // Starting a transaction gives back the locks of LOCK TABLES.
        out.push(HoldChange::ReleaseAll(HeldKind::TableLocks));
        true
    } else if mysql && word(0, "handler") {
        handler(tokens, out)
    } else if !mysql && word(0, "listen") {
        out.push(HoldChange::Take(HeldKind::Listen, Vec::new()));
        true
    } else if !mysql && word(0, "unlisten") {
        out.push(HoldChange::ReleaseAll(HeldKind::Listen));
        true
    } else if !mysql && word(0, "discard") {
        // DISCARD TEMP drops the temporary tables. DISCARD ALL also takes the session's
        // settings back to the login's, which the proxy's recorded settings would undo
        // on another connection: the session stays where it is.
        if word(1, "temp") || word(1, "temporary") {
            out.push(HoldChange::ReleaseAll(HeldKind::TempTable));
        } else if word(1, "all") {
            out.push(HoldChange::Untracked);
        }
        true
    } else if !mysql && word(0, "declare") {
        out.push(HoldChange::Take(HeldKind::Cursor, Vec::new()));
        true
    } else if !mysql && word(0, "close") {
        out.push(HoldChange::ReleaseAll(HeldKind::Cursor));
        true
    } else {
        false
    };
    // Any other statement is followed when it pins only through the lock calls it makes.
    let calls = calls(tokens, dialect, out);
    followed || (calls && !out[before..].contains(&HoldChange::Untracked))
}

/// `change(kind, name)` for the name at `at`; nothing without one (the server refuses
/// the statement).
fn named(
    tokens: &[Token<'_>],
    at: usize,
    change: fn(HeldKind, Vec<u8>) -> HoldChange,
    kind: HeldKind,
) -> Option<HoldChange> {
    qualified(tokens.get(at..)?).map(|(name, _)| change(kind, name))
}

/// `HANDLER t OPEN [[AS] alias]`, `HANDLER name CLOSE`.
fn handler(tokens: &[Token<'_>], out: &mut Vec<HoldChange>) -> bool {
    let Some(name) = tokens.get(1).and_then(|t| ident(*t)) else {
        return false;
    };
    match tokens.get(2) {
        Some(t) if is_word(Some(t), "open") => {
            let alias = match tokens.get(3) {
                Some(t) if is_word(Some(t), "as") => tokens.get(4).and_then(|t| ident(*t)),
                Some(t) => ident(*t),
                None => Some(name),
            };
            match alias {
                Some(alias) => out.push(HoldChange::Take(HeldKind::Handler, alias.to_vec())),
                None => return false,
            }
        }
        Some(t) if is_word(Some(t), "close") => {
            out.push(HoldChange::Release(HeldKind::Handler, name.to_vec()));
        }
        // HANDLER ... READ: uses what OPEN took.
        _ => {}
    }
    true
}

/// The lock functions called in `tokens`: a lock named by a string literal is tracked by
/// that name; one named otherwise cannot be. Whether there was any.
fn calls(tokens: &[Token<'_>], dialect: Dialect, out: &mut Vec<HoldChange>) -> bool {
    let before = out.len();
    for (i, tok) in tokens.iter().enumerate() {
        let Token::Word(name, _) = *tok else { continue };
        if !tokens.get(i + 1).is_some_and(|t| t.is_punct(b'(')) {
            continue;
        }
        let first = tokens.get(i + 2).copied();
        let literal = match (first, tokens.get(i + 3)) {
            (Some(Token::String(s)), Some(next)) if next.is_punct(b',') || next.is_punct(b')') => {
                Some(s.to_vec())
            }
            _ => None,
        };
        let lower = name.to_ascii_lowercase();
        match (dialect, lower.as_slice()) {
            (Dialect::MySql, b"get_lock") => out.push(match literal {
                Some(n) => HoldChange::Take(HeldKind::NamedLock, n),
                None => HoldChange::Untracked,
            }),
            (Dialect::MySql, b"release_lock") => {
                if let Some(n) = literal {
                    out.push(HoldChange::Release(HeldKind::NamedLock, n));
                }
            }
            (Dialect::MySql, b"release_all_locks") => {
                out.push(HoldChange::ReleaseAll(HeldKind::NamedLock));
            }
            (Dialect::Postgres, n) if n.starts_with(b"pg_advisory_unlock") => {
                out.push(HoldChange::ReleaseAll(HeldKind::NamedLock));
            }
            (Dialect::Postgres, n)
                if n.starts_with(b"pg_advisory_lock") || n.starts_with(b"pg_try_advisory_lock") =>
            {
                out.push(HoldChange::Take(HeldKind::NamedLock, Vec::new()));
            }
            _ => {}
        }
    }
    out.len() > before
}

/// The comma-separated names at the start of `tokens` (`a, db.b, c`), until anything else.
fn names(tokens: &[Token<'_>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = tokens;
    while let Some((name, used)) = qualified(rest) {
        out.push(name);
        rest = &rest[used..];
        match rest.first() {
            Some(t) if t.is_punct(b',') => rest = &rest[1..],
            _ => break,
        }
    }
    out
}

/// A name, possibly qualified (`db.t`), at the start of `tokens`: its text with the
/// quotes taken off, and how many tokens it used.
fn qualified(tokens: &[Token<'_>]) -> Option<(Vec<u8>, usize)> {
    let mut name = ident(*tokens.first()?)?.to_vec();
    let mut used = 1;
    while tokens.get(used).is_some_and(|t| t.is_punct(b'.')) {
        let part = ident(*tokens.get(used + 1)?)?;
        name.push(b'.');
        name.extend_from_slice(part);
        used += 2;
    }
    Some((name, used))
}

/// An identifier's text: a word or a quoted identifier's body.
fn ident(tok: Token<'_>) -> Option<&[u8]> {
    match tok {
        Token::Word(w, _) | Token::QuotedIdent(w) => Some(w),
        _ => None,
    }
}

fn is_word(tok: Option<&Token<'_>>, word: &str) -> bool {
    matches!(tok, Some(Token::Word(w, _)) if w.eq_ignore_ascii_case(word.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::HeldKind::*;
    use super::HoldChange::*;
    use super::*;

    fn my(sql: &str, pins: bool) -> Vec<HoldChange> {
        changes(sql.as_bytes(), Dialect::MySql, pins)
    }

    fn n(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn mysql_state_is_taken_and_given_back_by_name() {
        let cases: &[(&str, bool, Vec<HoldChange>)] = &[
            (
                "CREATE TEMPORARY TABLE t (x int)",
                true,
                vec![Take(TempTable, n("t"))],
            ),
            (
                "create temporary table if not exists `db`.`T` select 1",
                true,
                vec![Take(TempTable, n("db.T"))],
            ),
            (
                "DROP TEMPORARY TABLE IF EXISTS a, db.b",
                false,
                vec![Release(TempTable, n("a")), Release(TempTable, n("db.b"))],
            ),
            ("DROP TABLE t", false, vec![Release(TempTable, n("t"))]),
            (
                "PREPARE s FROM 'SELECT 1'",
                true,
                vec![Take(Prepared, n("s"))],
            ),
            (
                "DEALLOCATE PREPARE s",
                true,
                vec![Release(Prepared, n("s"))],
            ),
            ("DROP PREPARE s;", true, vec![Release(Prepared, n("s"))]),
            ("LOCK TABLES t READ", true, vec![Take(TableLocks, vec![])]),
            ("UNLOCK TABLES", true, vec![ReleaseAll(TableLocks)]),
            (
                "FLUSH TABLES WITH READ LOCK",
                true,
                vec![Take(TableLocks, vec![])],
            ),
            ("START TRANSACTION", false, vec![ReleaseAll(TableLocks)]),
            (
                "SELECT GET_LOCK('job', 10)",
                true,
                vec![Take(NamedLock, n("job"))],
            ),
            ("SELECT get_lock(CONCAT('a', 1), 10)", true, vec![Untracked]),
            (
                "SELECT RELEASE_LOCK('job')",
                false,
                vec![Release(NamedLock, n("job"))],
            ),
            (
                "SELECT RELEASE_ALL_LOCKS()",
                false,
                vec![ReleaseAll(NamedLock)],
            ),
            ("HANDLER t OPEN AS h", true, vec![Take(Handler, n("h"))]),
            ("HANDLER t OPEN", true, vec![Take(Handler, n("t"))]),
            ("HANDLER h READ FIRST", true, vec![]),
            ("DEALLOCATE PREPARE", true, vec![]),
            ("HANDLER h CLOSE", true, vec![Release(Handler, n("h"))]),
            ("SELECT 1", false, vec![]),
            ("SELECT 1 INTO @x FROM t", true, vec![Untracked]),
            ("SET @a = (SELECT 1)", true, vec![Untracked]),
            // More than one statement: what else the text did cannot be told apart.
            (
                "SET @a = 1; CREATE TEMPORARY TABLE t (x int)",
                true,
                vec![Take(TempTable, n("t")), Untracked],
            ),
            // Keywords in strings and comments are not seen.
            ("SELECT 'LOCK TABLES' /* GET_LOCK('x', 1) */", false, vec![]),
        ];
        for (sql, pins, want) in cases {
            assert_eq!(&my(sql, *pins), want, "{sql}");
        }
    }

    #[test]
    fn postgres_statements_that_may_give_state_back() {
        let pg = |sql: &str| changes(sql.as_bytes(), Dialect::Postgres, false);
        for sql in [
            "UNLISTEN *",
            "unlisten ch",
            "DEALLOCATE ALL",
            "DEALLOCATE s",
            "DISCARD TEMP",
            "discard temporary",
            "CLOSE ALL",
            "DROP TABLE t",
            "SELECT pg_advisory_unlock(1)",
            "SELECT pg_advisory_unlock_all()",
        ] {
            assert!(pg(sql).iter().any(HoldChange::releases), "{sql}");
        }
        for sql in [
            "LISTEN ch",
            "SELECT pg_advisory_lock(1)",
            "CREATE TEMP TABLE t ()",
            "DISCARD ALL",
        ] {
            assert!(!pg(sql).iter().any(HoldChange::releases), "{sql}");
        }
    }
}
