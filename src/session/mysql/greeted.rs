//! The writer connection a MySQL session greets its client with. A MySQL server speaks
//! first, so the session opens its writer connection as far as the server's greeting before
//! it greets the client, and greets with what that server said: its version, collation and
//! capabilities, and the connection id that `CONNECTION_ID()` and `KILL` know it by. The
//! login on it follows the client's.
//!
//! A client that leaves before its login is done would leave that server connection ended
//! in the middle of its handshake, which MySQL and MariaDB count against the proxy's host
//! (`max_connect_errors`: after that many in a row without a successful login, the host is
//! blocked). So such a connection is logged in all the same, with the cluster's monitor
//! account or else the first configured user's backend login, and closed with COM_QUIT.
//!
//! In transaction mode a client is greeted by the proxy instead ([`Greetings::own`]): with what the writer said
//! in its last greeting, a scramble of the proxy's and a connection id of the proxy's, and
//! its session takes its connections from the pool — so a burst of logins opens no server
//! connection of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;

use super::{Session, SessionError, compressed};
use crate::backend::Credentials;
use crate::backend::mysql::{self as connector, ConnectError, Greeted, Login};
use crate::error::chain;
use crate::pool::CheckoutError;
use crate::protocol::mysql::constants::{
    CapabilityFlags, ER_CONNECTION_KILLED, UTF8MB4_GENERAL_CI,
};
use crate::protocol::mysql::handshake::ServerGreeting;
use crate::protocol::mysql::messages::{self, OkPacket};
use crate::protocol::mysql::packet;
use crate::session::Context;
use crate::session::failover::{WaitError, WriterWait};
use crate::shutdown::Shutdown;
use crate::topology::Cluster;

impl Session {
    /// Logs in on the writer connection the client was greeted with, and ends the client's
    /// login with OK (or the writer's ERR). When that connection ended while the client
    /// logged in (the server's own `connect_timeout`, or its writer failed), the session
    /// takes a new one: its connection id is then not the one the greeting gave. Without
    /// `greeted` (COM_CHANGE_USER) it opens a new one.
    pub(super) async fn start(
        &mut self,
        ok_seq: u8,
        greeted: Option<Greeted>,
    ) -> Result<(), SessionError> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        // The client was greeted with this connection's greeting (else one from the pool).
        let mut greeting_conn = greeted.is_some();
        let logged_in = match greeted {
            Some(greeted) => {
                let instance = Arc::clone(greeted.instance());
                let conn = greeted
                    .login(&self.cluster, &self.login, &self.creds, timeout)
                    .await;
                conn.map(|c| self.adopt(&instance, c))
                    .map_err(CheckoutError::Connect)
            }
            None => self.first_writer().await?,
        };
        let writer = match logged_in {
            Ok(conn) => Ok(conn),
            Err(CheckoutError::Connect(
                e @ (ConnectError::Io { .. }
                | ConnectError::Protocol { .. }
                | ConnectError::Timeout { .. }),
            )) => {
                greeting_conn = false;
                tracing::info!(error = %chain(&e), "the writer connection of the greeting ended before the login; opening another");
                self.first_writer().await?
            }
            Err(e) => Err(e),
        };
        let writer = match writer {
            Ok(conn) => conn,
            Err(CheckoutError::Connect(ConnectError::Refused {
                payload, message, ..
            })) if !payload.is_empty() => {
                tracing::info!(%message, "writer refused the session");
                let mut out = BytesMut::new();
                packet::write_packet(&mut out, ok_seq, &payload);
                // The session ends right after, so a failed write changes nothing.
                let _ = self.side.client.write_all(&out).await;
                return Err(SessionError::ClientGone);
            }
            Err(e) => return Err(SessionError::Connect(e)),
        };
        // A pooled connection may carry another client's state.
        let writer = self.take(writer).await?;
        self.side.status = writer.conn.status;
        let mut out = BytesMut::new();
        let ok = OkPacket {
            status: self.side.status,
            ..OkPacket::default()
        };
        messages::ok_packet(&mut out, ok_seq, &ok, false);
        self.side
            .client
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)?;
        // The compressed protocol starts right after the login's OK.
        if self
            .side
            .client
            .capabilities
            .contains(CapabilityFlags::CLIENT_COMPRESS)
            && self.side.client.compressed.is_none()
        {
            self.side.client.compressed = Some(compressed::Compressed::new());
        }
        self.writer = Some(writer);
        self.side.greeted_writer = greeting_conn;
        Ok(())
    }
}

/// The writer connection a new session greets its client with, opened as far as the
/// server's greeting: to the cluster's writer, or, while the topology shows no usable writer
/// (a failover under way), to the next one once it is usable, within `failover_timeout`.
pub(super) async fn open_writer(
    ctx: &Context,
    cluster: Arc<Cluster>,
    shutdown: &mut Shutdown,
) -> Result<(Arc<Cluster>, Greeted), SessionError> {
    let wait = WriterWait::new(&ctx.topology, &ctx.config(), &cluster.name, shutdown);
    let open = |cluster: Arc<Cluster>, t| async move { connector::open(&cluster.writer, t).await };
    match wait.connect(cluster, true, open, |_| false).await {
        Ok((cluster, Ok(greeted))) => {
            ctx.mysql_greetings
                .remember(&greeted.instance().addr, &greeted.greeting);
            Ok((cluster, greeted))
        }
        Ok((_, Err(e))) => Err(SessionError::Connect(CheckoutError::Connect(e))),
        Err(WaitError::Shutdown) => Err(SessionError::Shutdown),
        Err(e) => {
            e.report();
            let code = ER_CONNECTION_KILLED;
            Err(SessionError::Failover {
                code,
                message: e.to_string(),
            })
        }
    }
}

