//! Client sessions: one task per client connection, for each wire protocol, and the
//! context they all share.

mod auth_query;
pub mod error;
mod failover;
pub mod flow;
#[cfg(test)]
mod flow_tests;
mod holds;
mod latch;
mod migration;
pub mod mysql;
mod pins;
pub mod postgres;
mod readers;
mod replays;
pub(crate) mod warm;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use self::postgres::cancel::CancelRegistry;
use crate::config::{Protocol, Secret, User, Validated};
use crate::cutover::Routing;
use crate::pool::Pools;
use crate::protocol::postgres::scram::Verifier;
use crate::protocol::postgres::scram_client::SaltedPasswords;
use crate::shutdown::Shutdown;
use crate::topology::TopologyHandle;

/// What every session shares.
pub struct Context {
    /// The reloadable part: the current config and what is derived from its users. The one
    /// owner of it (see [`Context::reconfigure`]); sessions read the snapshot current at
    /// each use, so a reload reaches open sessions at their next step.
    live: Arc<ArcSwap<Live>>,
    pub topology: Arc<TopologyHandle>,
    /// The active cluster and each cluster's mode (read-write, read-only, paused).
    pub routing: Arc<Routing>,
    pub cancels: Arc<CancelRegistry>,
    /// Every live MySQL session, for `KILL` aimed at one of them.
    pub mysql_kills: Arc<mysql::KillRegistry>,
    /// Sessions pinned to their writer connection now, by reason (for `/status`).
    pub pins: Arc<flow::Pins>,
    /// The greetings MySQL writers sent, for greetings of the proxy's own.
    pub mysql_greetings: mysql::Greetings,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Salted passwords of backend SCRAM logins, so a login costs no PBKDF2 after the first.
    pub salted: Arc<SaltedPasswords>,
    /// Made-up verifiers for unknown users come from this.
    pub(crate) mock: auth_query::MockSecret,
    /// Which user-defined functions only read, per cluster, database and backend user.
    pub catalog: Arc<crate::catalog::Catalog>,
    /// The backend connections kept between clients, per protocol (a proxy serves one).
    pub postgres_pools: Pools<crate::backend::postgres::BackendConn>,
    pub mysql_pools: Pools<crate::backend::mysql::MysqlConn>,
    /// The logins sessions use, per protocol, to warm a new cluster's pools at a cutover.
    postgres_logins: Arc<warm::Logins<postgres::Postgres>>,
    mysql_logins: Arc<warm::Logins<mysql::Mysql>>,
    /// Dropped with the context, which ends the pools' sweep task.
    _pools_sweep: crate::shutdown::Trigger,
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

/// A session's own reference to the config, made current again only once a reload
/// replaced it ([`Context::config_now`]): read at every statement, it costs a flag read
/// where a load from the live config costs about a hundred instructions.
pub struct HeldConfig(Arc<Live>);

/// The config as of now, borrowed from the live one (see [`Context::config`]).
pub struct Config(arc_swap::Guard<Arc<Live>>);

impl std::ops::Deref for Config {
    type Target = Validated;

    fn deref(&self) -> &Validated {
        &self.0.config
    }
}

/// One config, the SCRAM verifiers computed from its plain passwords (4096 PBKDF2 rounds
/// each, so once per config, not per login) and its `[auth]` lookup.
struct Live {
    config: Arc<Validated>,
    /// Set once a reload made another config the live one.
    superseded: crate::topology::Superseded,
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
            superseded: Default::default(),
            verifiers,
            lookup,
        }
    }
}

impl Context {
    /// How long a session of client `user` on `database` holds its backend connections:
    /// its route's `pool_mode`, else `server.pool_mode`.
    pub fn pool_mode(&self, user: &str, database: Option<&str>) -> crate::config::PoolMode {
        let config = self.config();
        let server = config.raw.server.pool_mode;
        config.raw.routing.pool_mode_for(user, database, server)
    }

