//! The TOML configuration: serde types, `load()` then `validate()`, secrets resolved from
//! the environment or files, and every problem reported with its key path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Wire protocol spoken to clients and backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub routing: RoutingConfig,
    pub cutover: Option<CutoverConfig>,
    /// Pass-through login for users not in `[[users]]` (see [`AuthConfig`]).
    pub auth: Option<AuthConfig>,
    pub fleet: Option<FleetConfig>,
}

/// Whether the client listener offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Never offer TLS.
    Disable,
    /// TLS when the client asks for it (requires `tls_cert` and `tls_key`).
    #[default]
    Prefer,
    /// Refuse clients that do not use TLS.
    Require,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub protocol: Protocol,
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls_mode: ClientTlsMode,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default = "defaults::max_client_connections")]
    pub max_client_connections: usize,
    /// Largest message accepted from a client, in bytes (checked before allocating).
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Time a client has to finish startup and authentication.
    #[serde(default = "defaults::auth_timeout", with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Time allowed to open and authenticate a backend connection.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a backend that refused a connection is skipped for reads.
    #[serde(default = "defaults::backend_retry", with = "humantime_serde")]
    pub backend_retry: Duration,
    /// On SIGTERM/SIGINT, how long sessions get to finish their transaction before the
    /// process exits.
    #[serde(default = "defaults::shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Which log lines are written: a level (`info`) or `tracing` directives
    /// (`info,switchyard::topology=debug`). `SWITCHYARD_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    #[serde(default)]
    pub log_format: LogFormat,
    /// How long a client holds a backend connection: for its whole session, or only while a
    /// transaction (or a statement outside one) runs on it. `[[routing.routes]]` may say
    /// otherwise for some clients.
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Most backend connections per pool (instance, backend user, database and login
    /// options); default: 20 in transaction mode, `max_client_connections` in session mode
    /// (see [`ServerConfig::pool_size`]).
    pub pool_size: Option<usize>,
    /// A pooled connection idle for longer is closed.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A pooled connection older than this is closed instead of being handed out again.
    #[serde(default = "defaults::max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How long a client waits for a pooled connection when its pool is full.
    #[serde(default = "defaults::checkout_timeout", with = "humantime_serde")]
    pub checkout_timeout: Duration,
    /// Most prepared statements kept on one backend connection; past it the least recently
    /// used one is closed on the server.
    #[serde(default = "defaults::max_prepared_statements")]
    pub max_prepared_statements: usize,
    /// Most session-state changes (`SET`, `USE` …) a session records to replay on its other
    /// connections, once those that later ones made pointless are dropped; a session with
    /// more stays on its writer connection (pin `too_many_settings`).
    #[serde(default = "defaults::max_session_settings")]
    pub max_session_settings: usize,
    /// Idle connections each pool that has been used keeps open (opened by the pool's
    /// sweep, never past `pool_size`), so that statements after a quiet period do not pay
    /// for logins.
    #[serde(default)]
    pub min_idle: usize,
    /// Most backend connections this proxy opens to one instance, across all its pools
    /// (every backend user and database); unset: no limit beyond the pools' own sizes.
    pub max_backend_connections: Option<usize>,
    /// Threads that run the sessions; unset: one per CPU (or `TOKIO_WORKER_THREADS`). With
    /// 1, everything runs on one thread (no hand-over between threads per statement).
    pub worker_threads: Option<usize>,
}

impl ServerConfig {
    /// `pool_size`, else, for pools of sessions in `mode`: in session mode each client
    /// holds its connections for its whole life, so `max_client_connections` (a smaller
    /// pool would make clients wait); in transaction mode 20.
    pub fn pool_size(&self, mode: PoolMode) -> usize {
        self.pool_size.unwrap_or(match mode {
            PoolMode::Session => self.max_client_connections,
            PoolMode::Transaction => defaults::TRANSACTION_POOL_SIZE,
        })
    }
}

/// How long a client holds a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// From login to the end of the session.
    Session,
    /// While a transaction, a statement outside one, or an extended-protocol batch runs;
    /// then the connection goes back to its pool for other clients. State that cannot move
    /// between connections keeps the client on its connection while it lasts.
    #[default]
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields (session, cluster, …) as keys.
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub token_env: Option<String>,
}

