//! Client sessions: one task per client connection, for each wire protocol, and the
//! context they all share.

mod auth_query;
mod failover;
#[cfg(test)]
mod flow_tests;
pub mod mysql;
pub mod postgres;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use self::postgres::cancel::CancelRegistry;
use crate::config::{Protocol, Secret, User, Validated};
use crate::cutover::Routing;
use crate::protocol::postgres::scram::Verifier;
use crate::protocol::postgres::scram_client::SaltedPasswords;
use crate::shutdown::Shutdown;
use crate::topology::TopologyHandle;

/// What every session shares.
pub struct Context {
    /// The reloadable part: the current config and what is derived from its users. The one
    /// owner of it (see [`Context::reconfigure`]); sessions read the snapshot current at
    /// each use, so a reload reaches open sessions at their next step.
    live: ArcSwap<Live>,
    pub topology: Arc<TopologyHandle>,
    /// The active cluster and each cluster's mode (read-write, read-only, paused).
    pub routing: Arc<Routing>,
    pub cancels: Arc<CancelRegistry>,
    /// Every live MySQL session, for `KILL` aimed at one of them.
    pub mysql_kills: Arc<mysql::KillRegistry>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Salted passwords of backend SCRAM logins, so a login costs no PBKDF2 after the first.
    pub salted: Arc<SaltedPasswords>,
    /// Made-up verifiers for unknown users come from this.
    pub(crate) mock: auth_query::MockSecret,
    /// Which user-defined functions only read, per cluster, database and backend user.
    pub catalog: Arc<crate::catalog::Catalog>,
}

/// Where the user a client logs in as comes from ([`Context::find_user`]).
pub(crate) enum FoundUser {
    /// In `[[users]]`.
    Configured(User),
    /// Found by the `[auth]` query: the secret its database stores, as text.
    Stored(Arc<str>),
    /// Nowhere: the client goes through the exchange against a made-up secret.
    Unknown,
}

/// One config, the SCRAM verifiers computed from its plain passwords (4096 PBKDF2 rounds
/// each, so once per config, not per login) and its `[auth]` lookup.
struct Live {
    config: Arc<Validated>,
    verifiers: HashMap<String, Verifier>,
    /// `[auth]`: verifiers of users not in `[[users]]`, looked up on the writer (its cache
    /// starts empty with each config).
    lookup: Option<auth_query::Lookup>,
}

impl Live {
    fn new(config: Arc<Validated>) -> Live {
        let verifiers = config
            .users
            .iter()
            .filter_map(|u| match &u.secret {
                Secret::Plain(p) => Some((u.name.clone(), Verifier::from_password(p))),
                Secret::ScramVerifier(v) => Verifier::parse(v).map(|v| (u.name.clone(), v)),
                Secret::None => None,
            })
            .collect();
        let lookup = auth_query::Lookup::new(&config);
        Live {
            config,
            verifiers,
            lookup,
        }
    }
}

