//! Clusters and their instances as an immutable snapshot, replaced whole through an
//! `ArcSwap`, plus the per-instance live state the balancer reads (in-flight queries, health,
//! lag, slow-start ramp). Knows nothing of sessions; discovery and health checks (background
//! tasks) publish new snapshots and update the live state.

mod aurora;
mod balancer;
mod change;
mod dns;
mod health;
mod lag;
mod monitor;
mod postgres_tls;
pub(crate) mod probe;
mod reload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use balancer::{effective_weight, pick_reader, rebalance_target};
pub use change::{Seen, next_cluster};
pub use health::{HealthState, Probe, Status, Thresholds};
pub use lag::{LagMemory, Replication, with_lag};
pub(crate) use monitor::monitor_login;
pub use monitor::{MonitorError, Task, monitors};

use crate::config::{
    BackendTlsMode, ClusterConfig, DiscoveryKind, Protocol, Validated, parse_host_port,
};
use crate::tls::{self, TlsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Writer,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}

/// One database server of a cluster.
#[derive(Debug)]
pub struct Instance {
    pub cluster: String,
    /// `host:port` as configured; also the metrics label.
    pub addr: String,
    /// Where to connect: a host name or, for a discovered instance, an IP address.
    pub host: String,
    pub port: u16,
    /// The name its TLS certificate must carry (and the SNI sent): the configured host; for
    /// an `aurora` instance the host `instance_pattern` makes; for a `dns` one the endpoint
    /// name that resolved to it.
    pub tls_name: String,
    pub role: Role,
    /// Its share of reads relative to the cluster's other readers (`reader_weights`; 1).
    /// Atomic, like `slow_start_ms`, so that a reload changes it in place.
    weight: AtomicU32,
    /// How long its share ramps up after it becomes usable (the cluster's `slow_start`).
    slow_start_ms: AtomicU64,
    pub load: Load,
}

impl Instance {
    /// A new instance of `cluster` at `host:port`, labelled `addr`, in `status`, with weight
    /// 1, no slow start (see [`Instance::with_policy`]) and `host` as its TLS name (see
    /// [`Instance::with_tls_name`]).
    pub fn new(
        cluster: &str,
        addr: &str,
        host: &str,
        port: u16,
        role: Role,
        status: Status,
    ) -> Instance {
        let load = Load::new(Instant::now());
        load.set_status(status);
        Instance {
            cluster: cluster.to_owned(),
            addr: addr.to_owned(),
            host: host.to_owned(),
            port,
            tls_name: host.to_owned(),
            role,
            weight: AtomicU32::new(1),
            slow_start_ms: AtomicU64::new(0),
            load,
        }
    }

    /// An instance listed in the config (`writer`, `readers`), in use from the start.
    fn listed(
        cluster: &str,
        addr: &str,
        role: Role,
        policy: &ReadPolicy,
        epoch: Instant,
    ) -> Instance {
        // validate() has already checked every address.
        let (host, port) = parse_host_port(addr).unwrap_or_else(|_| (addr.to_owned(), 0));
        Instance {
            cluster: cluster.to_owned(),
            addr: addr.to_owned(),
            tls_name: host.clone(),
            host,
            port,
            role,
            weight: AtomicU32::new(1),
            slow_start_ms: AtomicU64::new(0),
            load: Load::new(epoch),
        }
        .with_policy(policy)
    }

    /// The instance with the weight and slow start `policy` gives it.
    pub fn with_policy(self, policy: &ReadPolicy) -> Instance {
        self.set_policy(policy);
        self
    }

    /// Takes the weight and slow start `policy` gives it now (a reload changed them).
    pub fn set_policy(&self, policy: &ReadPolicy) {
        self.weight
            .store(policy.weight(&self.addr, self.role), Ordering::Relaxed);
        let ms = u64::try_from(policy.slow_start.as_millis()).unwrap_or(u64::MAX);
        self.slow_start_ms.store(ms, Ordering::Relaxed);
    }

    /// Its share of reads relative to the cluster's other readers.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// How long its share ramps up after it becomes usable.
    pub fn slow_start(&self) -> Duration {
        Duration::from_millis(self.slow_start_ms.load(Ordering::Relaxed))
    }

    /// The instance, verified by TLS as `name` (a host name or an IP address).
    pub fn with_tls_name(mut self, name: &str) -> Instance {
        name.clone_into(&mut self.tls_name);
        self
    }

