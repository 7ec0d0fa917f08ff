//! `KILL QUERY <id>` and `KILL <id>` aimed at a client of this proxy. A client knows itself
//! by its greeting's connection id (its writer connection's, or the proxy's own; in
//! transaction mode its `CONNECTION_ID()` says it too: `sql::rewrite_identity`), but its
//! statement may be running on its reader connection, and a writer that was reopened has
//! another id. So the proxy keeps, for each live MySQL session, the backend connections it
//! uses and which of them runs its statement now (as `cancel.rs` does for PostgreSQL), and
//! runs the KILL on that connection's own thread id over a short-lived control connection,
//! logged in as the killing client's backend user: the server checks that user's right to
//! kill exactly as it would for a direct client. An id that is not one of ours, or a
//! session of another backend user, is left to the writer, as sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;

use super::backend::Backend;
use super::{Session, SessionError};
use crate::backend::mysql::{self as connector, MysqlConn};
use crate::pool::Release;
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::COM_QUERY;
use crate::protocol::mysql::packet::{self, HEADER_LEN, MAX_PHYSICAL_PAYLOAD};
use crate::router::Target;
use crate::session::flow::{Dial, checkout};
use crate::session::latch::Latch;
use crate::topology::{Cluster, Instance};

/// What a `KILL` statement asks for, when it names one connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kill {
    /// `HARD` or `SOFT`, as written (MariaDB); kept in the statement the proxy runs.
    pub modifier: Option<&'static str>,
    /// `KILL QUERY` (else the connection).
    pub query: bool,
    pub id: u32,
}

impl Kill {
    /// Parses `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>` (a trailing `;` allowed); `None`
    /// for anything else (`KILL QUERY ID`, `KILL USER`, comments, an expression), which is
    /// relayed unchanged.
    pub fn parse(sql: &[u8]) -> Option<Kill> {
        let text = std::str::from_utf8(sql).ok()?;
        let text = text.trim().trim_end_matches(';');
        let mut words = text.split_ascii_whitespace().peekable();
        if !words.next()?.eq_ignore_ascii_case("KILL") {
            return None;
        }
        let mut modifier = None;
        for m in ["HARD", "SOFT"] {
            if words.peek().is_some_and(|w| w.eq_ignore_ascii_case(m)) {
                modifier = Some(m);
                words.next();
            }
        }
        let mut query = false;
        if let Some(w) = words.peek() {
            if w.eq_ignore_ascii_case("QUERY") {
                query = true;
                words.next();
            } else if w.eq_ignore_ascii_case("CONNECTION") {
                words.next();
            }
        }
        let id = words.next()?;
        if words.next().is_some() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Kill {
            modifier,
            query,
            id: id.parse().ok()?,
        })
    }

    /// The statement to run on the backend connection with thread id `thread`.
    pub fn statement(&self, thread: u32) -> String {
        let modifier = self.modifier.map(|m| format!("{m} ")).unwrap_or_default();
        let what = if self.query { "QUERY" } else { "CONNECTION" };
        format!("KILL {modifier}{what} {thread}")
    }
}

/// One backend connection of a session, where a KILL can reach it.
#[derive(Clone)]
pub(super) struct KillTarget {
    pub cluster: Arc<Cluster>,
    pub instance: Arc<Instance>,
    pub thread: u32,
}

/// The backend connections of one session (writer, reader), its backend user, and which
/// connection runs its statement now.
#[derive(Default)]
pub(super) struct SessionKill {
    state: Mutex<Targets>,
    active: AtomicU8,
    /// Set once the session was killed; waited for by the session's own task, between
    /// statements or for a connection.
    killed: Latch,
}

#[derive(Default)]
struct Targets {
    user: String,
    backends: [Option<KillTarget>; 2],
}

