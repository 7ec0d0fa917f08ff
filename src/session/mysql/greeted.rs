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

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::SessionError;
use crate::pool::Credentials;
use crate::pool::mysql::{self as pool, Greeted, Login};
use crate::protocol::mysql::constants::{
    CapabilityFlags, ER_CONNECTION_KILLED, UTF8MB4_GENERAL_CI,
};
use crate::session::Context;
use crate::session::failover::{WaitError, WriterWait};
use crate::shutdown::Shutdown;
use crate::topology::Cluster;

/// The writer connection a new session greets its client with, opened as far as the
/// server's greeting: to the cluster's writer, or, while the topology shows no usable writer
/// (a failover under way), to the next one once it is usable, within `failover_timeout`.
pub(super) async fn open_writer(
    ctx: &Context,
    cluster: Arc<Cluster>,
    shutdown: &mut Shutdown,
) -> Result<(Arc<Cluster>, Greeted), SessionError> {
    let wait = WriterWait::new(ctx, &cluster.name, shutdown);
    let open = |cluster: Arc<Cluster>, t| async move { pool::open(&cluster.writer, t).await };
    match wait.connect(cluster, true, open).await {
        Ok((cluster, Ok(greeted))) => Ok((cluster, greeted)),
        Ok((_, Err(e))) => Err(SessionError::Connect(e)),
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
    };
    let timeout = ctx.config.raw.server.connect_timeout;
    match greeted.login(cluster, &login, &creds, timeout).await {
        Ok(mut conn) => {
            // COM_QUIT; the connection closes either way.
            let _ = conn.stream.write_all(&[1, 0, 0, 0, 1]).await;
        }
        Err(e) => {
            tracing::debug!(error = %crate::session::chain(&e), "could not finish an unused writer handshake");
        }
    }
}

/// The cluster's monitor account, else the first configured user's backend login.
fn fallback_login(ctx: &Context, cluster: &str) -> Option<Credentials> {
    let monitor = ctx
        .config
        .raw
        .clusters
        .get(cluster)
        .and_then(|c| crate::topology::monitor_login(c, None));
    let (user, password) = match monitor {
        Some(m) => (m.user, m.password),
        None => {
            let u = ctx.config.users.first()?;
            (u.backend_user.clone(), u.backend_password.clone())
        }
    };
    Some(Credentials {
        user,
        password,
        salted: Arc::clone(&ctx.salted),
    })
}
