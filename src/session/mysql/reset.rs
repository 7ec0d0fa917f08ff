//! Commands that reset a MySQL session: COM_CHANGE_USER (a new login on the same
//! connection) and COM_RESET_CONNECTION. Both clear the session's state, as a server does.

use std::time::Instant;

use bytes::BytesMut;

use super::auth::Attempt;
use super::backend::Backend;
use super::{Session, SessionError, startup};
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::COM_RESET_CONNECTION;
use crate::router::{SessionView, Target};

impl Session {
    /// COM_CHANGE_USER: authenticates the new user against the greeting's scramble, then
    /// replaces the backend connections with ones for that user; all session state is reset,
    /// as a server does. A failed check ends the connection.
    pub(super) async fn change_user(&mut self, body: &[u8]) -> Result<bool, SessionError> {
        let change = command::parse_change_user(body, self.side.client.capabilities)
            .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
        let name = String::from_utf8_lossy(change.user).into_owned();
        let deadline = Instant::now() + self.ctx.config().raw.server.auth_timeout;
        let attempt = Attempt {
            name: &name,
            scramble: self.side.scramble,
            plugin: change.auth_plugin,
            response: change.auth_response,
        };
        let verified = match self
            .side
            .client
            .authenticate(&self.ctx, attempt, 1, deadline)
            .await
        {
            Ok(verified) => verified,
            Err((error, seq)) => {
                if let Some((code, message)) = error.client_message() {
                    self.side.client.send_error(seq, code, &message).await;
                }
                // Told already: end quietly, counted under the error's kind.
                if let Some(kind) = error.kind() {
                    crate::metrics::error(kind);
                }
                return Err(SessionError::ClientGone);
            }
        };
        let (user, ok_seq) = (verified.user, verified.ok_seq);
        self.creds.user = user.backend_user.clone();
        self.creds.password = user.backend_password.clone();
        self.creds.pass_through = verified.pass_through;
        self.login.database = Some(change.database.to_vec()).filter(|d| !d.is_empty());
        if let Some(charset) = change.charset {
            self.login.charset = charset;
        }
        if let Some(attrs) = change.connect_attrs {
            self.login.connect_attrs = Some(attrs.to_vec());
        }
        self.read_your_writes = startup::read_your_writes(&self.ctx, &user, &self.login);
        self.writer = None;
        self.reader = None;
        self.side.statements.clear();
        self.replays.clear();
        self.view = SessionView {
            in_transaction: None,
            pinned_to_writer: false,
            reads_on_writer: false,
            wrote_recently: false,
        };
        self.unpin_all();
        self.side.unreplayed = Some(Vec::new());
        self.start(ok_seq, None).await?;
        Ok(true)
    }

    pub(super) async fn reset_connection(&mut self, packet: &[u8]) -> Result<(), SessionError> {
        self.side.statements.clear();
        self.replays.clear();
        self.view = SessionView {
            in_transaction: None,
            pinned_to_writer: false,
            reads_on_writer: false,
            wrote_recently: false,
        };
        self.unpin_all();
        self.side.unreplayed = Some(Vec::new());
        if let Some(mut reader) = self.reader.take() {
            let mut out = BytesMut::new();
            command::write_simple_command(&mut out, COM_RESET_CONNECTION);
            if matches!(reader.run_silently(&out).await, Ok((_, None))) {
                forget_state(&mut reader);
                self.reader = Some(reader);
            }
        }
        let relayed = self.run_packet(Target::Writer, packet, None).await?;
        if let Some(writer) = self.writer.as_mut().filter(|_| !relayed.failed) {
            forget_state(writer);
        }
        Ok(())
    }
}

/// The server reset `backend`'s connection: no session state, no prepared statements.
fn forget_state(backend: &mut Backend) {
    backend.applied = 0;
    backend.conn.prepared.clear();
    backend.conn.carried = crate::backend::Carried::default();
}
