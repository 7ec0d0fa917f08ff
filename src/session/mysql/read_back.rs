//! A MySQL setting the proxy cannot replay as written (a prepared `SET … = ?`, whose
//! values only the server saw; a text of several `SET`s and `USE`s that failed part way):
//! between transactions its value is read back from the writer connection (`SELECT
//! @@SESSION.name`, `SELECT @name` with its character set and collation, `SELECT
//! DATABASE()` for a `USE`) and recorded as a `SET` of literals (and a `USE`), and the
//! `unreplayable_setting` pin lets go.

use bytes::BytesMut;

use super::replay::Replay;
use super::{Session, SessionError};
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::COM_QUERY;
use crate::session::flow::Pin;
use crate::sql::MysqlSetting;

/// `MYSQL_TYPE_*` codes of numbers, whose text is a number literal.
const NUMBERS: [u8; 10] = [0, 1, 2, 3, 4, 5, 8, 9, 13, 246];
/// `MYSQL_TYPE_FLOAT`, `MYSQL_TYPE_DOUBLE`: a literal of theirs needs an exponent.
const FLOATS: [u8; 2] = [4, 5];

impl Session {
    /// A prepared SET with parameters is about to run: the settings it changes (`None`: it
    /// names none the proxy can read back) are read back once no transaction is open.
    pub(super) fn note_unreplayed(&mut self, names: Option<Vec<MysqlSetting>>) {
        let readable = names.filter(|n| n.iter().all(|s| plain(&s.name)));
        match (readable, &mut self.side.unreplayed) {
            (Some(names), Some(noted)) => noted.extend(names),
            _ => self.side.unreplayed = None,
        }
    }

    /// Between transactions, for a session pinned by a setting it could not replay: reads
    /// the settings back and records them, and the pin lets go (it stays when one could not
    /// be named or read).
    pub(super) async fn settle_unreplayed(&mut self) -> Result<(), SessionError> {
        if !self.pinned_by(Pin::Unreplayable)
            || self.view.in_transaction.is_some()
            || !self.between_transactions()
        {
            return Ok(());
        }
        let Some(noted) = self.side.unreplayed.as_mut() else {
            return Ok(());
        };
        let mut names: Vec<String> = noted.drain(..).map(|s| s.name).collect();
        names.sort();
        names.dedup();
        // The default database, which a `USE` changed, is read last.
        let database = names
            .iter()
            .position(|n| n == USE)
            .map(|at| names.remove(at));
        let Some(writer) = self.writer.as_mut() else {
            self.side.unreplayed = None;
            return Ok(());
        };
        let mut columns = Vec::new();
        for name in &names {
            if let Some(user) = name.strip_prefix('@') {
                columns.push(format!(
                    "@`{user}`, CHARSET(@`{user}`), COLLATION(@`{user}`)"
                ));
            } else {
                columns.push(format!("@@SESSION.{name}"));
            }
        }
        if database.is_some() {
            columns.push("DATABASE()".to_owned());
        }
        let mut out = BytesMut::new();
        let query = format!("SELECT {}", columns.join(", "));
        command::write_text_command(&mut out, COM_QUERY, query.as_bytes());
        let Some(row) = writer.first_row(&out).await? else {
            tracing::info!(%query, "could not read back a setting; the session stays pinned");
            self.side.unreplayed = None;
            return Ok(());
        };
        let Some(set) = assignments(&names, &row) else {
            self.side.unreplayed = None;
            return Ok(());
        };
        if let Some(use_name) = database {
            // No database (NULL) is one a client cannot choose again: the pin stays.
            let Some((_, Some(db))) = row.last() else {
                self.side.unreplayed = None;
                return Ok(());
            };
            self.record(Replay::InitDb(db.clone()), Some(vec![use_name]));
        }
        if !names.is_empty() {
            let sql = format!("SET {set}").into_bytes();
            self.record(Replay::Query(sql), Some(names));
        }
        self.unpin(Pin::Unreplayable);
        Ok(())
    }
}

/// How a `USE` is named among the settings a text changes (`sql::MysqlSetting`).
const USE: &str = "USE";

/// A name the read-back query can spell as it is: letters, digits, `_`, `$` (after `@` for
/// a user variable).
fn plain(name: &str) -> bool {
    let bare = name.strip_prefix('@').unwrap_or(name);
    !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// The assignments that set `names` to the values `row` read back (three columns for a
/// user variable: value, character set, collation).
fn assignments(names: &[String], row: &[super::backend::Cell]) -> Option<String> {
    let mut cells = row.iter();
    let mut set = Vec::new();
    for name in names {
        let (kind, value) = cells.next()?;
        let user = name.strip_prefix('@');
        let charset = match user {
            Some(_) => Some((cells.next()?, cells.next()?)),
            None => None,
        };
        let value = match (value, charset) {
            (None, _) => "NULL".to_owned(),
            (Some(v), _) if NUMBERS.contains(kind) && number(v) => {
                let text = String::from_utf8_lossy(v).into_owned();
                let exponent =
                    user.is_some() && FLOATS.contains(kind) && !text.contains(['e', 'E']);
                if exponent { format!("{text}e0") } else { text }
            }
            (Some(v), None) => format!("X'{}'", hex(v)),
            (Some(v), Some(((_, Some(cs)), (_, Some(coll))))) => {
                let (cs, coll) = (
                    std::str::from_utf8(cs).ok()?,
                    std::str::from_utf8(coll).ok()?,
                );
                if !plain(cs) || !plain(coll) {
                    return None;
                }
                if cs == "binary" {
                    format!("X'{}'", hex(v))
                } else {
                    format!("CONVERT(X'{}' USING {cs}) COLLATE {coll}", hex(v))
                }
            }
            (Some(_), Some(_)) => return None,
        };
        match user {
            Some(user) => set.push(format!("@`{user}` = {value}")),
            None => set.push(format!("@@SESSION.{name} = {value}")),
        }
    }
    Some(set.join(", "))
}

/// Whether `text` is a number literal as the server writes one.
fn number(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_become_literals_of_their_type() {
        let names = [
            "@n".to_owned(),
            "@s".into(),
            "@f".into(),
            "time_zone".into(),
            "wait_timeout".into(),
        ];
        let cell = |t: u8, v: Option<&str>| (t, v.map(|v| v.as_bytes().to_vec()));
        let row = [
            cell(8, Some("42")),
            cell(253, Some("binary")),
            cell(253, Some("binary")),
            cell(253, Some("it's")),
            cell(253, Some("utf8mb4")),
            cell(253, Some("utf8mb4_general_ci")),
            cell(5, Some("0.5")),
            cell(253, Some("binary")),
            cell(253, Some("binary")),
            cell(253, Some("+01:00")),
            cell(8, Some("100")),
        ];
        assert_eq!(
            assignments(&names, &row).as_deref(),
            Some(
                "@`n` = 42, @`s` = CONVERT(X'69742773' USING utf8mb4) COLLATE utf8mb4_general_ci, \
                 @`f` = 0.5e0, @@SESSION.time_zone = X'2B30313A3030', @@SESSION.wait_timeout = 100"
            )
        );
        assert_eq!(
            assignments(
                &["@x".into()],
                &[cell(6, None), cell(253, None), cell(253, None)]
            )
            .as_deref(),
            Some("@`x` = NULL")
        );
        assert!(!plain("@a`b") && plain("@a_1") && !plain("@"));
    }
}
