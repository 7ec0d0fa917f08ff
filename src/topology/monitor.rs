//! The control-plane tasks of each cluster: discovery (a `dns` or `aurora` round every
//! interval, publishing a new snapshot only when something changed) and health checks
//! (every instance, every `health_interval`: role, lag, and the lag ceiling's verdict).
//! Each ends when shutdown is triggered.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::TokioResolver;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::aurora::{self, AuroraError};
use super::dns::{self, DnsError};
use super::health::{HealthState, Probe, Status, Thresholds};
use super::lag::{LagMemory, with_lag};
use super::probe::{self, Answer, MonitorLogin, MonitorTls, ProbeError, Target};
use super::{Cluster, Instance, Role, Seen, TopologyHandle, next_cluster};
use crate::config::{
    BackendTlsMode, ClusterConfig, DiscoveryConfig, DiscoveryKind, Protocol, Validated,
    monitor_password, parse_host_port,
};
use crate::metrics;
use crate::shutdown::Shutdown;

/// A task to spawn; it ends when shutdown is triggered.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cluster {cluster}: DNS resolver")]
    Resolver {
        cluster: String,
        #[source]
        source: DnsError,
    },
    #[error("cluster {cluster}: {key} {value:?} is not host:port: {message}")]
    Endpoint {
        cluster: String,
        key: &'static str,
        value: String,
        message: String,
    },
    #[error("cluster {cluster}: discovery round")]
    Dns {
        cluster: String,
        #[source]
        source: DnsError,
    },
    #[error("cluster {cluster}: discovery round")]
    Aurora {
        cluster: String,
        #[source]
        source: AuroraError,
    },
}

/// The discovery and health-check tasks of every cluster in `config`; the caller spawns them.
/// Monitor passwords from the environment are read here.
pub fn monitors(
    config: &Validated,
    topology: &Arc<TopologyHandle>,
    shutdown: &Shutdown,
) -> Result<Vec<Task>, MonitorError> {
    let protocol = config.raw.server.protocol;
    let timeout = config.raw.server.connect_timeout;
    let mut tasks: Vec<Task> = Vec::new();
    for (name, c) in &config.raw.clusters {
        let tls = topology
            .cluster(name)
            .and_then(|cluster| cluster.tls.clone());
        let login = monitor_login(c, tls);
        let health = HealthTask {
            cluster: name.clone(),
            protocol,
            login: login.clone(),
            interval: c.health_interval,
            timeout,
            thresholds: Thresholds {
                fail_after: c.fail_after,
                recover_after: c.recover_after,
            },
            lag_source: match &c.discovery {
                Some(d) if d.kind == DiscoveryKind::Aurora => LagSource::Discovery,
                _ => LagSource::Engine,
            },
            max_lag: c.max_lag,
            topology: Arc::clone(topology),
        };
        tasks.push(Box::pin(health.run(shutdown.clone())));
        if let Some(d) = &c.discovery {
            let source = Source::new(name, c, d, protocol, login, timeout)?;
            let discovery = DiscoveryTask {
                cluster: name.clone(),
                source,
                interval: d.interval,
                drain_after: d.drain_after,
                topology: Arc::clone(topology),
            };
            tasks.push(Box::pin(discovery.run(shutdown.clone())));
        }
    }
    Ok(tasks)
}

