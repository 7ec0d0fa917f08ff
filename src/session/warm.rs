//! Warming the new cluster's pools before a cutover's switch: during the check (the
//! preflight), each pool of the active cluster's writer gets as many connections opened on
//! the new cluster's writer, with the same login, as it has open (in use, or idle between
//! transactions in transaction mode); they wait idle, and the
//! sessions that move at the switch take them instead of logging in then. And the same
//! logins let the pools' sweep keep `min_idle` connections open ([`Refill`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::Context;
use super::flow::{Dial, Protocol, checkout, key};
use crate::backend::Credentials;
use crate::config::PoolMode;
use crate::pool::{self, Key, Lease, Release};
use crate::topology::TopologyHandle;

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

/// How the pools' sweep opens a connection without a session (to keep `min_idle` idle
/// ones): with the login the pool's sessions used, on the instance of the current topology,
/// under the live config.
pub(super) struct Refill<P: Protocol> {
    pub live: Arc<ArcSwap<super::Live>>,
    pub topology: Arc<TopologyHandle>,
    pub logins: Arc<Logins<P>>,
}

impl<P: Protocol> pool::Opener<P::Conn> for Refill<P> {
    fn settings(&self, key: &Key) -> Option<pool::Settings> {
        let (_, _, mode) = self.logins.get(key)?;
        let config = Arc::clone(&self.live.load().config);
        Some(pool::Settings::from_config(&config.raw.server, mode))
    }

    fn open(
        &self,
        key: &Key,
    ) -> Pin<Box<dyn Future<Output = Result<P::Conn, pool::OpenError>> + Send>> {
        let login = self.logins.get(key);
        let cluster = self.topology.cluster(&key.cluster);
        let timeout = self.live.load().config.raw.server.connect_timeout;
        let addr = key.instance.clone();
        Box::pin(async move {
            let (login, creds, mode) = login.ok_or("no session used this login")?;
            let cluster = cluster.ok_or("the cluster is gone")?;
            let instance = std::iter::once(&cluster.writer)
                .chain(&cluster.readers)
                .find(|i| i.addr == addr)
                .cloned()
                .ok_or("the instance left the cluster")?;
            let dial: Dial<'_, P> = Dial {
                cluster: &cluster,
                login: &login,
                creds: &creds,
                timeout,
                mode,
            };
            P::connect(dial, &instance)
                .await
                .map_err(|e| pool::OpenError::login(&e))
        })
    }
}