fn slot(target: Target) -> usize {
    match target {
        Target::Writer => 0,
        Target::Reader => 1,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SessionKill {
    /// The connection a `KILL QUERY` reaches now, and the session's backend user.
    pub fn running(&self) -> (String, Option<KillTarget>) {
        let slot = usize::from(self.active.load(Ordering::Relaxed) & 1);
        let state = lock(&self.state);
        (state.user.clone(), state.backends[slot].clone())
    }

    /// The reader connection, when it runs (or last ran) the session's statement.
    pub fn reader_running(&self) -> Option<KillTarget> {
        if self.active.load(Ordering::Relaxed) & 1 == 0 {
            return None;
        }
        lock(&self.state).backends[1].clone()
    }

    /// The session's writer connection, for `KILL CONNECTION`.
    pub fn writer(&self) -> Option<KillTarget> {
        lock(&self.state).backends[0].clone()
    }

    /// Marks the session killed: it ends as the server ends a killed connection.
    pub fn end(&self) {
        self.killed.set();
    }

    pub fn killed(&self) -> bool {
        self.killed.is_set()
    }

    /// Resolves once the session was killed, at once if it was. Awaited by the session's
    /// own task only.
    pub fn ended(&self) -> impl Future<Output = ()> + '_ {
        self.killed.wait()
    }
}

/// Every live MySQL session, by the writer it greeted its client with and that greeting's
/// connection id (and by its writer connection's own id, once that is another).
#[derive(Default)]
pub struct KillRegistry {
    sessions: Mutex<HashMap<(String, u32), Arc<SessionKill>>>,
}

/// A session's place in the registry, removed when dropped. It remembers what it last
/// recorded, so a statement on an unchanged connection costs one relaxed store.
pub(super) struct Registration {
    registry: Arc<KillRegistry>,
    key: (String, u32),
    /// The session's writer connection's own key, once it is not the greeting's (the
    /// writer was reopened): `CONNECTION_ID()` answers that id now.
    alias: Option<(String, u32)>,
    pub kill: Arc<SessionKill>,
    seen: [Option<(usize, u32)>; 2],
    /// Transaction mode: the session's connections change between statements and serve
    /// other clients in between, so it is known by its greeting's id only.
    pooled: bool,
}

impl KillRegistry {
    /// Registers a session greeted by `writer` with connection id `id`. A second session
    /// under the same key (the first one's writer was reopened and the server reused the
    /// id) takes the key over.
    pub(super) fn register(
        self: &Arc<Self>,
        writer: &str,
        id: u32,
        user: &str,
        pooled: bool,
    ) -> Registration {
        let kill = Arc::new(SessionKill::default());
        lock(&kill.state).user = user.to_owned();
        let key = (writer.to_owned(), id);
        lock(&self.sessions).insert(key.clone(), Arc::clone(&kill));
        Registration {
            registry: Arc::clone(self),
            key,
            alias: None,
            kill,
            seen: [None, None],
            pooled,
        }
    }

    /// The session a client of the writer `writer` names by connection id `id`.
    pub(super) fn find(&self, writer: &str, id: u32) -> Option<Arc<SessionKill>> {
        lock(&self.sessions).get(&(writer.to_owned(), id)).cloned()
    }
}

impl Registration {
    /// The connection id the client was greeted with: its own, in SQL too.
    pub fn id(&self) -> u32 {
        self.key.1
    }

    /// Records that `target`'s connection `conn` (of `cluster`) runs the session's
    /// statement now, as backend user `user`.
    pub fn running(
        &mut self,
        target: Target,
        conn: &MysqlConn,
        cluster: &Arc<Cluster>,
        user: &str,
    ) {
        let slot = slot(target);
        let seen = (Arc::as_ptr(&conn.instance) as usize, conn.connection_id);
        if self.seen[slot] != Some(seen) {
            self.seen[slot] = Some(seen);
            let mut state = lock(&self.kill.state);
            if state.user != user {
                state.user = user.to_owned();
            }
            state.backends[slot] = Some(KillTarget {
                cluster: Arc::clone(cluster),
                instance: Arc::clone(&conn.instance),
                thread: conn.connection_id,
            });
            drop(state);
            if target == Target::Writer && !self.pooled {
                self.alias_writer(conn);
            }
        }
        self.kill.active.store(slot as u8, Ordering::Relaxed);
    }

    /// The session no longer holds its `target` connection (transaction mode gave it back
    /// to its pool): a `KILL` naming the session must not reach it.
    pub fn released(&mut self, target: Target) {
        let slot = slot(target);
        if self.seen[slot].take().is_some() {
            lock(&self.kill.state).backends[slot] = None;
        }
    }
}

impl Registration {
    /// Registers the session also under its writer connection's own id, when the writer was
    /// reopened (a failover, a cutover, COM_CHANGE_USER).
    fn alias_writer(&mut self, conn: &MysqlConn) {
        let key = (conn.instance.addr.clone(), conn.connection_id);
        let alias = (key != self.key).then_some(key);
        if alias == self.alias {
            return;
        }
        let mut sessions = lock(&self.registry.sessions);
        if let Some(old) = self.alias.take() {
            remove(&mut sessions, &old, &self.kill);
        }
        if let Some(alias) = alias {
            sessions.insert(alias.clone(), Arc::clone(&self.kill));
            self.alias = Some(alias);
        }
    }
}

/// Removes `key` if it is still `kill`'s (another session may have taken it over).
fn remove(
    sessions: &mut HashMap<(String, u32), Arc<SessionKill>>,
    key: &(String, u32),
    kill: &Arc<SessionKill>,
) {
    if sessions.get(key).is_some_and(|k| Arc::ptr_eq(k, kill)) {
        sessions.remove(key);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = lock(&self.registry.sessions);
        remove(&mut sessions, &self.key, &self.kill);
        if let Some(alias) = &self.alias {
            remove(&mut sessions, alias, &self.kill);
        }
    }
}

impl Session {
    /// Runs `kill` when it names one of this proxy's clients of the same backend user, and
    /// answers the client; `false` when it does not, and the statement goes to the writer
    /// as sent (the server then decides, as for any other id).
    pub(super) async fn kill(&mut self, kill: Kill) -> Result<bool, SessionError> {
        let writer = match &self.writer {
            Some(writer) => &writer.conn.instance,
            // Transaction mode between statements: the cluster's writer greeted the client.
            None => &self.cluster.writer,
        };
        let registry = &self.ctx.mysql_kills;
        let Some(session) = registry.find(&writer.addr, kill.id) else {
            return Ok(false);
        };
        let (user, running) = session.running();
        if user != self.creds.user {
            return Ok(false);
        }
        let target = if kill.query {
            running
        } else {
            session.writer()
        };
        let Some(target) = target else {
            // That client holds no writer connection (transaction mode): `KILL QUERY` of
            // an idle one is a no-op, as on a server; `KILL` ends the client, and the read
            // it runs on a reader, if any.
            if !kill.query {
                session.end();
                if let Some(reader) = session.reader_running()
                    && let Err(e) = self.control(&reader, &kill.statement(reader.thread)).await
                {
                    tracing::info!(error = %e, "could not kill the reader connection of a killed session");
                }
            }
            self.reply_ok().await?;
            return Ok(true);
        };
        let answer = match self.control(&target, &kill.statement(target.thread)).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "could not run KILL on the backend; relaying it to the writer");
                return Ok(false);
            }
        };
        let refused = answer.first() == Some(&0xff);
        if !kill.query && !refused {
            // The server would close the connection: its reader's statement ends too. The
            // session is marked first, so that it does not retry that read elsewhere.
            session.end();
            if let Some(reader) = session.reader_running()
                && let Err(e) = self.control(&reader, &kill.statement(reader.thread)).await
            {
                tracing::info!(error = %e, "could not kill the reader connection of a killed session");
            }
        }
        if refused {
            let mut out = BytesMut::new();
            packet::write_packet(&mut out, 1, &answer);
            self.side
                .client
                .write_all(&out)
                .await
                .map_err(SessionError::ClientIo)?;
        } else {
            self.reply_ok().await?;
        }
        Ok(true)
    }

    /// The client closed its connection while its command ran on `target`: the statement
    /// is killed there (`KILL QUERY`), and the session ends, closing that connection (it is
    /// never given back mid-command), so that a query its client gave up on (a driver's
    /// timeout) stops holding a pooled connection and the server's time.
    pub(super) async fn client_left(&mut self, target: Target) -> SessionError {
        let backend = match target {
            Target::Writer => self.writer.as_ref(),
            Target::Reader => self.reader.as_ref(),
        };
        let Some(backend) = backend else {
            return SessionError::ClientGone;
        };
        let running = KillTarget {
            cluster: Arc::clone(&self.cluster),
            instance: Arc::clone(&backend.conn.instance),
            thread: backend.conn.connection_id,
        };
        let sql = format!("KILL QUERY {}", running.thread);
        match self.control(&running, &sql).await {
            Ok(_) => tracing::info!("the client left while its statement ran; statement killed"),
            Err(e) => {
                tracing::info!(error = %e, "the client left while its statement ran; could not kill it")
            }
        }
        SessionError::ClientGone
    }

    /// The session was killed while its reader connection ran its statement: the server's
    /// last ERR there (1927) answers the client, and the session ends, as the server ends a
    /// killed connection.
    pub(super) async fn reader_killed(&mut self) -> SessionError {
        let words = self
            .reader
            .take()
            .and_then(|r| super::failover::last_error(&r.conn.buf));
        self.side.statements.forget_backend(Target::Reader);
        if let Some(payload) = words {
            let mut out = BytesMut::new();
            packet::write_packet(&mut out, 1, &payload);
            if let Err(e) = self.side.client.write_all(&out).await {
                tracing::debug!(error = %e, "could not relay the server's last error");
            }
        }
        SessionError::Killed
    }

    /// Runs `sql` on a new connection to `target`'s instance as this session's backend
    /// user, within `connect_timeout`, and returns the server's answer (OK or ERR payload).
    async fn control(&self, target: &KillTarget, sql: &str) -> Result<Vec<u8>, String> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let login = connector::Login {
            database: None,
            ..self.login.clone()
        };
        let dial: Dial<'_, super::Mysql> = Dial {
            cluster: &target.cluster,
            login: &login,
            creds: &self.creds,
            timeout,
            mode: self.mode,
        };
        let run = async {
            let conn = checkout(&self.ctx, dial, &target.instance)
                .await
                .map_err(|e| crate::error::chain(&e))?;
            let mut control = Backend::new(conn);
            let mut out = BytesMut::new();
            command::write_text_command(&mut out, COM_QUERY, sql.as_bytes());
            control.send(&out).await.map_err(|e| e.to_string())?;
            let answer = loop {
                let frame = packet::packet(&control.conn.buf, MAX_PHYSICAL_PAYLOAD)
                    .map_err(|e| e.to_string())?;
                if let Some((h, payload)) = frame {
                    let answer = payload.to_vec();
                    bytes::Buf::advance(&mut control.conn.buf, HEADER_LEN + h.len);
                    break answer;
                }
                control.fill().await.map_err(|e| e.to_string())?;
            };
            // A KILL changes nothing on the connection that sent it.
            control.conn.release(Release::Clean);
            Ok(answer)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no answer from {} within {timeout:?}",
                target.instance.addr
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kill;

    #[test]
    fn parses_the_forms_that_name_one_connection() {
        let k = |s: &str| Kill::parse(s.as_bytes());
        let kill = |modifier, query, id| {
            Some(Kill {
                modifier,
                query,
                id,
            })
        };
        assert_eq!(k("KILL 42"), kill(None, false, 42));
        assert_eq!(k("  kill query 7 ;"), kill(None, true, 7));
        assert_eq!(k("KILL CONNECTION 9"), kill(None, false, 9));
        assert_eq!(k("KILL HARD QUERY 3"), kill(Some("HARD"), true, 3));
        assert_eq!(k("KILL SOFT 3"), kill(Some("SOFT"), false, 3));
        for other in [
            "KILL QUERY ID 5",
            "KILL USER app",
            "KILL 4 + 1",
            "KILL",
            "KILLS 4",
            "/* c */ KILL 4",
            "SELECT 1",
            "KILL 99999999999",
        ] {
            assert_eq!(k(other), None, "{other}");
        }
        assert_eq!(
            kill(Some("SOFT"), true, 3).unwrap().statement(11),
            "KILL SOFT QUERY 11"
        );
        assert_eq!(
            kill(None, false, 3).unwrap().statement(11),
            "KILL CONNECTION 11"
        );
    }
}
