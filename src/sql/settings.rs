//! The settings a session-state statement changes, by name, for the session flow: which
//! earlier replays a later one makes pointless (the same names set again from literals),
//! and which settings to read back from the server when a statement cannot be replayed as
//! written (a prepared `SET … = ?`).

use super::Dialect;
use super::lexer::{Lexer, Token};

/// One setting a MySQL statement changes: a session system variable (its name lowercased,
/// aliases under the current name) or a user variable (`@` and its name lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSetting {
    pub name: String,
    /// Set from a literal (a number, a string, a word such as `ON` or `DEFAULT`): the value
    /// depends on nothing that ran before.
    pub literal: bool,
}

impl MysqlSetting {
    /// A user variable (`@x`), rather than a system variable.
    pub fn user(&self) -> bool {
        self.name.starts_with('@')
    }
}

/// The settings `sql` changes when every statement in it is a plain session `SET` (of
/// session system variables, user variables, `NAMES`, `SESSION TRANSACTION …`) or `USE`;
/// `None` for anything else (a `GLOBAL` one, `SET PASSWORD` …).
pub fn mysql_settings(sql: &[u8]) -> Option<Vec<MysqlSetting>> {
    let mut out = Vec::new();
    for tokens in Lexer::new(sql, Dialect::MySql).statements() {
        statement(&tokens, &mut out)?;
    }
    (!out.is_empty()).then_some(out)
}

/// The settings PostgreSQL `sql` changes, when replaying a later statement of the same
/// names in its place leaves the same state: plain `SET`/`RESET` (`sql::postgres_settings`)
/// in ASCII (text in another encoding means what `client_encoding` said when it ran), not
/// of the role or the session user (what a later `SET` may do depends on them), nor
/// `DateStyle` (a partial value keeps the rest of the one before).
pub fn postgres_literal_settings(sql: &str) -> Option<Vec<String>> {
    const ORDERED: [&str; 3] = ["role", "session_authorization", "datestyle"];
    if !sql.is_ascii() {
        return None;
    }
    let names = super::set::postgres_settings(sql.as_bytes())?;
    (!names.iter().any(|n| ORDERED.contains(&n.as_str()))).then_some(names)
}

/// MySQL system variables whose value is merged with the one before (`optimizer_switch`
/// changes only the flags named): set from a literal, they still depend on what ran before.
const MERGED: [&str; 2] = ["optimizer_switch", "optimizer_trace"];

/// The character set variables `SET NAMES` changes, and those that change each other.
const NAMES: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

fn word(tok: Option<&Token<'_>>, w: &str) -> bool {
    matches!(tok, Some(Token::Word(t, _)) if t.eq_ignore_ascii_case(w.as_bytes()))
}

