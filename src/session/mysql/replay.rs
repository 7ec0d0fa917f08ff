//! A MySQL session's state that lives on its backend connections (`USE db`, `SET`, the
//! multi-statement option): recorded as the client sets it, and replayed in order on every
//! other connection the session uses — a reader, or a new writer after a cutover or a
//! failover.

use bytes::BytesMut;

use super::SessionError;
use super::backend::Backend;
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::{COM_INIT_DB, COM_QUERY, COM_SET_OPTION};

/// A session-state command, replayed in order on the session's other connections.
#[derive(Debug, Clone, Hash)]
pub enum Replay {
    Query(Vec<u8>),
    InitDb(Vec<u8>),
    SetOption(u16),
}

impl Replay {
    pub(super) fn write(&self, out: &mut BytesMut) {
        out.clear();
        match self {
            Replay::Query(sql) => command::write_text_command(out, COM_QUERY, sql),
            Replay::InitDb(schema) => command::write_text_command(out, COM_INIT_DB, schema),
            Replay::SetOption(option) => {
                command::write_text_command(out, COM_SET_OPTION, &option.to_le_bytes())
            }
        };
    }
}

impl Replay {
    /// The settings this sets, each from a literal (see `Protocol::setting_names`).
    pub(super) fn setting_names(&self) -> Option<Vec<String>> {
        match self {
            // Text in another character set means what the connection's said when it ran.
            Replay::Query(sql) if sql.is_ascii() => crate::sql::mysql_settings(sql)?
                .into_iter()
                .map(|s| s.literal.then_some(s.name))
                .collect(),
            Replay::Query(_) => None,
            Replay::InitDb(_) => Some(vec!["USE".into()]),
            Replay::SetOption(_) => Some(vec!["MULTI_STATEMENTS".into()]),
        }
    }
}

/// Replays the session's recorded state on `backend` from where it left off;
/// `Ok(Err(message))` when the backend refused a statement.
pub(super) async fn replay(
    backend: &mut Backend,
    replays: &[Replay],
) -> Result<Result<(), String>, SessionError> {
    let mut out = BytesMut::new();
    while backend.applied < replays.len() {
        out.clear();
        replays[backend.applied].write(&mut out);
        match backend.run_silently(&out).await? {
            (_, None) => backend.applied += 1,
            (_, Some(message)) => return Ok(Err(message)),
        }
    }
    Ok(Ok(()))
}