    pub fn new(
        config: Arc<Validated>,
        topology: Arc<TopologyHandle>,
        routing: Arc<Routing>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Context {
        let (pools_sweep, sweep) = crate::shutdown::channel();
        let live = Arc::new(ArcSwap::from_pointee(Live::new(config)));
        let postgres_logins = Arc::new(warm::Logins::default());
        let mysql_logins = Arc::new(warm::Logins::default());
        let postgres_pools = Pools::new(sweep.clone());
        postgres_pools.set_opener(Arc::new(warm::Refill {
            live: Arc::clone(&live),
            topology: Arc::clone(&topology),
            logins: Arc::clone(&postgres_logins),
        }));
        let mysql_pools = Pools::new(sweep);
        mysql_pools.set_opener(Arc::new(warm::Refill {
            live: Arc::clone(&live),
            topology: Arc::clone(&topology),
            logins: Arc::clone(&mysql_logins),
        }));
        Context {
            live,
            topology,
            routing,
            cancels: Arc::new(CancelRegistry::default()),
            mysql_kills: Arc::default(),
            mysql_greetings: mysql::Greetings::default(),
            pins: Arc::default(),
            tls,
            salted: Arc::default(),
            mock: auth_query::MockSecret::random(),
            catalog: Arc::default(),
            postgres_pools,
            mysql_pools,
            postgres_logins,
            mysql_logins,
            _pools_sweep: pools_sweep,
        }
    }

    /// Every backend connection pool with its counts, for `/status`: one entry per cluster,
    /// instance, backend user and database (pools that differ only in login options are
    /// added up).
    pub fn pool_status(&self) -> serde_json::Value {
        use std::collections::BTreeMap;
        let mut all: BTreeMap<(String, String, String, String), crate::pool::Counts> =
            BTreeMap::new();
        let counts = self.postgres_pools.counts().into_iter();
        for (key, c) in counts.chain(self.mysql_pools.counts()) {
            let sum = all
                .entry((key.cluster, key.instance, key.user, key.database))
                .or_default();
            sum.idle += c.idle;
            sum.in_use += c.in_use;
            sum.opening += c.opening;
            sum.resetting += c.resetting;
            sum.waiting += c.waiting;
        }
        let pools: Vec<_> = all
            .into_iter()
            .map(|((cluster, instance, user, database), c)| {
                serde_json::json!({
                    "cluster": cluster,
                    "instance": instance,
                    "user": user,
                    "database": database,
                    "idle": c.idle,
                    "in_use": c.in_use,
                    "opening": c.opening,
                    "resetting": c.resetting,
                    "waiting": c.waiting,
                })
            })
            .collect();
        serde_json::Value::Array(pools)
    }

    /// The sessions pinned to their writer connection now, by reason, for `/status`.
    pub fn pin_status(&self) -> serde_json::Value {
        let pins = self
            .pins
            .counts()
            .map(|(reason, n)| (reason.to_owned(), n.into()));
        serde_json::Value::Object(pins.collect())
    }

    pub(crate) fn logins_postgres(&self) -> &warm::Logins<postgres::Postgres> {
        &self.postgres_logins
    }

    pub(crate) fn logins_mysql(&self) -> &warm::Logins<mysql::Mysql> {
        &self.mysql_logins
    }

    /// The config as of now (the last one loaded or reloaded), to read at once: a guard
    /// that takes no reference count (every session reads the config several times per
    /// transaction, and a count shared by all of them would be written by every core).
    /// Not to be held across an await: [`Context::config_arc`] is the one to keep.
    pub fn config(&self) -> Config {
        Config(self.live.load())
    }

    /// The config as of now, for a session to keep (see [`HeldConfig`]).
    pub fn held_config(&self) -> HeldConfig {
        HeldConfig(self.live.load_full())
    }

    /// The config as of now, through `held`, which is made current first if a reload
    /// replaced it.
    pub fn config_now<'a>(&self, held: &'a mut HeldConfig) -> &'a Validated {
        if held.0.superseded.is_set() {
            *held = self.held_config();
        }
        &held.0.config
    }

    /// The config as of now, to keep.
    pub fn config_arc(&self) -> Arc<Validated> {
        Arc::clone(&self.live.load().config)
    }

    /// Makes `config` the current one for every session: new logins check its users and
    /// passwords, and open sessions use its limits and routes from their next statement.
    pub fn reconfigure(&self, config: Arc<Validated>) {
        let before = self.live.swap(Arc::new(Live::new(config)));
        before.superseded.mark();
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
            config: self.config_arc(),
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

/// A rarely taken path's future, run out of line: behind a box and a vtable, its code is
/// not inlined into the hot state machine that awaits it, nor its state kept in that
/// machine's. A session's hot path spans more code than a core's instruction cache holds
/// (benches/RESULTS.md, "Build profile"): what it does not run every statement is kept
/// out of the way. Costs an allocation each time the path is taken.
pub(crate) fn cold<'a, T>(
    future: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(future)
}