/// How the proxy checks a client's password. Each protocol has its own methods; `trust`
/// works with both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "mysql_native_password")]
    MysqlNativePassword,
    #[serde(rename = "caching_sha2_password")]
    CachingSha2Password,
    #[serde(rename = "trust")]
    Trust,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::MysqlNativePassword => "mysql_native_password",
            AuthMethod::CachingSha2Password => "caching_sha2_password",
            AuthMethod::Trust => "trust",
        }
    }

    /// What a user gets when `auth` is not set.
    pub fn default_for(protocol: Protocol) -> AuthMethod {
        match protocol {
            Protocol::Postgres => AuthMethod::ScramSha256,
            Protocol::Mysql => AuthMethod::MysqlNativePassword,
        }
    }

    fn fits(self, protocol: Protocol) -> bool {
        match self {
            AuthMethod::Trust => true,
            AuthMethod::ScramSha256 | AuthMethod::Md5 => protocol == Protocol::Postgres,
            AuthMethod::MysqlNativePassword | AuthMethod::CachingSha2Password => {
                protocol == Protocol::Mysql
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password, or a stored verifier (`SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`).
    pub password: Option<String>,
    pub password_env: Option<String>,
    /// Default: scram-sha-256 (PostgreSQL), mysql_native_password (MySQL).
    pub auth: Option<AuthMethod>,
    /// Role used on the backend; defaults to `name`.
    pub backend_user: Option<String>,
    /// Password used on the backend; defaults to the client's password.
    pub backend_password: Option<String>,
    pub backend_password_env: Option<String>,
}

/// TLS towards a backend, with libpq's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    #[default]
    Disable,
    /// Encrypt, but do not verify the certificate.
    Require,
    /// Encrypt and verify the chain against `ca_file` (or the web PKI roots), not the host name.
    VerifyCa,
    /// Encrypt and verify the chain and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub writer: String,
    #[serde(default)]
    pub readers: Vec<String>,
    #[serde(default)]
    pub tls: BackendTlsMode,
    /// CA bundle (PEM) used to verify backend certificates, e.g. the RDS global bundle.
    pub ca_file: Option<PathBuf>,
    /// Where instances come from besides `writer` and `readers` (see [`DiscoveryConfig`]).
    pub discovery: Option<DiscoveryConfig>,
    /// Account for health checks and the Aurora topology query; without it health checks
    /// only test that a TCP connection opens.
    pub monitor_user: Option<String>,
    pub monitor_password: Option<String>,
    pub monitor_password_env: Option<String>,
    /// Database the monitor account connects to (PostgreSQL default: `postgres`).
    pub monitor_database: Option<String>,
    #[serde(
        default = "topology_defaults::health_interval",
        with = "humantime_serde"
    )]
    pub health_interval: Duration,
    /// Consecutive failed checks before an instance is taken out of use.
    #[serde(default = "topology_defaults::fail_after")]
    pub fail_after: u32,
    /// Consecutive passed checks before an instance is used (again).
    #[serde(default = "topology_defaults::recover_after")]
    pub recover_after: u32,
    /// A reader whose replication lag is above this gets no new reads until it catches up.
    #[serde(default = "topology_defaults::max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
    /// A reader that just became usable ramps from 10% to its full weight over this long;
    /// `"0s"` turns the ramp off.
    #[serde(default = "topology_defaults::slow_start", with = "humantime_serde")]
    pub slow_start: Duration,
    /// Weight of a reader by its `host:port` (static, DNS or Aurora label); others weigh 1.
    #[serde(default)]
    pub reader_weights: BTreeMap<String, u32>,
    /// During a writer failover, work for the writer waits this long for a usable writer
    /// (a promoted replica, or the old writer back) before it fails with a clear error.
    #[serde(
        default = "topology_defaults::failover_timeout",
        with = "humantime_serde"
    )]
    pub failover_timeout: Duration,
}

mod auth;
mod cutover;
mod discovery;
mod fleet;
mod live;
mod routing;
mod users;

pub use auth::{AuthConfig, AuthQuery, DEFAULT_MYSQL_QUERY, DEFAULT_POSTGRES_QUERY};
pub use live::fixed_changes;

pub use cutover::{CatchUp, CutoverConfig, Fence};
pub use fleet::FleetConfig;
pub use routing::{Consistency, RouteConfig, RoutingConfig};

pub use discovery::{DEFAULT_FAILOVER_TIMEOUT, DiscoveryConfig, DiscoveryKind, monitor_password};
use discovery::{topology_defaults, validate_topology};