    /// The weight it competes for reads with at `now`: [`effective_weight`] of its weight,
    /// ramped over `slow_start` since it last became usable.
    pub fn effective_weight(&self, now: Instant) -> u64 {
        effective_weight(self.weight(), self.load.usable_for(now), self.slow_start())
    }
}

/// A session's connection to an instance, counted in its [`Load::attached`] while it
/// lives, so that sessions can be spread over readers by weight.
#[derive(Debug)]
pub struct Attachment(Arc<Instance>);

impl Attachment {
    pub fn new(instance: &Arc<Instance>) -> Attachment {
        instance.load.attached.fetch_add(1, Ordering::Relaxed);
        Attachment(Arc::clone(instance))
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.0.load.attached.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks "no value" in the millisecond fields of [`Load`].
const UNSET_MS: u64 = u64::MAX;

/// Live counters of one instance, shared by every session using it.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicUsize,
    /// Sessions holding a connection to it (see [`Attachment`]).
    attached: AtomicUsize,
    /// Why its last health check failed, if it did (for errors and `/status`).
    problem: std::sync::Mutex<Option<String>>,
    /// Milliseconds after `epoch` until which new connections skip this instance.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// The instance's [`Status`], written by health checks and discovery.
    status: AtomicU8,
    /// Replication lag in milliseconds, or `UNSET_MS` when it cannot be measured
    /// (replication stopped).
    lag_ms: AtomicU64,
    /// Milliseconds after `epoch` at which it last became usable, or `UNSET_MS` when it has
    /// been usable since it was created (no ramp).
    usable_since_ms: AtomicU64,
}

impl Load {
    fn new(epoch: Instant) -> Load {
        Load {
            in_flight: AtomicUsize::new(0),
            attached: AtomicUsize::new(0),
            problem: std::sync::Mutex::new(None),
            down_until_ms: AtomicU64::new(0),
            epoch,
            status: AtomicU8::new(Status::Healthy as u8),
            lag_ms: AtomicU64::new(0),
            usable_since_ms: AtomicU64::new(UNSET_MS),
        }
    }

    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    pub fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    /// Sets the status a health check found at `now`, unless discovery has retired the
    /// instance. An instance that becomes usable starts its slow-start ramp at `now`.
    pub fn set_health(&self, status: Status, now: Instant) {
        let retired = Status::Retired as u8;
        let before = self
            .status
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |was| {
                (was != retired).then_some(status as u8)
            });
        // Err only means the instance was retired, which stays.
        if let Ok(was) = before
            && status.is_usable()
            && !Status::from_u8(was).is_usable()
        {
            self.usable_since_ms
                .store(self.millis(now), Ordering::Relaxed);
        }
    }

    /// How long it has been usable as of `now`; `None` when it has been since it was created.
    pub fn usable_for(&self, now: Instant) -> Option<Duration> {
        match self.usable_since_ms.load(Ordering::Relaxed) {
            UNSET_MS => None,
            since => Some(Duration::from_millis(
                self.millis(now).saturating_sub(since),
            )),
        }
    }

