//! PostgreSQL settings the proxy cannot record as the client wrote them, read back from the
//! writer connection instead: a `SET` inside a transaction (`Pin::SetInTransaction`: a
//! ROLLBACK may undo it) once the transaction ended, and a `SET` whose text is not UTF-8
//! (`Pin::Unreplayable`) once its unit ended outside a transaction. Each value is read with
//! `current_setting` and recorded as a `set_config` replay (in hex, so that neither the
//! client's encoding nor its quoting changes it), and the pin lets go.

use super::Session;
use super::scan;
use super::side::SessionError;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};
use crate::router::Target;
use crate::session::flow::Pin;
use crate::sql::{Class, DefaultIsolation};

impl Session {
    /// A `SET` inside a transaction (which a ROLLBACK may undo, so it pins the session):
    /// which setting it changes, to read back when the transaction ends.
    pub(super) fn note_set_in_transaction(&mut self, unit: &scan::Unit) {
        if unit.stmt.class != Class::SessionSet || self.view.in_transaction.is_none() {
            return;
        }
        let names = unit
            .simple_sql
            .as_deref()
            .filter(|_| self.view.in_transaction == Some(Target::Writer))
            .and_then(|sql| crate::sql::postgres_settings(sql.as_bytes()));
        match (names, &mut self.side.set_in_transaction) {
            (Some(names), Some(noted)) => noted.extend(names),
            _ => self.side.set_in_transaction = None,
        }
    }

    /// A `SET` outside a transaction whose text is not UTF-8 (so not recorded as written,
    /// which pins the session): which settings it changes, to read back after the unit.
    pub(super) fn note_unreplayed(&mut self, unit: &scan::Unit) {
        if unit.stmt.class != Class::SessionSet
            || self.view.in_transaction.is_some()
            || unit.simple_sql.is_some()
        {
            return;
        }
        let names = if unit.first_tag == tag::QUERY {
            let bytes = &self.side.client.buf[..unit.end];
            let body = frame::message(bytes, usize::MAX).ok().flatten();
            body.and_then(|(_, body)| messages::query_text(body))
                .and_then(crate::sql::postgres_settings)
        } else {
            let texts = unit.refs.iter().flatten();
            let sets = texts.filter(|p| p.class.class == Class::SessionSet);
            sets.map(|p| crate::sql::postgres_settings(p.sql_bytes()?))
                .collect::<Option<Vec<_>>>()
                .map(|names| names.concat())
                .filter(|names| !names.is_empty())
        };
        match (names, &mut self.side.unreplayed) {
            (Some(names), Some(noted)) => noted.extend(names),
            _ => self.side.unreplayed = None,
        }
    }

    /// The transaction that pinned the session with a `SET` ended: the settings it changed
    /// (committed or rolled back) are read back and recorded, and the pin lets go. One that
    /// could not be named, or read back, keeps the pin.
    pub(super) async fn settle_settings(&mut self) -> Result<(), SessionError> {
        let noted = self.side.set_in_transaction.replace(Vec::new());
        if self.read_back(noted).await? {
            self.unpin(Pin::SetInTransaction);
        } else {
            // What was set is not recorded: the pin stays for the session, and a later
            // transaction's SETs, read back alone, must not let it go.
            self.side.set_in_transaction = None;
        }
        Ok(())
    }

    /// The unit with a `SET` the proxy could not record ended outside a transaction: the
    /// settings it changed are read back and recorded, and the pin lets go (it stays when
    /// one could not be named or read back).
    pub(super) async fn settle_unreplayed(&mut self) -> Result<(), SessionError> {
        let Some(noted) = self.side.unreplayed.as_mut() else {
            return Ok(());
        };
        let noted = Some(std::mem::take(noted));
        if self.read_back(noted).await? {
            self.unpin(Pin::Unreplayable);
        } else {
            self.side.unreplayed = None;
        }
        Ok(())
    }

    /// Reads the settings `names` back on the writer connection and records them as
    /// replays; whether all were (`None`: some could not be named).
    async fn read_back(&mut self, names: Option<Vec<String>>) -> Result<bool, SessionError> {
        let Some(mut names) = names.filter(|n| n.iter().all(|n| n.is_ascii())) else {
            return Ok(false);
        };
        names.sort();
        names.dedup();
        let Some(writer) = self.writer.as_mut() else {
            return Ok(false);
        };
        let (scratch, client) = (&mut self.side.scratch, &mut self.side.client.stream);
        let mut replays = Vec::new();
        let mut isolation = None;
        for name in names {
            let sql = format!(
                "SELECT pg_catalog.encode(pg_catalog.convert_to(\
                 pg_catalog.current_setting({}, true), 'UTF8'), 'hex')",
                literal(&name)
            );
            let value = writer.value(&sql, scratch, client).await?;
            let Some(hex) = value.filter(|v| v.iter().all(u8::is_ascii_hexdigit)) else {
                return Ok(false);
            };
            if name == "default_transaction_isolation" {
                // "serializable" in hex: reads go to the writer while it lasts.
                let serializable = hex.eq_ignore_ascii_case(b"73657269616c697a61626c65");
                isolation = Some(if serializable {
                    DefaultIsolation::Serializable
                } else {
                    DefaultIsolation::Other
                });
            }
            let replay = format!(
                "SELECT pg_catalog.set_config({}, pg_catalog.convert_from(\
                 pg_catalog.decode('{}', 'hex'), 'UTF8'), false)",
                literal(&name),
                String::from_utf8_lossy(&hex)
            );
            // What a later SET of the same name makes pointless (see `sql::settings`).
            let replaceable = crate::sql::postgres_literal_settings(&format!("RESET {name}"));
            replays.push((replay, replaceable.map(|_| vec![name])));
        }
        for (replay, names) in replays {
            self.record(replay, names);
        }
        if let Some(isolation) = isolation {
            self.default_isolation(isolation);
        }
        Ok(true)
    }
}

/// `text` as a PostgreSQL string literal whatever `standard_conforming_strings` says.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}