/// Finishes the handshake of a greeted writer connection whose client never logged in (see
/// the module's note), within `connect_timeout`, and closes it.
pub(super) async fn settle(ctx: &Context, cluster: &Cluster, greeted: Greeted) {
    let Some(creds) = fallback_login(ctx, &cluster.name) else {
        tracing::debug!(writer = %greeted.instance().addr, "no login to finish an unused writer handshake with");
        return;
    };
    let login = Login {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH,
        charset: UTF8MB4_GENERAL_CI,
        max_packet_size: 1 << 24,
        database: None,
        connect_attrs: None,
        mariadb_capabilities: 0,
    };
    let timeout = ctx.config().raw.server.connect_timeout;
    match greeted.login(cluster, &login, &creds, timeout).await {
        Ok(conn) => conn.quit().await,
        Err(e) => {
            tracing::debug!(error = %crate::error::chain(&e), "could not finish an unused writer handshake");
        }
    }
}

/// The cluster's monitor account, else the first configured user's backend login.
fn fallback_login(ctx: &Context, cluster: &str) -> Option<Credentials> {
    let config = ctx.config();
    let monitor = config
        .raw
        .clusters
        .get(cluster)
        .and_then(|c| crate::topology::monitor_login(c, None));
    let (user, password) = match monitor {
        Some(m) => (m.user, m.password),
        None => {
            let u = config.users.first()?;
            (u.backend_user.clone(), u.backend_password.clone())
        }
    };
    Some(Credentials {
        user,
        password,
        salted: Arc::clone(&ctx.salted),
        pass_through: None,
    })
}

/// Whether the proxy greets MySQL clients itself when it can (see the module's note): every
/// session is in transaction mode (no session-mode route). Passwords are checked against
/// the proxy's own scramble either way; an `[auth]` login logs in to the backends with the
/// SHA1(password) its answer revealed, which answers any server's scramble.
pub(super) fn greets_itself(config: &crate::config::Config) -> bool {
    use crate::config::PoolMode::{Session, Transaction};
    let routes = &config.routing.routes;
    config.server.pool_mode == Transaction && routes.iter().all(|r| r.pool_mode != Some(Session))
}

/// Proxy-assigned connection ids start here, above the ids a server hands out for a long
/// time, so that a `KILL` naming a server's own connection is not taken for a client's.
const FIRST_PROXY_ID: u32 = 1 << 30;

/// The last greeting each MySQL writer sent, and the connection ids of the proxy's own
/// greetings.
pub struct Greetings {
    last: Mutex<HashMap<String, ServerGreeting>>,
    next_id: AtomicU32,
    /// Held by the session that opens a writer connection for a greeting the proxy does not
    /// know yet; the sessions behind it then greet with what that writer said, so a burst
    /// of logins at start (or after a failover to a new writer) opens one server connection,
    /// not one per client.
    fetching: tokio::sync::Mutex<()>,
}

impl Default for Greetings {
    fn default() -> Self {
        Greetings {
            last: Mutex::default(),
            next_id: AtomicU32::new(FIRST_PROXY_ID),
            fetching: tokio::sync::Mutex::new(()),
        }
    }
}

impl Greetings {
    /// Remembers what the writer at `addr` greeted with.
    pub fn remember(&self, addr: &str, greeting: &ServerGreeting) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.get(addr) != Some(greeting) {
            last.insert(addr.to_owned(), greeting.clone());
        }
    }

    /// A greeting of the proxy's own for a client of the writer at `addr` ([`Greetings::own`]),
    /// waiting first while another session opens a writer connection for the greeting; `None`
    /// when still unknown, with the guard this session holds while it opens one itself.
    pub async fn own_or_fetch(
        &self,
        addr: &str,
    ) -> Result<ServerGreeting, tokio::sync::MutexGuard<'_, ()>> {
        if let Some(greeting) = self.own(addr) {
            return Ok(greeting);
        }
        let fetching = self.fetching.lock().await;
        self.own(addr).ok_or(fetching)
    }

    /// A greeting of the proxy's own for a client of the writer at `addr`: the writer's
    /// last greeting with a fresh scramble and a connection id of the proxy's; `None`
    /// until that writer greeted once.
    pub fn own(&self, addr: &str) -> Option<ServerGreeting> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut greeting = last.get(addr)?.clone();
        drop(last);
        // Printable bytes, never NUL (the scramble's second part is NUL-terminated).
        greeting.scramble = (0..20).map(|_| rand::random_range(0x21u8..0x7f)).collect();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        greeting.connection_id = id.max(FIRST_PROXY_ID);
        Some(greeting)
    }
}
