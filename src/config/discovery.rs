//! The settings of `[clusters.NAME]` that concern finding instances, checking them and
//! sharing reads among them: the discovery source (static, DNS, Aurora), health checks, the
//! monitor account, the lag ceiling, slow start and reader weights.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ClusterConfig, parse_host_port, resolve_secret};

/// `[clusters.NAME.discovery]`: a source that finds the cluster's instances while running.
/// The configured `writer` is used until the first round answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    pub kind: DiscoveryKind,
    /// `dns`: `host:port` resolved for the writer (default: the cluster's `writer`).
    pub writer_endpoint: Option<String>,
    /// `dns`: `host:port` whose every address is a reader.
    pub reader_endpoint: Option<String>,
    /// `aurora`: the topology query (default: Aurora's own view for the protocol).
    pub query: Option<String>,
    /// `aurora`: `host:port` of an instance, `?` standing for its server_id.
    pub instance_pattern: Option<String>,
    /// `aurora`: rows not updated for this long are ignored.
    #[serde(default = "topology_defaults::stale_after", with = "humantime_serde")]
    pub stale_after: Duration,
    #[serde(default = "topology_defaults::interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Rounds an instance must be missing before it is removed.
    #[serde(default = "topology_defaults::drain_after")]
    pub drain_after: u32,
    /// DNS servers (`ip:port`); the system's when empty.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    Dns,
    Aurora,
}

impl DiscoveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryKind::Dns => "dns",
            DiscoveryKind::Aurora => "aurora",
        }
    }
}

pub(super) mod topology_defaults {
    use std::time::Duration;
    pub fn health_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn fail_after() -> u32 {
        3
    }
    pub fn recover_after() -> u32 {
        2
    }
    pub fn stale_after() -> Duration {
        Duration::from_secs(300)
    }
    pub fn interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn drain_after() -> u32 {
        3
    }
    pub fn max_lag() -> Duration {
        Duration::from_secs(30)
    }
    pub fn slow_start() -> Duration {
        Duration::from_secs(30)
    }
    pub fn failover_timeout() -> Duration {
        super::DEFAULT_FAILOVER_TIMEOUT
    }
}

/// Aurora fails over in about 30 s: a replica promoted, the topology and DNS updated.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest `reader_weights` value: enough for any mix of instance sizes, and small
/// enough that weighted sums never overflow.
pub const MAX_READER_WEIGHT: u32 = 1000;

/// The monitor account's password, from `monitor_password` or `monitor_password_env`.
pub fn monitor_password(
    c: &ClusterConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, (String, String)> {
    resolve_secret(
        &c.monitor_password,
        &c.monitor_password_env,
        "monitor_password",
        env,
    )
}

/// The checks of discovery, health and monitor settings for one cluster.
pub(super) fn validate_topology(
    name: &str,
    c: &ClusterConfig,
    env: &dyn Fn(&str) -> Option<String>,
    problem: &mut dyn FnMut(String, String),
) {
    let at = |key: &str| format!("clusters.{name}.{key}");
    if let Err((key, message)) = monitor_password(c, env) {
        problem(at(&key), message);
    }
    if c.monitor_user.is_none()
        && (c.monitor_password.is_some() || c.monitor_password_env.is_some())
    {
        problem(
            at("monitor_user"),
            "a monitor password needs monitor_user".into(),
        );
    }
    if c.health_interval.is_zero() {
        problem(at("health_interval"), "must be more than 0".into());
    }
    for (key, value) in [
        ("fail_after", c.fail_after),
        ("recover_after", c.recover_after),
    ] {
        if value == 0 {
            problem(at(key), "must be at least 1".into());
        }
    }
    if c.max_lag.is_zero() {
        problem(at("max_lag"), "must be more than 0".into());
    }
    if c.failover_timeout < c.health_interval || c.failover_timeout.is_zero() {
        // A promoted writer is used once a health check has seen it writable.
        problem(
            at("failover_timeout"),
            "must be more than 0 and at least health_interval".into(),
        );
    }
    for (addr, &weight) in &c.reader_weights {
        let key = at(&format!("reader_weights.\"{addr}\""));
        if let Err(e) = parse_host_port(addr) {
            problem(key.clone(), e);
        } else if c.discovery.is_none() && !c.readers.contains(addr) {
            problem(key.clone(), format!("{addr} is not one of the readers"));
        }
        if !(1..=MAX_READER_WEIGHT).contains(&weight) {
            problem(key, format!("must be from 1 to {MAX_READER_WEIGHT}"));
        }
    }
    if let Some(d) = &c.discovery {
        validate_discovery(name, c, d, problem);
    }
}

/// `[clusters.NAME.discovery]`: intervals, the keys each kind uses, and what each kind needs.
fn validate_discovery(
    name: &str,
    c: &ClusterConfig,
    d: &DiscoveryConfig,
    problem: &mut dyn FnMut(String, String),
) {
    let at = |key: &str| format!("clusters.{name}.discovery.{key}");
    if d.interval.is_zero() {
        problem(at("interval"), "must be more than 0".into());
    }
    if d.drain_after == 0 {
        problem(at("drain_after"), "must be at least 1".into());
    }
    let only = |key: &str, set: bool, kind: DiscoveryKind| {
        (set && d.kind != kind).then(|| {
            (
                at(key),
                format!("is only used with kind = \"{}\"", kind.as_str()),
            )
        })
    };
    let misplaced = [
        only(
            "writer_endpoint",
            d.writer_endpoint.is_some(),
            DiscoveryKind::Dns,
        ),
        only(
            "reader_endpoint",
            d.reader_endpoint.is_some(),
            DiscoveryKind::Dns,
        ),
        only("query", d.query.is_some(), DiscoveryKind::Aurora),
        only(
            "instance_pattern",
            d.instance_pattern.is_some(),
            DiscoveryKind::Aurora,
        ),
    ];
    for (path, message) in misplaced.into_iter().flatten() {
        problem(path, message);
    }
    match d.kind {
        DiscoveryKind::Dns => {
            for (key, endpoint) in [
                ("writer_endpoint", &d.writer_endpoint),
                ("reader_endpoint", &d.reader_endpoint),
            ] {
                if let Some(Err(e)) = endpoint.as_deref().map(parse_host_port) {
                    problem(at(key), e);
                }
            }
            if d.reader_endpoint.is_none() {
                problem(
                    at("reader_endpoint"),
                    "kind = \"dns\" needs reader_endpoint".into(),
                );
            }
        }
        DiscoveryKind::Aurora => {
            match d.instance_pattern.as_deref().map(parse_host_port) {
                None => problem(
                    at("instance_pattern"),
                    "kind = \"aurora\" needs instance_pattern".into(),
                ),
                Some(Err(e)) => problem(at("instance_pattern"), e),
                Some(Ok((host, _))) if !host.contains('?') => problem(
                    at("instance_pattern"),
                    "must contain ? (stands for the server_id)".into(),
                ),
                Some(Ok(_)) => {}
            }
            if c.monitor_user.is_none() {
                problem(
                    format!("clusters.{name}.monitor_user"),
                    "kind = \"aurora\" needs monitor_user to run the topology query".into(),
                );
            }
        }
    }
}