pub(crate) fn monitor_login(
    c: &ClusterConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Option<MonitorLogin> {
    let user = c.monitor_user.clone()?;
    // validate() has reported a missing variable already; here it means no password.
    let password = monitor_password(c, &|var| std::env::var(var).ok())
        .ok()
        .flatten();
    Some(MonitorLogin {
        user,
        password,
        database: c.monitor_database.clone(),
        tls: tls
            .filter(|_| c.tls != BackendTlsMode::Disable)
            .map(|config| MonitorTls {
                mode: c.tls,
                ca_file: c.ca_file.clone(),
                config,
            }),
    })
}

/// Where a cluster's instances come from.
enum Source {
    Dns {
        resolver: TokioResolver,
        writer: (String, u16),
        reader: (String, u16),
    },
    Aurora {
        resolver: TokioResolver,
        protocol: Protocol,
        login: Option<MonitorLogin>,
        query: String,
        pattern: (String, u16),
        stale_after: Duration,
        timeout: Duration,
    },
}

impl Source {
    fn new(
        cluster: &str,
        c: &ClusterConfig,
        d: &DiscoveryConfig,
        protocol: Protocol,
        login: Option<MonitorLogin>,
        timeout: Duration,
    ) -> Result<Source, MonitorError> {
        let resolver = dns::resolver(&d.nameservers).map_err(|source| MonitorError::Resolver {
            cluster: cluster.to_owned(),
            source,
        })?;
        let endpoint = |key: &'static str, value: &str| {
            parse_host_port(value).map_err(|message| MonitorError::Endpoint {
                cluster: cluster.to_owned(),
                key,
                value: value.to_owned(),
                message,
            })
        };
        Ok(match d.kind {
            DiscoveryKind::Dns => Source::Dns {
                resolver,
                writer: endpoint(
                    "writer_endpoint",
                    d.writer_endpoint.as_deref().unwrap_or(&c.writer),
                )?,
                reader: endpoint(
                    "reader_endpoint",
                    d.reader_endpoint.as_deref().unwrap_or_default(),
                )?,
            },
            DiscoveryKind::Aurora => Source::Aurora {
                resolver,
                protocol,
                login,
                query: d.query.clone().unwrap_or_else(|| {
                    match protocol {
                        Protocol::Postgres => aurora::POSTGRES_QUERY,
                        Protocol::Mysql => aurora::MYSQL_QUERY,
                    }
                    .to_owned()
                }),
                pattern: endpoint(
                    "instance_pattern",
                    d.instance_pattern.as_deref().unwrap_or_default(),
                )?,
                stale_after: d.stale_after,
                timeout,
            },
        })
    }

    fn kind(&self) -> DiscoveryKind {
        match self {
            Source::Dns { .. } => DiscoveryKind::Dns,
            Source::Aurora { .. } => DiscoveryKind::Aurora,
        }
    }

    /// One round: the instances the source names now.
    async fn round(&self, current: &Cluster) -> Result<Vec<Seen>, MonitorError> {
        let cluster = current.name.clone();
        match self {
            Source::Dns {
                resolver,
                writer,
                reader,
            } => dns::round(resolver, (&writer.0, writer.1), (&reader.0, reader.1))
                .await
                .map_err(|source| MonitorError::Dns { cluster, source }),
            Source::Aurora {
                resolver,
                protocol,
                login,
                query,
                pattern,
                stale_after,
                timeout,
            } => {
                let Some(login) = login else {
                    // validate() requires monitor_user for aurora.
                    return Ok(Vec::new());
                };
                // Usable instances first: when the writer has died (a failover under way),
                // the surviving instances answer without waiting on it.
                let mut known: Vec<&Arc<Instance>> = instances(current).collect();
                known.sort_by_key(|i| !i.load.status().is_usable());
                let known: Vec<Target<'_>> = known.into_iter().map(|i| Target::of(i)).collect();
                let rows = aurora::query(*protocol, login, &known, query, *timeout)
                    .await
                    .map_err(|source| MonitorError::Aurora { cluster, source })?;
                let selection = aurora::select(&rows, SystemTime::now(), *stale_after);
                Ok(aurora::seen(&selection, (&pattern.0, pattern.1), resolver).await)
            }
        }
    }
}

struct DiscoveryTask {
    cluster: String,
    source: Source,
    interval: Duration,
    drain_after: u32,
    topology: Arc<TopologyHandle>,
}

