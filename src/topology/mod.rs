//! Clusters and their instances as an immutable snapshot, replaced whole through an
//! `ArcSwap`, plus the per-instance load counters the balancer reads. Knows nothing of
//! sessions; discovery and health checks (background tasks) publish new snapshots.

mod aurora;
mod balancer;
mod change;
mod dns;
mod health;
mod monitor;
mod postgres_tls;
pub(crate) mod probe;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use balancer::pick_reader;
pub use change::{Seen, next_cluster};
pub use health::{HealthState, Probe, Status, Thresholds};
pub(crate) use monitor::monitor_login;
pub use monitor::{MonitorError, Task, monitors};

use crate::config::{BackendTlsMode, Validated, parse_host_port};
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
    pub host: String,
    pub port: u16,
    pub role: Role,
    pub load: Load,
}

impl Instance {
    /// A new instance of `cluster` at `host:port`, labelled `addr`, in `status`.
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
            role,
            load,
        }
    }
}

/// Live counters of one instance, shared by every session using it.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` until which new connections skip this instance.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// The instance's [`Status`], written by health checks and discovery.
    status: AtomicU8,
}

impl Load {
    fn new(epoch: Instant) -> Load {
        Load {
            in_flight: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            epoch,
            status: AtomicU8::new(Status::Healthy as u8),
        }
    }

    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    pub fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    /// Sets the status a health check found, unless discovery has retired the instance.
    pub fn set_health(&self, status: Status) {
        let retired = Status::Retired as u8;
        // Err only means the instance was retired, which stays.
        let _ = self
            .status
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now != retired).then_some(status as u8)
            });
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
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
}

/// One cluster: a writer, its readers, and how to reach them.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub writer: Arc<Instance>,
    pub readers: Vec<Arc<Instance>>,
    pub tls_mode: BackendTlsMode,
    pub tls: Option<Arc<rustls::ClientConfig>>,
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
        let instance = |cluster: &str, addr: &str, role| {
            // validate() has already checked every address.
            let (host, port) = parse_host_port(addr).unwrap_or_else(|_| (addr.to_owned(), 0));
            Arc::new(Instance {
                cluster: cluster.to_owned(),
                addr: addr.to_owned(),
                host,
                port,
                role,
                load: Load::new(epoch),
            })
        };
        let mut clusters = BTreeMap::new();
        for (name, c) in &config.raw.clusters {
            let cluster = Cluster {
                name: name.clone(),
                writer: instance(name, &c.writer, Role::Writer),
                readers: c
                    .readers
                    .iter()
                    .map(|r| instance(name, r, Role::Reader))
                    .collect(),
                tls_mode: c.tls,
                tls: tls::client_config(c.tls, c.ca_file.as_deref())?,
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
        self.0.store(Arc::new(t));
    }

    /// The current snapshot of cluster `name`.
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.0.load().clusters.get(name).cloned()
    }

    /// Replaces `cluster` with the current snapshot of the cluster of the same name (one
    /// atomic load; no allocation when it has not changed).
    pub fn refresh(&self, cluster: &mut Arc<Cluster>) {
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
        self.0.rcu(|current| {
            let mut clusters = current.clusters.clone();
            clusters.insert(cluster.name.clone(), Arc::clone(&cluster));
            Topology { clusters }
        });
    }
}