fn name_of(tok: Option<&Token<'_>>) -> Option<String> {
    match tok? {
        Token::Word(t, _) | Token::QuotedIdent(t) => {
            Some(std::str::from_utf8(t).ok()?.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// One MySQL statement's settings, added to `out`; `None` when it is not a plain one.
fn statement(tokens: &[Token<'_>], out: &mut Vec<MysqlSetting>) -> Option<()> {
    if word(tokens.first(), "use") && tokens.len() == 2 {
        name_of(tokens.get(1))?;
        out.push(MysqlSetting {
            name: "USE".into(),
            literal: true,
        });
        return Some(());
    }
    if !word(tokens.first(), "set") {
        return None;
    }
    let mut rest = &tokens[1..];
    if word(rest.first(), "session") || word(rest.first(), "local") {
        rest = &rest[1..];
        if word(rest.first(), "transaction") {
            return transaction(&rest[1..], out);
        }
    }
    for item in split(rest) {
        assignment(item, out)?;
    }
    Some(())
}

/// `SET SESSION TRANSACTION` characteristics, after `TRANSACTION`.
fn transaction(tokens: &[Token<'_>], out: &mut Vec<MysqlSetting>) -> Option<()> {
    for item in split(tokens) {
        let name = if word(item.first(), "isolation") {
            "transaction_isolation"
        } else if word(item.first(), "read") && item.len() == 2 {
            "transaction_read_only"
        } else {
            return None;
        };
        out.push(MysqlSetting {
            name: name.into(),
            literal: true,
        });
    }
    Some(())
}

/// The items of a list, split at its top-level commas.
fn split<'t, 'a>(tokens: &'t [Token<'a>]) -> impl Iterator<Item = &'t [Token<'a>]> {
    let mut depth = 0u32;
    tokens.split(move |t| {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth = depth.saturating_sub(1);
        }
        depth == 0 && t.is_punct(b',')
    })
}

/// One item of a SET list: `NAMES …`, `CHARACTER SET …`, `@user = …`, `@@[scope.]name = …`,
/// `[SESSION | LOCAL] name = …`.
fn assignment(item: &[Token<'_>], out: &mut Vec<MysqlSetting>) -> Option<()> {
    let names = |literal: bool, out: &mut Vec<MysqlSetting>| {
        out.extend(NAMES.iter().map(|n| MysqlSetting {
            name: (*n).into(),
            literal,
        }));
    };
    if word(item.first(), "names") {
        names(literal(&item[1..]), out);
        return Some(());
    }
    if word(item.first(), "charset")
        || (word(item.first(), "character") && word(item.get(1), "set"))
    {
        // The connection's collation then follows the current database's.
        names(false, out);
        return Some(());
    }
    let (name, value) = target(item)?;
    let literal = literal(value) && !MERGED.contains(&name.as_str());
    let name = match name.as_str() {
        "tx_isolation" => "transaction_isolation".to_owned(),
        "tx_read_only" => "transaction_read_only".to_owned(),
        _ => name,
    };
    if name == "character_set_connection" || name == "collation_connection" {
        // Each changes the other.
        for n in ["character_set_connection", "collation_connection"] {
            out.push(MysqlSetting {
                name: n.into(),
                literal,
            });
        }
    } else {
        out.push(MysqlSetting { name, literal });
    }
    Some(())
}

/// The variable an assignment sets and the tokens of its value; `None` for a global one or
/// anything unexpected.
fn target<'t, 'a>(item: &'t [Token<'a>]) -> Option<(String, &'t [Token<'a>])> {
    let ats = item.iter().take_while(|t| t.is_punct(b'@')).count();
    let mut at = ats;
    let scope = |tok: Option<&Token<'_>>| -> Option<bool> {
        ["global", "persist", "persist_only"]
            .iter()
            .any(|w| word(tok, w))
            .then_some(false)
            .or_else(|| (word(tok, "session") || word(tok, "local")).then_some(true))
    };
    let name = match ats {
        1 => format!("@{}", user_name(item.get(at))?),
        0 | 2 => {
            let scoped = scope(item.get(at));
            let dotted = ats == 2 && item.get(at + 1).is_some_and(|t| t.is_punct(b'.'));
            match scoped {
                Some(false) if ats == 0 || dotted => return None,
                Some(true) if ats == 0 => at += 1,
                Some(true) if dotted => at += 2,
                _ => {}
            }
            let name = name_of(item.get(at))?;
            // Not variables: `SET PASSWORD = …`, `SET ROLE …`, `SET STATEMENT … FOR`.
            const NOT_VARIABLES: [&str; 5] =
                ["password", "role", "default", "resource", "statement"];
            if ats == 0 && NOT_VARIABLES.contains(&name.as_str()) {
                return None;
            }
            name
        }
        _ => return None,
    };
    at += 1;
    let assigns = item
        .get(at)
        .is_some_and(|t| t.is_punct(b'=') || *t == Token::Assign);
    assigns.then(|| (name, &item[at + 1..]))
}

/// A user variable's name: a word, a quoted identifier or a string (`@'a b'`), lowercased.
fn user_name(tok: Option<&Token<'_>>) -> Option<String> {
    match tok? {
        Token::String(t) => Some(std::str::from_utf8(t).ok()?.to_ascii_lowercase()),
        other => name_of(Some(other)),
    }
}

/// Whether a value is a literal: numbers, strings, words, signs and `COLLATE`; no
/// variable, parameter, call or subquery.
fn literal(value: &[Token<'_>]) -> bool {
    !value.is_empty()
        && value.iter().all(|t| match t {
            Token::Word(..) | Token::String(_) | Token::Number(_) | Token::QuotedIdent(_) => true,
            Token::Punct(b) => matches!(b, b'-' | b'+'),
            Token::Param(_) | Token::Assign => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Option<Vec<(String, bool)>> {
        mysql_settings(sql.as_bytes()).map(|v| v.into_iter().map(|s| (s.name, s.literal)).collect())
    }

    fn lit(v: &[(&str, bool)]) -> Option<Vec<(String, bool)>> {
        Some(v.iter().map(|(n, l)| (n.to_string(), *l)).collect())
    }

    #[test]
    fn mysql_sets_name_what_they_change() {
        assert_eq!(
            names("SET time_zone = '+00:00', @Tenant := 7"),
            lit(&[("time_zone", true), ("@tenant", true)])
        );
        assert_eq!(
            names("SET SESSION sql_mode = 'ANSI'; SET @@session.TX_ISOLATION = 'READ-COMMITTED'"),
            lit(&[("sql_mode", true), ("transaction_isolation", true)])
        );
        assert_eq!(
            names("set @@wait_timeout = 100"),
            lit(&[("wait_timeout", true)])
        );
        assert_eq!(
            names("SET @a = ?, @b = @a + 1, c = NOW()"),
            lit(&[("@a", false), ("@b", false), ("c", false)])
        );
        assert_eq!(
            names("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY"),
            lit(&[
                ("transaction_isolation", true),
                ("transaction_read_only", true)
            ])
        );
        assert_eq!(
            names("SET NAMES utf8mb4 COLLATE utf8mb4_bin").map(|v| v.len()),
            Some(4)
        );
        assert!(
            names("SET CHARACTER SET utf8")
                .unwrap()
                .iter()
                .all(|(_, l)| !l)
        );
        assert_eq!(
            names("SET optimizer_switch = 'index_merge=off'"),
            lit(&[("optimizer_switch", false)])
        );
        assert_eq!(names("USE app"), lit(&[("USE", true)]));
        for sql in [
            "SET GLOBAL x = 1",
            "SET @@global.x = 1",
            "SET x = 1, GLOBAL y = 2",
            "SET PASSWORD = 'x'",
            "SET TRANSACTION READ ONLY",
            "SELECT 1",
            "SET @a = 1; SELECT 1",
        ] {
            assert_eq!(names(sql), None, "{sql}");
        }
    }

    #[test]
    fn postgres_sets_replaced_only_when_order_cannot_matter() {
        let names = |sql: &str| postgres_literal_settings(sql);
        assert_eq!(
            names("SET search_path TO app"),
            Some(vec!["search_path".into()])
        );
        assert_eq!(names("RESET work_mem"), Some(vec!["work_mem".into()]));
        assert_eq!(names("SET application_name = 'café'"), None);
        assert_eq!(names("SET DateStyle = 'ISO'"), None);
        assert_eq!(names("SET session_authorization = 'x'"), None);
        assert_eq!(names("SET ROLE x"), None);
    }
}