impl DiscoveryTask {
    async fn run(self, mut shutdown: Shutdown) {
        let mut missing = BTreeMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let kind = self.source.kind().as_str();
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tick.tick() => {}
            }
            let Some(current) = self.topology.cluster(&self.cluster) else {
                return;
            };
            let seen = tokio::select! {
                _ = shutdown.recv() => return,
                seen = self.source.round(&current) => seen,
            };
            metrics::discovery_round(&self.cluster, kind);
            let seen = match seen {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "discovery round failed; keeping the topology");
                    continue;
                }
            };
            let latest = match next_cluster(&current, &seen, &mut missing, self.drain_after) {
                None => current,
                Some(change) => self.publish(&current, change),
            };
            record_reported_lag(&latest, &seen);
        }
    }

    /// Publishes a changed cluster, retiring the instances it no longer has; returns it.
    fn publish(&self, current: &Cluster, change: super::change::Change) -> Arc<Cluster> {
        for gone in &change.retired {
            gone.load.set_status(Status::Retired);
            tracing::info!(cluster = %self.cluster, instance = %gone.addr, role = gone.role.as_str(), "instance left the topology");
        }
        let cluster = Arc::new(change.cluster);
        if cluster.writer.addr != current.writer.addr {
            // Sessions see the new writer through the snapshot and move to it once a health
            // check finds it writable (`failover_timeout`).
            tracing::warn!(cluster = %self.cluster, from = %current.writer.addr, to = %cluster.writer.addr, "the writer changed (failover)");
            metrics::failover(&self.cluster);
        }
        for new in instances(&cluster).filter(|i| !instances(current).any(|o| Arc::ptr_eq(i, o))) {
            tracing::info!(cluster = %self.cluster, instance = %new.addr, role = new.role.as_str(), "instance joined the topology");
        }
        record_instances(&cluster);
        self.topology.replace_cluster(Arc::clone(&cluster));
        metrics::discovery_change(&self.cluster);
        cluster
    }
}

/// Stores the lag the source reported (Aurora) on each instance it names; the health
/// check applies the lag ceiling to it.
fn record_reported_lag(cluster: &Cluster, seen: &[Seen]) {
    for s in seen {
        if let Some(lag) = s.reported_lag
            && let Some(i) = instances(cluster).find(|i| i.addr == s.addr && i.role == s.role)
        {
            i.load.set_lag(Some(lag));
        }
    }
}

fn instances(c: &Cluster) -> impl Iterator<Item = &Arc<Instance>> {
    std::iter::once(&c.writer).chain(&c.readers)
}

fn record_instances(c: &Cluster) {
    for role in [Role::Writer, Role::Reader] {
        for status in Status::ALL {
            let count = instances(c)
                .filter(|i| i.role == role && i.load.status() == status)
                .count();
            metrics::instances(&c.name, role.as_str(), status.as_str(), count);
        }
    }
}

/// Where a cluster's lag comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LagSource {
    /// The engine's replication view, asked by the health check.
    Engine,
    /// What discovery (Aurora's topology) reported; the engine is not asked (Aurora's
    /// replicas have no streaming or binlog replication to ask about).
    Discovery,
}

struct HealthTask {
    cluster: String,
    protocol: Protocol,
    login: Option<MonitorLogin>,
    interval: Duration,
    timeout: Duration,
    thresholds: Thresholds,
    lag_source: LagSource,
    max_lag: Duration,
    topology: Arc<TopologyHandle>,
}

/// What the health task remembers of one instance between checks.
#[derive(Debug, Clone, Copy)]
struct Memory {
    health: HealthState,
    lag: LagMemory,
}

