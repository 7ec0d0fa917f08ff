//! `[fleet]`: how the proxies behind one load balancer find each other (a members table in
//! the databases, a DNS name, a static list), how often each one re-reads the cutover record,
//! and when a member that stopped heartbeating counts as gone.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, Fence};

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[cfg(test)]
mod tests {
    /// The problem paths and warnings `switchyard check` gives a PostgreSQL migration with
    /// `extra` appended.
    fn check(extra: &str) -> (Vec<String>, Vec<String>) {
        let text = format!(
            r#"
            [server]
            protocol = "postgres"
            listen = "127.0.0.1:6432"
            [admin]
            listen = "127.0.0.1:9187"
            [[users]]
            name = "app"
            password = "secret"
            [clusters.old]
            writer = "10.0.0.1:5432"
            monitor_user = "m"
            [clusters.new]
            writer = "10.0.0.2:5432"
            monitor_user = "m"
            [routing]
            active = "old"
            {extra}
            "#
        );
        let raw: crate::config::Config = toml::from_str(&text).expect("parse");
        let warnings = super::warnings(&raw);
        match crate::config::validate(raw, &|_| None) {
            Ok(_) => (Vec::new(), warnings),
            Err(problems) => (problems.into_iter().map(|p| p.path).collect(), warnings),
        }
    }

    const CUTOVER: &str = "[cutover]\ncatch_up = \"none\"\n";

    #[test]
    fn a_fleet_registers_through_the_cutover_database() {
        assert_eq!(check(&format!("{CUTOVER}[fleet]")), (vec![], vec![]));
        assert_eq!(
            check("[fleet]").0,
            ["fleet.register"],
            "registration needs [cutover]"
        );
        assert!(check("[fleet]\nregister = false").0.is_empty());
        assert_eq!(
            check(&format!(
                "{CUTOVER}[fleet]\npeers = [\"10.0.0.9:9187\"]\npeers_dns = \"x\""
            ))
            .0,
            ["fleet.peers[0]", "fleet.peers_dns"]
        );
    }

    #[test]
    fn check_warns_about_a_proxy_only_fence_in_a_fleet() {
        let (problems, warnings) = check(&format!("{CUTOVER}fence = \"proxy\"\n[fleet]"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("cutover.fence"), "{warnings:?}");
        assert!(check(&format!("{CUTOVER}fence = \"proxy\"")).1.is_empty());
    }
}
