//! Warming the new cluster's pools before a cutover's switch: during the check (the
//! preflight), each pool of the active cluster's writer gets as many connections opened on
//! the new cluster's writer, with the same login, as it has open (in use, or idle between
//! transactions in transaction mode); they wait idle, and the
//! sessions that move at the switch take them instead of logging in then.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::Context;
use super::flow::{Dial, Protocol, checkout, key};
use crate::backend::Credentials;
use crate::config::PoolMode;
use crate::pool::{Key, Lease, Release};

/// The logins sessions have used, by backend user, database and login options: what it
/// takes to open the same login on another cluster.
pub struct Logins<P: Protocol> {
    seen: Mutex<HashMap<LoginKey, Login<P>>>,
}

/// A login by backend user, database and login options (a pool's key without its place).
type LoginKey = (String, String, u64);

/// What a login takes: the protocol's login, the credentials, and whose pools it is for.
type Login<P> = (<P as Protocol>::Login, Credentials, PoolMode);

impl<P: Protocol> Default for Logins<P> {
    fn default() -> Self {
        Logins {
            seen: Mutex::default(),
        }
    }
}

/// How many connections a warm-up opens at most per pool.
const MAX_WARM: usize = 256;

impl<P: Protocol> Logins<P> {
    /// Remembers the login of a checkout for `key` (once per login).
    pub(super) fn note(&self, key: &Key, dial: Dial<'_, P>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let login = (key.user.clone(), key.database.clone(), key.options);
        seen.entry(login)
            .or_insert_with(|| (dial.login.clone(), dial.creds.clone(), dial.mode));
    }

    fn get(&self, key: &Key) -> Option<Login<P>> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let login = (key.user.clone(), key.database.clone(), key.options);
        seen.get(&login).cloned()
    }
}

/// Opens on cluster `to`'s writer, for each pool of the active cluster's writer, as many
/// connections as that pool has open, and leaves them idle in their pools; how many were
/// opened. A login that fails stops that pool's warm-up (the sessions log in at the switch
/// as before).
pub(super) async fn warm<P: Protocol>(ctx: &Context, to: &str) -> usize {
    let (Some(to), Some(from)) = (
        ctx.topology.cluster(to),
        ctx.topology.cluster(&ctx.routing.load().active),
    ) else {
        return 0;
    };
    let timeout = ctx.config().raw.server.connect_timeout;
    let mut opened = 0;
    for (pool, counts) in P::pools(ctx).counts() {
        if pool.cluster != from.name
            || pool.instance != from.writer.addr
            || counts.in_use + counts.idle == 0
        {
            continue;
        }
        let Some((login, creds, mode)) = P::logins(ctx).get(&pool) else {
            continue;
        };
        let dial: Dial<'_, P> = Dial {
            cluster: &to,
            login: &login,
            creds: &creds,
            timeout,
            mode,
        };
        let mut leases: Vec<Lease<P::Conn>> = Vec::new();
        for _ in 0..(counts.in_use + counts.idle).min(MAX_WARM) {
            match checkout(ctx, dial, &to.writer).await {
                Ok(lease) => leases.push(lease),
                Err(e) => {
                    let key = key(&dial, &to.writer);
                    tracing::warn!(pool = ?key, error = %crate::error::chain(&e), "could not warm a pool of the new cluster");
                    break;
                }
            }
        }
        opened += leases.len();
        for lease in leases {
            lease.release(Release::Clean);
        }
    }
    opened
}

impl crate::cutover::Warm for Context {
    fn warm<'a>(
        &'a self,
        to: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = usize> + Send + 'a>> {
        use crate::config::Protocol as Wire;
        Box::pin(async move {
            match self.config().raw.server.protocol {
                Wire::Postgres => warm::<super::postgres::Postgres>(self, to).await,
                Wire::Mysql => warm::<super::mysql::Mysql>(self, to).await,
            }
        })
    }
}