mod defaults {
    use std::time::Duration;
    pub fn max_client_connections() -> usize {
        10_000
    }
    pub fn max_message_bytes() -> usize {
        64 * 1024 * 1024
    }
    pub fn auth_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn backend_retry() -> Duration {
        Duration::from_secs(5)
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(60 * 60)
    }
    pub fn max_prepared_statements() -> usize {
        100
    }
    pub fn max_session_settings() -> usize {
        256
    }
    /// `pool_size` in transaction mode when unset.
    pub const TRANSACTION_POOL_SIZE: usize = 20;
    pub fn checkout_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
}

/// One problem found in a config file, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A user with every secret resolved.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub auth: AuthMethod,
    pub secret: Secret,
    pub backend_user: String,
    pub backend_password: Option<String>,
}

/// What the proxy knows of a client's password.
#[derive(Debug, Clone)]
pub enum Secret {
    None,
    Plain(String),
    /// A parsed `SCRAM-SHA-256$...` verifier.
    ScramVerifier(String),
}

/// A loaded, validated configuration with secrets resolved.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: Config,
    pub users: Vec<User>,
    pub admin_token: Option<String>,
    /// `[auth]`, resolved: how users not in `[[users]]` are looked up, if they may log in.
    pub auth_query: Option<AuthQuery>,
}

impl Validated {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Validated, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    validate(raw, &|name| std::env::var(name).ok()).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Checks everything that serde cannot and resolves secrets; `env` looks up variables.
pub fn validate(
    raw: Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Validated, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });

    validate_server(&raw, &mut problem);

    let admin_token = match &raw.admin {
        None => None,
        Some(admin) => resolve_secret(&admin.token, &admin.token_env, "token", env).unwrap_or_else(
            |(key, message)| {
                problem(format!("admin.{key}"), message);
                None
            },
        ),
    };

    let users = users::validate_users(&raw, env, &mut problem);
    let auth_query = auth::validate_auth(&raw, env, &mut problem);
    if users.is_empty() && auth_query.is_none() {
        problem(
            "users".into(),
            "no [[users]] entry and no [auth] query_user: no client could log in".into(),
        );
    }

    validate_clusters(&raw, env, &mut problem);
    routing::validate_routing(&raw, &mut problem);
    cutover::validate_cutover(&raw, &mut problem);
    fleet::validate_fleet(&raw, &mut problem);

    if problems.is_empty() {
        Ok(Validated {
            raw,
            users,
            admin_token,
            auth_query,
        })
    } else {
        Err(problems)
    }
}