impl HealthTask {
    async fn run(self, mut shutdown: Shutdown) {
        // Keyed by address and role: a promoted or demoted instance starts over.
        let mut memory: HashMap<(String, Role), Memory> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tick.tick() => {}
            }
            let Some(cluster) = self.topology.cluster(&self.cluster) else {
                return;
            };
            let mut checks = JoinSet::new();
            let engine_lag = self.lag_source == LagSource::Engine;
            for i in instances(&cluster) {
                let i = Arc::clone(i);
                let (protocol, login, timeout) = (self.protocol, self.login.clone(), self.timeout);
                checks.spawn(async move {
                    let result = probe::check(
                        protocol,
                        login.as_ref(),
                        Target::of(&i),
                        timeout,
                        engine_lag,
                    )
                    .await;
                    (i, result)
                });
            }
            let results = tokio::select! {
                _ = shutdown.recv() => return,
                results = checks.join_all() => results,
            };
            let now = Instant::now();
            for (i, result) in results {
                let key = (i.addr.clone(), i.role);
                let remembered = memory.entry(key).or_insert_with(|| Memory {
                    health: HealthState::initial(i.load.status()),
                    lag: LagMemory::default(),
                });
                self.apply(&i, &result, remembered, now);
            }
            memory.retain(|(addr, role), _| {
                instances(&cluster).any(|i| &i.addr == addr && i.role == *role)
            });
            if let Some(now) = self.topology.cluster(&self.cluster) {
                record_instances(&now);
            }
        }
    }

    /// Moves one instance's health and lag by the outcome of its check, and publishes them.
    fn apply(
        &self,
        i: &Instance,
        result: &Result<Option<Answer>, ProbeError>,
        memory: &mut Memory,
        now: Instant,
    ) {
        let probe = match result {
            Ok(None) => Probe::Pass,
            Ok(Some(answer)) if answer.role == i.role => Probe::Pass,
            Ok(Some(_)) => Probe::WrongRole,
            Err(_) => Probe::Fail,
        };
        i.load.set_problem(match (result, probe) {
            (Err(e), _) => Some(crate::error::chain(e)),
            (_, Probe::WrongRole) => Some(format!(
                "the server is not in the {} role the topology gives it",
                i.role.as_str()
            )),
            _ => None,
        });
        let before = memory.health.status();
        memory.health = memory.health.next(probe, self.thresholds);
        let after = memory.health.status();
        if after != before {
            match result {
                Err(e) => {
                    tracing::warn!(cluster = %self.cluster, instance = %i.addr, from = before.as_str(), to = after.as_str(), error = %e, cause = ?std::error::Error::source(e), "instance health changed")
                }
                Ok(_) => {
                    tracing::info!(cluster = %self.cluster, instance = %i.addr, role = i.role.as_str(), ?probe, from = before.as_str(), to = after.as_str(), "instance health changed")
                }
            }
        }
        // The engine's view when the check asked for it and got it; otherwise the lag
        // stands as last measured (or as discovery reported it).
        let lag = match result {
            Ok(Some(answer)) if self.lag_source == LagSource::Engine && answer.role == i.role => {
                let lag = memory.lag.next(answer.replication, now);
                i.load.set_lag(lag);
                lag
            }
            _ => i.load.lag(),
        };
        let published = with_lag(after, i.role, lag, self.max_lag);
        let was = i.load.status();
        if (was == Status::Lagging) != (published == Status::Lagging) && was != Status::Retired {
            let lag_text = lag.map_or_else(
                || "unknown (replication stopped)".to_owned(),
                |l| format!("{l:?}"),
            );
            tracing::info!(cluster = %self.cluster, instance = %i.addr, lag = %lag_text, max_lag = ?self.max_lag, from = was.as_str(), to = published.as_str(), "reader lag crossed the ceiling");
        }
        i.load.set_health(published, now);
        metrics::instance_healthy(&self.cluster, &i.addr, after.is_usable());
        metrics::instance_lag(&self.cluster, &i.addr, lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Problem, validate};

    fn check(cluster: &str) -> Result<Validated, Vec<Problem>> {
        let text = format!(
            r#"
            [server]
            protocol = "postgres"
            listen = "127.0.0.1:6432"

            [[users]]
            name = "app"
            password = "secret"

            [clusters.main]
            writer = "127.0.0.1:5432"
            {cluster}

            [clusters.other]
            writer = "127.0.0.1:5433"

            [routing]
            active = "main"
            "#
        );
        let raw: Config = toml::from_str(&text).expect("parses");
        validate(raw, &|var| (var == "SET").then(|| "value".to_owned()))
    }

    fn paths(cluster: &str) -> Vec<String> {
        check(cluster)
            .expect_err("invalid")
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn discovery_settings_are_checked_with_their_keys() {
        assert_eq!(
            paths("[clusters.main.discovery]\nkind = \"dns\"\nquery = \"SELECT 1\""),
            [
                "clusters.main.discovery.query",
                "clusters.main.discovery.reader_endpoint"
            ]
        );
        assert_eq!(
            paths(
                "[clusters.main.discovery]\nkind = \"aurora\"\ninstance_pattern = \"db:5432\"\ninterval = \"0s\"\ndrain_after = 0"
            ),
            [
                "clusters.main.discovery.interval",
                "clusters.main.discovery.drain_after",
                "clusters.main.discovery.instance_pattern",
                "clusters.main.monitor_user",
            ]
        );
        assert_eq!(
            paths("monitor_password_env = \"MISSING\"\nfail_after = 0"),
            [
                "clusters.main.monitor_password_env",
                "clusters.main.monitor_user",
                "clusters.main.fail_after"
            ]
        );
        assert_eq!(
            paths("max_lag = \"0s\"\nreader_weights = { \"127.0.0.1:9999\" = 2, \"nothost\" = 0 }"),
            [
                "clusters.main.max_lag",
                "clusters.main.reader_weights.\"127.0.0.1:9999\"",
                "clusters.main.reader_weights.\"nothost\"",
                "clusters.main.reader_weights.\"nothost\"",
            ]
        );
        assert_eq!(
            paths("failover_timeout = \"0s\""),
            ["clusters.main.failover_timeout"]
        );
        assert_eq!(
            paths("health_interval = \"5s\"\nfailover_timeout = \"2s\""),
            ["clusters.main.failover_timeout"],
            "a promoted writer must have time to pass a health check"
        );
        let unknown = toml::from_str::<Config>(
            "[server]\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\n[clusters.main]\nwriter = \"a:1\"\n[clusters.main.discovery]\nkind = \"dns\"\nreader = \"x\"\n[routing]\nactive = \"main\"",
        );
        assert!(unknown.is_err(), "unknown discovery keys are rejected");
    }

    #[tokio::test]
    async fn every_cluster_gets_health_checks_and_discovery_where_configured() {
        let config = check(
            "monitor_user = \"monitor\"\nmonitor_password_env = \"SET\"\n[clusters.main.discovery]\nkind = \"dns\"\nreader_endpoint = \"reader.example:5432\"\nnameservers = [\"127.0.0.1:5353\"]",
        )
        .expect("valid");
        let main = &config.raw.clusters["main"];
        assert_eq!(main.health_interval, Duration::from_secs(1));
        assert_eq!(main.discovery.as_ref().map(|d| d.drain_after), Some(3));
        let topology = Arc::new(TopologyHandle::new(
            crate::topology::Topology::from_config(&config).expect("topology"),
        ));
        let (_trigger, shutdown) = crate::shutdown::channel();
        let tasks = monitors(&config, &topology, &shutdown).expect("tasks");
        assert_eq!(
            tasks.len(),
            3,
            "health for both clusters, discovery for one"
        );
    }

    #[tokio::test]
    async fn every_task_ends_when_told() {
        let config = check(
            "[clusters.main.discovery]\nkind = \"dns\"\nreader_endpoint = \"reader.example:5432\"\nnameservers = [\"127.0.0.1:9\"]",
        )
        .expect("valid");
        let topology = Arc::new(TopologyHandle::new(
            crate::topology::Topology::from_config(&config).expect("topology"),
        ));
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut running = JoinSet::new();
        for task in monitors(&config, &topology, &shutdown).expect("tasks") {
            running.spawn(task);
        }
        trigger.trigger();
        while let Some(ended) = running.join_next().await {
            ended.expect("a task ends without panicking");
        }
    }
}