impl Context {
    pub fn new(
        config: Arc<Validated>,
        topology: Arc<TopologyHandle>,
        routing: Arc<Routing>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Context {
        Context {
            live: ArcSwap::from_pointee(Live::new(config)),
            topology,
            routing,
            cancels: Arc::new(CancelRegistry::default()),
            mysql_kills: Arc::default(),
            tls,
            salted: Arc::default(),
            mock: auth_query::MockSecret::random(),
            catalog: Arc::default(),
        }
    }

    /// The config as of now (the last one loaded or reloaded).
    pub fn config(&self) -> Arc<Validated> {
        Arc::clone(&self.live.load().config)
    }

    /// Makes `config` the current one for every session: new logins check its users and
    /// passwords, and open sessions use its limits and routes from their next statement.
    pub fn reconfigure(&self, config: Arc<Validated>) {
        self.live.store(Arc::new(Live::new(config)));
    }

    /// Who logs in as `name`: a `[[users]]` entry, else a user the `[auth]` query finds on
    /// the active cluster's writer (with the secret it stores, as text), else nobody.
    pub(crate) async fn find_user(&self, name: &str) -> Result<FoundUser, auth_query::LookupError> {
        if let Some(user) = self.config().user(name) {
            return Ok(FoundUser::Configured(user.clone()));
        }
        Ok(match self.look_up(name).await? {
            Some(stored) => FoundUser::Stored(stored),
            None => FoundUser::Unknown,
        })
    }

    /// The stored verifier of `user`, who is not in `[[users]]`, from the active cluster's
    /// writer (or the cache); `None` when there is no such user or no `[auth]` section.
    async fn look_up(&self, user: &str) -> Result<Option<Arc<str>>, auth_query::LookupError> {
        let live = self.live.load_full();
        let Some(lookup) = &live.lookup else {
            return Ok(None);
        };
        let routing = self.routing.load();
        let topology = self.topology.load();
        let Some(cluster) = topology.clusters.get(&routing.active) else {
            return Ok(None);
        };
        let ca_file = live
            .config
            .raw
            .clusters
            .get(&routing.active)
            .and_then(|c| c.ca_file.as_deref());
        let timeout = live.config.raw.server.connect_timeout;
        lookup.verifier(user, cluster, ca_file, timeout).await
    }

    pub(crate) fn verifier(&self, user: &User) -> Option<Verifier> {
        self.live.load().verifiers.get(&user.name).cloned()
    }

    /// A session's view of the function catalog, as its backend login sees `database`.
    pub(crate) fn functions(
        &self,
        creds: &crate::backend::Credentials,
        database: Option<String>,
        shutdown: &Shutdown,
    ) -> crate::catalog::SessionFunctions {
        let login = crate::catalog::Login {
            config: self.config(),
            user: creds.user.clone(),
            password: creds.password.clone(),
            database,
        };
        crate::catalog::SessionFunctions::new(Arc::clone(&self.catalog), login, shutdown.clone())
    }
}

/// Serves one client connection with the configured protocol until it ends.
pub async fn run(tcp: TcpStream, ctx: Arc<Context>, shutdown: Shutdown) {
    match ctx.config().raw.server.protocol {
        Protocol::Postgres => postgres::run(tcp, ctx, shutdown).await,
        Protocol::Mysql => mysql::run(tcp, ctx, shutdown).await,
    }
}

/// Records how a session ended: counts its kind of error, and logs anything but a normal
/// end (the client left, or the proxy shut down).
pub(crate) fn report_end(
    kind: Option<crate::metrics::ErrorKind>,
    normal: bool,
    error: &dyn std::error::Error,
) {
    if let Some(kind) = kind {
        crate::metrics::error(kind);
    }
    if !normal {
        tracing::info!(error = %crate::error::chain(error), "session ended");
    }
}

/// How often, at most, a session between transactions asks whether its reader is one too
/// many (see [`ReaderSpread`]).
const RESPREAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a session's reader choice in step with the cluster: a session holds one reader
/// connection for many queries, so without this a long-lived pooled connection would never
/// reach a replica added after it opened. At most once per [`RESPREAD_EVERY`], and only on
/// a coin flip (so sessions seeing the same imbalance do not all move at once), it asks
/// [`crate::topology::rebalance_target`] whether moving evens the spread of sessions over
/// the readers by weight.
#[derive(Debug)]
pub(crate) struct ReaderSpread {
    last: std::time::Instant,
}

impl ReaderSpread {
    pub(crate) fn new() -> ReaderSpread {
        ReaderSpread {
            last: std::time::Instant::now(),
        }
    }

    /// Between transactions, for a session holding a reader on `current`: whether to leave
    /// it — because discovery removed it or health checks took it out (scale-in without
    /// errors), or because moving evens the spread — and where to, when that was chosen.
    pub(crate) fn leave(
        &mut self,
        current: &crate::topology::Instance,
        readers: &[Arc<crate::topology::Instance>],
        now: std::time::Instant,
    ) -> Leave {
        if !current.load.status().is_usable() {
            crate::metrics::reader_drained(&current.cluster);
            return Leave::For(None);
        }
        if now.saturating_duration_since(self.last) < RESPREAD_EVERY {
            return Leave::Stay;
        }
        self.last = now;
        if !rand::random::<bool>() {
            return Leave::Stay;
        }
        match crate::topology::rebalance_target(current, readers, now) {
            Some(to) => {
                crate::metrics::reader_respread(&current.cluster);
                Leave::For(Some(to))
            }
            None => Leave::Stay,
        }
    }
}

/// What [`ReaderSpread::leave`] decided.
pub(crate) enum Leave {
    Stay,
    /// Drop the reader; open the one given next (else pick as usual).
    For(Option<Arc<crate::topology::Instance>>),
}

/// Opens a connection to a reader for a session: `next` first when given, else weighted
/// power-of-two picks among the usable `readers`. A reader that refuses is skipped for
/// `retry` (by every session) and the next one tried. `None` when no reader can be used
/// now (reads then go to the writer).
pub(crate) async fn open_reader<C, E, Fut>(
    readers: &[Arc<crate::topology::Instance>],
    mut next: Option<Arc<crate::topology::Instance>>,
    retry: std::time::Duration,
    now: std::time::Instant,
    mut connect: impl FnMut(Arc<crate::topology::Instance>) -> Fut,
) -> Option<C>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<C, E>>,
{
    for _ in 0..readers.len() {
        let instance = next.take().or_else(|| {
            crate::topology::pick_reader(readers, now, None, |n| rand::random_range(0..n))
        })?;
        match connect(Arc::clone(&instance)).await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                crate::metrics::error(crate::metrics::ErrorKind::BackendConnect);
                tracing::warn!(reader = %instance.addr, error = %e, "reader unusable; skipping it for {retry:?}");
                instance.load.mark_down(now, retry);
            }
        }
    }
    None
}