    /// The replication lag the last check measured (0 for a writer); `None` when replication
    /// is stopped and no lag can be measured.
    pub fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Ordering::Relaxed) {
            UNSET_MS => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn set_lag(&self, lag: Option<Duration>) {
        let ms = lag.map_or(UNSET_MS, |l| {
            u64::try_from(l.as_millis()).unwrap_or(UNSET_MS - 1)
        });
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Why its last health check failed; `None` when it passed (or none ran yet).
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// Sessions holding a connection to it now.
    pub fn attached(&self) -> usize {
        self.attached.load(Ordering::Relaxed)
    }

    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Skips this instance for new connections until `now + for_`.
    pub fn mark_down(&self, now: Instant, for_: Duration) {
        self.down_until_ms
            .store(self.millis(now + for_), Ordering::Relaxed);
    }

    pub fn is_down(&self, now: Instant) -> bool {
        self.millis(now) < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// [`Load::is_down`] now, reading the clock only when the instance was ever marked
    /// down (asked once per transaction in transaction mode).
    pub fn down_now(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.millis(Instant::now()) < until
    }
}

/// How a cluster shares reads among its readers: the lag ceiling, the slow-start window,
/// the configured weights, and the margin of [`Cluster::catch_up_window`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadPolicy {
    /// A reader lagging more than this gets no new reads.
    pub max_lag: Duration,
    /// A reader that becomes usable ramps from 10% to its full weight over this long.
    pub slow_start: Duration,
    /// Reader weights by instance label; a reader not listed weighs 1.
    pub weights: BTreeMap<String, u32>,
    /// How much a lag may be under-reported: how old a measurement can be when it is read,
    /// plus its resolution.
    pub catch_up_margin: Duration,
}

impl ReadPolicy {
    /// The policy `[clusters.NAME]` sets for a proxy of `protocol`.
    pub fn from_config(c: &ClusterConfig, protocol: Protocol) -> ReadPolicy {
        let aurora = c
            .discovery
            .as_ref()
            .filter(|d| d.kind == DiscoveryKind::Aurora);
        // Aurora's lag is read by discovery every round (in milliseconds); the engine's view
        // by the health check, which for MySQL is in whole seconds (rounded down).
        let staleness = c.health_interval + aurora.map_or(Duration::ZERO, |d| d.interval);
        let resolution = match (aurora, protocol) {
            (None, Protocol::Mysql) => Duration::from_secs(1),
            _ => Duration::ZERO,
        };
        ReadPolicy {
            max_lag: c.max_lag,
            slow_start: c.slow_start,
            weights: c.reader_weights.clone(),
            catch_up_margin: staleness + resolution,
        }
    }

    /// The weight of the instance labelled `addr` in `role` (writers always weigh 1).
    pub fn weight(&self, addr: &str, role: Role) -> u32 {
        match role {
            Role::Writer => 1,
            Role::Reader => self.weights.get(addr).copied().unwrap_or(1).max(1),
        }
    }
}

/// One cluster: a writer, its readers, and how to reach them.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub writer: Arc<Instance>,
    pub readers: Vec<Arc<Instance>>,
    pub tls_mode: BackendTlsMode,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub policy: Arc<ReadPolicy>,
    /// Set once a topology with another snapshot of this cluster was published.
    pub superseded: Superseded,
}

/// Whether a newer snapshot of a cluster (or config: `session::HeldConfig`) was published
/// in its place. While it is not, a
/// session's snapshot is the current one, which [`TopologyHandle::refresh`] tells from this
/// flag alone (asked at every statement) instead of a load and a lookup. Only ever set, and
/// only after the newer snapshot was stored; set in excess (a snapshot published again
/// later) it costs the lookup, never a stale answer.
#[derive(Debug, Default)]
pub struct Superseded(std::sync::atomic::AtomicBool);

impl Superseded {
    pub(crate) fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Cluster {
    /// How long after a write a read may miss it on a reader this cluster would use now: the
    /// largest lag among its usable readers plus the policy's margin (how stale the
    /// measurement can be, and its resolution). No usable reader: the margin alone.
    ///
    /// A session that sends its reads to the writer for this long after it writes reads its
    /// own writes. A reader that becomes usable again later in the window may lag by up to
    /// `max_lag`.
    pub fn catch_up_window(&self) -> Duration {
        let largest = self
            .readers
            .iter()
            .filter(|r| r.load.status().is_usable())
            .filter_map(|r| r.load.lag())
            .max()
            .unwrap_or(Duration::ZERO);
        largest + self.policy.catch_up_margin
    }
}

/// Every cluster as of one moment. Immutable; replaced whole.
#[derive(Debug)]
pub struct Topology {
    pub clusters: BTreeMap<String, Arc<Cluster>>,
}

impl Topology {
    /// The static topology the config lists.
    pub fn from_config(config: &Validated) -> Result<Topology, TlsError> {
        let epoch = Instant::now();
        let instance = |cluster: &str, addr: &str, role, policy: &ReadPolicy| {
            Arc::new(Instance::listed(cluster, addr, role, policy, epoch))
        };
        let mut clusters = BTreeMap::new();
        for (name, c) in &config.raw.clusters {
            let policy = ReadPolicy::from_config(c, config.raw.server.protocol);
            let cluster = Cluster {
                name: name.clone(),
                writer: instance(name, &c.writer, Role::Writer, &policy),
                readers: c
                    .readers
                    .iter()
                    .map(|r| instance(name, r, Role::Reader, &policy))
                    .collect(),
                tls_mode: c.tls,
                tls: tls::client_config(c.tls, c.ca_file.as_deref())?,
                policy: Arc::new(policy),
                superseded: Superseded::default(),
            };
            clusters.insert(name.clone(), Arc::new(cluster));
        }
        Ok(Topology { clusters })
    }
}

/// The one owner of the current topology; the data path does one atomic load per use.
#[derive(Debug)]
pub struct TopologyHandle(ArcSwap<Topology>);

impl TopologyHandle {
    pub fn new(t: Topology) -> TopologyHandle {
        TopologyHandle(ArcSwap::from_pointee(t))
    }