/// `[server]`: client TLS files, message size, log filter, connection limit.
fn validate_server(raw: &Config, problem: &mut dyn FnMut(String, String)) {
    match (&raw.server.tls_cert, &raw.server.tls_key) {
        (Some(cert), Some(key)) => {
            for (key_path, file) in [("server.tls_cert", cert), ("server.tls_key", key)] {
                if !file.is_file() {
                    problem(
                        key_path.into(),
                        format!("file {} does not exist", file.display()),
                    );
                }
            }
        }
        (None, None) if raw.server.tls_mode == ClientTlsMode::Require => problem(
            "server.tls_mode".into(),
            "\"require\" needs server.tls_cert and server.tls_key".into(),
        ),
        (None, None) => {}
        _ => problem(
            "server.tls_cert".into(),
            "tls_cert and tls_key must be set together".into(),
        ),
    }
    if raw.server.max_message_bytes < 1024 {
        problem(
            "server.max_message_bytes".into(),
            "must be at least 1024".into(),
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.server.log_level) {
        problem(
            "server.log_level".into(),
            format!("not a log level or filter: {e}"),
        );
    }
    if raw.server.max_client_connections == 0 {
        problem(
            "server.max_client_connections".into(),
            "must be at least 1".into(),
        );
    }
    validate_pool(&raw.server, problem);
}

/// What `switchyard check` should point out without refusing the config.
pub fn warnings(raw: &Config) -> Vec<String> {
    let mut out = fleet::warnings(raw);
    out.extend(pool_budget_warning(raw));
    out
}

/// A `max_backend_connections` smaller than what the pools of one instance may open
/// together: `pool_size` times the distinct backend users of `[[users]]` (at least one).
/// Not an error: the pools then share the budget, and a checkout over it waits.
fn pool_budget_warning(raw: &Config) -> Option<String> {
    let budget = raw.server.max_backend_connections?;
    let users: std::collections::BTreeSet<&str> = raw
        .users
        .iter()
        .map(|u| u.backend_user.as_deref().unwrap_or(&u.name))
        .collect();
    let size = raw.server.pool_size(raw.server.pool_mode);
    let pools = size.saturating_mul(users.len().max(1));
    (pools > budget).then(|| {
        format!(
            "server.max_backend_connections: the pools of one instance may open {pools} \
             connections (pool_size {size} x {} backend user(s)) but \
             max_backend_connections is {budget}: checkouts over the budget wait up to \
             checkout_timeout, then fail",
            users.len().max(1)
        )
    })
}

/// `[server]` pool keys: a pool of no connections, or timeouts of zero, would refuse every
/// client.
fn validate_pool(server: &ServerConfig, problem: &mut dyn FnMut(String, String)) {
    if server.worker_threads == Some(0) {
        problem(
            "server.worker_threads".into(),
            "must be at least 1 (leave it out for one per CPU)".into(),
        );
    }
    if server.max_prepared_statements == 0 {
        problem(
            "server.max_prepared_statements".into(),
            "must be at least 1".into(),
        );
    }
    if server.max_session_settings == 0 {
        problem(
            "server.max_session_settings".into(),
            "must be at least 1".into(),
        );
    }
    if server.pool_size == Some(0) {
        problem(
            "server.pool_size".into(),
            "must be at least 1 (leave it out for the default: 20 in transaction mode, max_client_connections in session mode)".into(),
        );
    }
    if server.max_backend_connections == Some(0) {
        problem(
            "server.max_backend_connections".into(),
            "must be at least 1 (leave it out for no limit)".into(),
        );
    }
    for (key, value) in [
        ("idle_timeout", server.idle_timeout),
        ("max_lifetime", server.max_lifetime),
        ("checkout_timeout", server.checkout_timeout),
    ] {
        if value.is_zero() {
            problem(format!("server.{key}"), "must be longer than 0s".into());
        }
    }
}

/// `[clusters.NAME]`: at least one, each with its discovery, addresses and CA file.
fn validate_clusters(
    raw: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    problem: &mut dyn FnMut(String, String),
) {
    if raw.clusters.is_empty() {
        problem(
            "clusters".into(),
            "at least one [clusters.NAME] is needed".into(),
        );
    }
    for (name, c) in &raw.clusters {
        let at = |key: &str| format!("clusters.{name}.{key}");
        validate_topology(name, c, env, problem);
        if let Err(e) = parse_host_port(&c.writer) {
            problem(at("writer"), e);
        }
        for (j, r) in c.readers.iter().enumerate() {
            if let Err(e) = parse_host_port(r) {
                problem(at(&format!("readers[{j}]")), e);
            }
        }
        if let Some(ca) = &c.ca_file {
            if !ca.is_file() {
                problem(
                    at("ca_file"),
                    format!("file {} does not exist", ca.display()),
                );
            }
            if c.tls == BackendTlsMode::Disable || c.tls == BackendTlsMode::Require {
                problem(
                    at("ca_file"),
                    "is only used with tls = \"verify-ca\" or \"verify-full\"".into(),
                );
            }
        }
    }
}

/// A secret given inline (`key`) or through an environment variable (`key_env`), never
/// both. `Err` holds the key the problem concerns and what is wrong with it.
pub(crate) fn resolve_secret(
    inline: &Option<String>,
    var: &Option<String>,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, (String, String)> {
    match (inline, var) {
        (Some(_), Some(_)) => Err((key.to_owned(), format!("set {key} or {key}_env, not both"))),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(name)) => match env(name) {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err((
                format!("{key}_env"),
                format!("environment variable {name} is not set"),
            )),
        },
        (None, None) => Ok(None),
    }
}

/// Splits `host:port` (or `[v6]:port`); the port is required.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?} has an invalid port"))?;
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [server]
        protocol = "postgres"
        listen = "127.0.0.1:6432"

        [admin]
        listen = "127.0.0.1:9187"
        token = "change-me"

        [[users]]
        name = "app"
        password = "app-secret"

        [clusters.old]
        writer = "127.0.0.1:5432"
        readers = ["127.0.0.1:5433", "127.0.0.1:5434"]

        [routing]
        active = "old"
    "#;

    fn check(text: &str) -> Result<Validated, Vec<Problem>> {
        let raw: Config = toml::from_str(text).expect("parse");
        validate(raw, &|name| (name == "SET_VAR").then(|| "value".to_owned()))
    }

    #[test]
    fn the_readme_example_is_valid() {
        let v = check(EXAMPLE).expect("valid");
        let app = v.user("app").expect("user");
        assert_eq!(app.backend_user, "app");
        assert_eq!(app.backend_password.as_deref(), Some("app-secret"));
        assert_eq!(v.admin_token.as_deref(), Some("change-me"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = EXAMPLE
            .replace("active = \"old\"", "active = \"new\"")
            .replace("\"127.0.0.1:5433\"", "\"127.0.0.1\"")
            .replace(
                "password = \"app-secret\"",
                "password_env = \"MISSING_VAR\"",
            );
        let problems = check(&text).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "users[0].password_env",
                "users[0].password",
                "clusters.old.readers[0]",
                "routing.active"
            ]
        );
    }

    #[test]
    fn pool_keys_default_and_refuse_zero() {
        let v = check(EXAMPLE).expect("valid");
        let server = &v.raw.server;
        assert_eq!(server.pool_mode, PoolMode::Transaction);
        assert_eq!(server.pool_size(PoolMode::Transaction), 20);
        assert_eq!(
            server.pool_size(PoolMode::Session),
            server.max_client_connections
        );
        assert_eq!(server.checkout_timeout, Duration::from_secs(30));
        let text = EXAMPLE.replace(
            "listen = \"127.0.0.1:6432\"",
            "listen = \"127.0.0.1:6432\"\npool_size = 0\nidle_timeout = \"90s\"\n\
             checkout_timeout = \"0s\"",
        );
        let problems = check(&text).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["server.pool_size", "server.checkout_timeout"]);
        let text = text
            .replace("pool_size = 0", "pool_size = 7")
            .replace("\"0s\"", "\"1s\"");
        let server = check(&text).expect("valid").raw.server;
        assert_eq!(server.pool_size(PoolMode::Session), 7);
        assert_eq!(server.pool_size(PoolMode::Transaction), 7);
        assert_eq!(server.idle_timeout, Duration::from_secs(90));
    }

    #[test]
    fn backend_budget_is_checked_against_the_pools() {
        let v = check(EXAMPLE).expect("valid");
        assert_eq!(v.raw.server.min_idle, 0);
        assert_eq!(v.raw.server.max_backend_connections, None);
        assert!(warnings(&v.raw).is_empty());
        let with = |keys: &str| {
            EXAMPLE.replace(
                "listen = \"127.0.0.1:6432\"",
                &format!("listen = \"127.0.0.1:6432\"\n{keys}"),
            )
        };
        let problems = check(&with("max_backend_connections = 0")).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["server.max_backend_connections"]);
        let problems = check(&with("worker_threads = 0")).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["server.worker_threads"]);
        assert_eq!(
            check(&with("worker_threads = 1"))
                .expect("valid")
                .raw
                .server
                .worker_threads,
            Some(1)
        );
        // Two backend users (a second client user logging in as "app" adds none).
        let users = "[[users]]\nname = \"b\"\npassword = \"x\"\n\
                     [[users]]\nname = \"c\"\npassword = \"x\"\nbackend_user = \"app\"\n\
                     [clusters.old]";
        let text = with("pool_size = 10\nmax_backend_connections = 15\nmin_idle = 2")
            .replace("[clusters.old]", users);
        let v = check(&text).expect("a budget below the pools is valid");
        assert_eq!(v.raw.server.min_idle, 2);
        let warned = warnings(&v.raw);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("20") && warned[0].contains("is 15"),
            "names both numbers: {}",
            warned[0]
        );
        let enough = text.replace(
            "max_backend_connections = 15",
            "max_backend_connections = 20",
        );
        assert!(warnings(&check(&enough).expect("valid").raw).is_empty());
    }

    #[test]
    fn env_secrets_resolve() {
        let text = EXAMPLE.replace("password = \"app-secret\"", "password_env = \"SET_VAR\"");
        let v = check(&text).expect("valid");
        assert_eq!(v.users[0].backend_password.as_deref(), Some("value"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = EXAMPLE.replace("[routing]", "[routing]\nactiv = 1");
        let err = toml::from_str::<Config>(&text).expect_err("unknown key");
        assert!(err.to_string().contains("activ"), "{err}");
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(parse_host_port("db:5432"), Ok(("db".into(), 5432)));
        assert_eq!(parse_host_port("[::1]:5432"), Ok(("::1".into(), 5432)));
        assert!(parse_host_port("db").is_err());
        assert!(parse_host_port(":5432").is_err());
        assert!(parse_host_port("db:99999").is_err());
    }
}
