//! `[fleet]`: how the proxies behind one load balancer find each other (a members table in
//! the databases, a DNS name, a static list), how often each one re-reads the cutover record,
//! and when a member that stopped heartbeating counts as gone.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, Fence};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// This proxy's name in the fleet. Default: the host name and the admin port.
    pub id: Option<String>,
    /// The admin URL other proxies and the CLI reach this proxy at. Default: `http://` and
    /// the admin listener's address (the host name when it listens on every address).
    pub advertise: Option<String>,
    /// Register in a members table on every cluster's writer (with the monitor account,
    /// in `[cutover] database`), heartbeating every `poll_interval`.
    #[serde(default = "defaults::yes")]
    pub register: bool,
    /// The members table, created when missing.
    #[serde(default = "defaults::table")]
    pub table: String,
    /// Admin URLs of the other proxies, when they do not register (or as well).
    #[serde(default)]
    pub peers: Vec<String>,
    /// A DNS name (`name:port`) whose every address is a proxy's admin endpoint: a
    /// Kubernetes headless Service, an ECS Cloud Map name.
    pub peers_dns: Option<String>,
    /// How often this proxy heartbeats and re-reads the cutover record; a newer record is
    /// applied at once, so a proxy that missed a cutover converges within this.
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A member not seen for this many intervals is stale: listed, but not waited for.
    #[serde(default = "defaults::stale_after")]
    pub stale_after: u32,
}

impl FleetConfig {
    /// How long a member may go without a heartbeat before it is stale.
    pub fn stale(&self) -> Duration {
        self.poll_interval * self.stale_after.max(1)
    }
}

mod defaults {
    use std::time::Duration;
    pub fn yes() -> bool {
        true
    }
    pub fn table() -> String {
        "switchyard_fleet".into()
    }
    pub fn poll_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn stale_after() -> u32 {
        3
    }
}

/// Reports what in `[fleet]` cannot work with the rest of the config.
pub(super) fn validate_fleet(raw: &Config, problem: &mut dyn FnMut(String, String)) {
    let Some(f) = &raw.fleet else { return };
    if f.poll_interval.is_zero() {
        problem(
            "fleet.poll_interval".into(),
            "must be longer than zero".into(),
        );
    }
    if !super::cutover::is_table_name(&f.table) {
        problem(
            "fleet.table".into(),
            format!(
                "{:?} is not a table name: letters, digits and _, optionally qualified as schema.table",
                f.table
            ),
        );
    }
    if raw.admin.is_none() {
        problem(
            "fleet".into(),
            "members reach each other through the admin API: [admin] is needed".into(),
        );
    }
    for (i, peer) in f.peers.iter().enumerate() {
        if !(peer.starts_with("http://") || peer.starts_with("https://")) {
            problem(
                format!("fleet.peers[{i}]"),
                format!("{peer:?} is not an admin URL (http://host:port)"),
            );
        }
    }
    if let Some(dns) = &f.peers_dns
        && dns
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
    {
        problem(
            "fleet.peers_dns".into(),
            format!("{dns:?} is not name:port"),
        );
    }
    if f.register {
        match &raw.cutover {
            None => problem(
                "fleet.register".into(),
                "registration uses the cutover's database ([cutover]); add it or set register = false".into(),
            ),
            Some(c) if raw.server.protocol == super::Protocol::Mysql
                && !f.table.contains('.')
                && c.database.is_none()
                && raw.clusters.values().any(|cl| cl.monitor_database.is_none()) =>
            {
                problem(
                    "fleet.table".into(),
                    "MySQL needs a schema for the members table: set [cutover] database, or write table as schema.table".into(),
                )
            }
            Some(_) => {}
        }
        for (name, cluster) in &raw.clusters {
            if cluster.monitor_user.is_none() {
                problem(
                    format!("clusters.{name}.monitor_user"),
                    "[fleet] register = true connects to each writer with the monitor account"
                        .into(),
                );
            }
        }
    }
}

/// What `switchyard check` should point out without refusing the config.
pub fn warnings(raw: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(_), Some(c)) = (&raw.fleet, &raw.cutover)
        && c.fence == Some(Fence::Proxy)
    {
        out.push(
            "cutover.fence: a [fleet] is configured with fence = \"proxy\": a proxy that misses the cutover keeps writing to the old cluster until it re-reads the record; leave fence unset (database in a fleet) or set fence = \"database\"".into(),
        );
    }
    out
}