    pub fn load(&self) -> Arc<Topology> {
        self.0.load_full()
    }

    pub fn publish(&self, t: Topology) {
        let next = Arc::new(t);
        let previous = self.0.swap(Arc::clone(&next));
        for (name, cluster) in &previous.clusters {
            if next
                .clusters
                .get(name)
                .is_none_or(|now| !Arc::ptr_eq(now, cluster))
            {
                cluster.superseded.mark();
            }
        }
    }

    /// The current snapshot of cluster `name`.
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.0.load().clusters.get(name).cloned()
    }

    /// Replaces `cluster` with the current snapshot of the cluster of the same name (one
    /// atomic load; no allocation when it has not changed).
    pub fn refresh(&self, cluster: &mut Arc<Cluster>) {
        if !cluster.superseded.is_set() {
            return;
        }
        let topology = self.0.load();
        if let Some(now) = topology.clusters.get(&cluster.name)
            && !Arc::ptr_eq(now, cluster)
        {
            *cluster = Arc::clone(now);
        }
    }

    /// Publishes `cluster` in place of the one of the same name, keeping every other
    /// cluster as it is now, even when another task publishes at the same moment.
    pub fn replace_cluster(&self, cluster: Arc<Cluster>) {
        let previous = self.0.rcu(|current| {
            let mut clusters = current.clusters.clone();
            clusters.insert(cluster.name.clone(), Arc::clone(&cluster));
            Topology { clusters }
        });
        if let Some(replaced) = previous.clusters.get(&cluster.name)
            && !Arc::ptr_eq(replaced, &cluster)
        {
            replaced.superseded.mark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, validate};

    fn validated(protocol: &str, cluster: &str) -> Validated {
        let text = format!(
            "[server]\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:1\"\n\
             [[users]]\nname = \"app\"\npassword = \"x\"\n\
             [clusters.main]\nwriter = \"10.0.0.1:5432\"\n{cluster}\n\
             [routing]\nactive = \"main\"\n"
        );
        let raw: Config = toml::from_str(&text).expect("parses");
        validate(raw, &|_| None).expect("valid")
    }

    fn policy(protocol: &str, cluster: &str) -> ReadPolicy {
        let topology = Topology::from_config(&validated(protocol, cluster)).expect("topology");
        topology.clusters["main"].policy.as_ref().clone()
    }

    #[test]
    fn a_snapshot_is_refreshed_once_another_replaced_it_and_only_then() {
        let two = "[clusters.other]\nwriter = \"10.0.0.9:5432\"\n";
        let handle = TopologyHandle::new(
            Topology::from_config(&validated("postgres", two)).expect("topology"),
        );
        let mut main = handle.cluster("main").expect("main");
        let mut other = handle.cluster("other").expect("other");
        let (first_main, first_other) = (Arc::clone(&main), Arc::clone(&other));
        // A topology that keeps `other` as it is and has a new snapshot of `main`.
        let next = Topology::from_config(&validated("postgres", two)).expect("topology");
        let clusters = [
            ("main".to_owned(), Arc::clone(&next.clusters["main"])),
            ("other".to_owned(), Arc::clone(&other)),
        ];
        handle.publish(Topology {
            clusters: clusters.into(),
        });
        handle.refresh(&mut main);
        handle.refresh(&mut other);
        assert!(
            Arc::ptr_eq(&main, &next.clusters["main"]),
            "replaced: refreshed"
        );
        assert!(first_main.superseded.is_set());
        assert!(Arc::ptr_eq(&other, &first_other), "kept: the same snapshot");
        assert!(!other.superseded.is_set(), "kept: no lookup at refresh");
        // One cluster replaced in place.
        let moved = Topology::from_config(&validated("postgres", two)).expect("topology");
        handle.replace_cluster(Arc::clone(&moved.clusters["other"]));
        handle.refresh(&mut other);
        assert!(Arc::ptr_eq(&other, &moved.clusters["other"]));
        assert!(first_other.superseded.is_set());
        assert!(!main.superseded.is_set());
    }

    #[test]
    fn the_policy_comes_from_the_cluster_settings() {
        let p = policy("postgres", "readers = [\"10.0.0.2:5432\"]");
        assert_eq!(p.max_lag, Duration::from_secs(30));
        assert_eq!(p.slow_start, Duration::from_secs(30));
        assert_eq!(
            p.catch_up_margin,
            Duration::from_secs(1),
            "one health interval"
        );
        let p = policy(
            "mysql",
            "readers = [\"10.0.0.2:3306\", \"10.0.0.3:3306\"]\nhealth_interval = \"200ms\"\n\
             max_lag = \"5s\"\nslow_start = \"0s\"\nreader_weights = { \"10.0.0.3:3306\" = 4 }",
        );
        assert_eq!(p.max_lag, Duration::from_secs(5));
        assert_eq!(p.slow_start, Duration::ZERO);
        assert_eq!(
            p.catch_up_margin,
            Duration::from_millis(1200),
            "Seconds_Behind_Master is in whole seconds"
        );
        assert_eq!(p.weight("10.0.0.3:3306", Role::Reader), 4);
        assert_eq!(p.weight("10.0.0.2:3306", Role::Reader), 1);
        assert_eq!(p.weight("10.0.0.3:3306", Role::Writer), 1);
        let p = policy(
            "mysql",
            "monitor_user = \"m\"\n[clusters.main.discovery]\nkind = \"aurora\"\n\
             instance_pattern = \"?.example:3306\"\ninterval = \"2s\"",
        );
        assert_eq!(
            p.catch_up_margin,
            Duration::from_secs(3),
            "a discovery round and a health check; Aurora reports milliseconds"
        );
    }

    #[test]
    fn static_readers_get_their_configured_weights() {
        let config = validated(
            "postgres",
            "readers = [\"10.0.0.2:5432\", \"10.0.0.3:5432\"]\nreader_weights = { \"10.0.0.3:5432\" = 3 }",
        );
        let topology = Topology::from_config(&config).expect("topology");
        let main = &topology.clusters["main"];
        let weights: Vec<u32> = main.readers.iter().map(|r| r.weight()).collect();
        assert_eq!(weights, [1, 3]);
        assert_eq!(main.readers[0].slow_start(), Duration::from_secs(30));
        // Listed in the config: in use from the start, with no ramp.
        assert_eq!(main.readers[1].effective_weight(Instant::now()), 3000);
    }

    fn reader(addr: &str, status: Status, lag: Option<Duration>) -> Arc<Instance> {
        let i = Instance::new("c", addr, addr, 1, Role::Reader, status);
        i.load.set_lag(lag);
        Arc::new(i)
    }

    #[test]
    fn the_catch_up_window_is_the_largest_usable_lag_plus_the_margin() {
        let ms = Duration::from_millis;
        let mut cluster = Cluster {
            superseded: Default::default(),
            name: "c".into(),
            writer: Arc::new(Instance::new(
                "c",
                "w",
                "w",
                1,
                Role::Writer,
                Status::Healthy,
            )),
            readers: vec![
                reader("a", Status::Healthy, Some(ms(2000))),
                reader("b", Status::Healthy, Some(ms(500))),
                reader("lagging", Status::Lagging, Some(ms(40_000))),
                reader("stopped", Status::Lagging, None),
                reader("down", Status::Unhealthy, Some(ms(90_000))),
                reader("gone", Status::Retired, Some(ms(90_000))),
            ],
            tls_mode: BackendTlsMode::Disable,
            tls: None,
            policy: Arc::new(ReadPolicy {
                catch_up_margin: ms(1000),
                ..ReadPolicy::default()
            }),
        };
        assert_eq!(cluster.catch_up_window(), ms(3000));
        cluster.readers[0].load.set_lag(Some(ms(100)));
        assert_eq!(cluster.catch_up_window(), ms(1500));
        cluster.readers.truncate(0);
        assert_eq!(cluster.catch_up_window(), ms(1000), "no reader: the margin");
    }

    #[test]
    fn lag_round_trips_through_its_atomic() {
        let load = Load::new(Instant::now());
        assert_eq!(load.lag(), Some(Duration::ZERO), "unmeasured: no lag");
        load.set_lag(Some(Duration::from_millis(1234)));
        assert_eq!(load.lag(), Some(Duration::from_millis(1234)));
        load.set_lag(None);
        assert_eq!(load.lag(), None);
        load.set_lag(Some(Duration::MAX));
        assert!(load.lag().is_some(), "a huge lag is still a lag");
    }
}
