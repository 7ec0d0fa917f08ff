//! `[cutover]`: how a cutover knows the new cluster has everything the old writer
//! acknowledged, how long each step may take, and how the old cluster is fenced.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, Protocol};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverConfig {
    pub catch_up: CatchUp,
    /// `lsn`: the logical replication slot on the old writer (the subscription's name).
    pub slot: Option<String>,
    /// The replicated database the checks connect to (PostgreSQL: where sequences are
    /// carried over and the sentinel table lives; MySQL: the sentinel table's schema).
    /// Default: the cluster's `monitor_database`.
    pub database: Option<String>,
    /// `sentinel`: a table `(id VARCHAR(64) PRIMARY KEY, written_at TIMESTAMP)` that the
    /// replication carries from the old writer to the new one.
    #[serde(default = "defaults::sentinel_table")]
    pub sentinel_table: String,
    /// Record each switch in a table on the new writer, which a proxy starting without a
    /// state file reads (so it never sends writes to a fenced cluster).
    #[serde(default = "defaults::yes")]
    pub record: bool,
    /// The record's table, created by preflight when missing (in `database`).
    #[serde(default = "defaults::record_table")]
    pub record_table: String,
    /// PostgreSQL: set every sequence on the new writer past its value on the old one.
    #[serde(default = "defaults::yes")]
    pub sync_sequences: bool,
    /// Preflight refuses to start when the new cluster is further behind than this.
    #[serde(default = "defaults::max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
    /// Transactions in flight when the pause starts get this long to finish.
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The new writer gets this long to apply the old writer's last position.
    #[serde(default = "defaults::catch_up_timeout", with = "humantime_serde")]
    pub catch_up_timeout: Duration,
    /// `proxy`: the old cluster refuses writes at the proxy. `database`: also in the
    /// database, with `fence_sql` (undone with `unfence_sql` on abort). Unset: `database`
    /// when more than one proxy is known (a fleet), else `proxy`.
    pub fence: Option<Fence>,
    /// Default per engine: `SET GLOBAL read_only = ON` (MySQL);
    /// `ALTER SYSTEM SET default_transaction_read_only = on` + reload (PostgreSQL).
    pub fence_sql: Option<Vec<String>>,
    pub unfence_sql: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// PostgreSQL logical replication: the slot's subscriber applied the old writer's last
    /// LSN.
    Lsn,
    /// MariaDB/MySQL: the new writer executed the old writer's last GTID position.
    Gtid,
    /// A row written on the old writer after the drain has arrived on the new one.
    Sentinel,
    /// Nothing to wait for: the old cluster was read-only all along (snapshot migration).
    None,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Lsn => "lsn",
            CatchUp::Gtid => "gtid",
            CatchUp::Sentinel => "sentinel",
            CatchUp::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fence {
    #[default]
    Proxy,
    Database,
}

impl CutoverConfig {
    /// The fence a cutover uses: the configured one, else `database` when `fleet` (more
    /// than one proxy is known), else `proxy`.
    pub fn fence_for(&self, fleet: bool) -> Fence {
        self.fence
            .unwrap_or(if fleet { Fence::Database } else { Fence::Proxy })
    }

    /// The statements that fence (`true`) or unfence the old writer in the database.
    pub fn fence_statements(&self, protocol: Protocol, on: bool) -> Vec<String> {
        let configured = if on {
            &self.fence_sql
        } else {
            &self.unfence_sql
        };
        if let Some(list) = configured {
            return list.clone();
        }
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        match (protocol, on) {
            (Protocol::Mysql, true) => owned(&["SET GLOBAL read_only = ON"]),
            (Protocol::Mysql, false) => owned(&["SET GLOBAL read_only = OFF"]),
            (Protocol::Postgres, true) => owned(&[
                "ALTER SYSTEM SET default_transaction_read_only = on",
                "SELECT pg_reload_conf()",
            ]),
            (Protocol::Postgres, false) => owned(&[
                "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()",
            ]),
        }
    }
}

mod defaults {
    use std::time::Duration;
    pub fn yes() -> bool {
        true
    }
    pub fn sentinel_table() -> String {
        "switchyard_sentinel".into()
    }
    pub fn record_table() -> String {
        "switchyard_cutover".into()
    }
    pub fn max_lag() -> Duration {
        Duration::from_secs(5)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn catch_up_timeout() -> Duration {
        Duration::from_secs(2)
    }
}

/// Reports what in `[cutover]` cannot work with the rest of the config.
pub(super) fn validate_cutover(raw: &Config, problem: &mut dyn FnMut(String, String)) {
    let Some(c) = &raw.cutover else { return };
    let protocol = raw.server.protocol;
    match (c.catch_up, protocol) {
        (CatchUp::Lsn, Protocol::Mysql) => problem(
            "cutover.catch_up".into(),
            "\"lsn\" is for PostgreSQL; MySQL and MariaDB use \"gtid\"".into(),
        ),
        (CatchUp::Gtid, Protocol::Postgres) => problem(
            "cutover.catch_up".into(),
            "\"gtid\" is for MySQL and MariaDB; PostgreSQL uses \"lsn\"".into(),
        ),
        (CatchUp::Lsn, _) if c.slot.is_none() => problem(
            "cutover.slot".into(),
            "catch_up = \"lsn\" needs the name of the logical replication slot".into(),
        ),
        _ => {}
    }
    for (key, table) in [
        ("sentinel_table", &c.sentinel_table),
        ("record_table", &c.record_table),
    ] {
        if !is_table_name(table) {
            problem(
                format!("cutover.{key}"),
                format!(
                    "{table:?} is not a table name: letters, digits and _, optionally qualified as schema.table"
                ),
            );
        }
    }
    let schema_unknown = c.database.is_none()
        && raw
            .clusters
            .values()
            .any(|cl| cl.monitor_database.is_none());
    if protocol == Protocol::Mysql && c.record && !c.record_table.contains('.') && schema_unknown {
        problem(
            "cutover.record_table".into(),
            "MySQL needs a schema for the cutover record: set [cutover] database, or write record_table as schema.table (or set record = false)".into(),
        );
    }
    if c.fence_sql.is_some() != c.unfence_sql.is_some() {
        problem(
            "cutover.fence_sql".into(),
            "fence_sql and unfence_sql are set together (an abort must undo the fence)".into(),
        );
    }
    if (c.fence_sql.is_some() || c.unfence_sql.is_some()) && c.fence == Some(Fence::Proxy) {
        problem(
            "cutover.fence_sql".into(),
            "is only used with fence = \"database\" (or unset, in a fleet)".into(),
        );
    }
    for (key, d) in [
        ("drain_timeout", c.drain_timeout),
        ("catch_up_timeout", c.catch_up_timeout),
    ] {
        if d.is_zero() {
            problem(format!("cutover.{key}"), "must be longer than zero".into());
        } else if d >= raw.routing.max_pause {
            problem(
                format!("cutover.{key}"),
                format!(
                    "{d:?} does not fit in routing.max_pause ({:?}), which bounds the whole pause",
                    raw.routing.max_pause
                ),
            );
        }
    }
    if c.catch_up != CatchUp::None {
        for (name, cluster) in &raw.clusters {
            if cluster.monitor_user.is_none() {
                problem(
                    format!("clusters.{name}.monitor_user"),
                    format!(
                        "catch_up = \"{}\" connects to each writer with the monitor account",
                        c.catch_up.as_str()
                    ),
                );
            }
        }
    }
    if raw.clusters.len() < 2 {
        problem(
            "cutover".into(),
            "a cutover needs at least two [clusters.NAME]".into(),
        );
    }
}

/// A plain, optionally qualified table name (it is written into SQL as it is).
pub(super) fn is_table_name(name: &str) -> bool {
    let part = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

#[cfg(test)]
mod tests {
    use super::is_table_name;

    /// The problem paths `switchyard check` reports for a MySQL migration whose `[cutover]`
    /// section has `cutover`.
    fn problems(cutover: &str) -> Vec<String> {
        let text = format!(
            r#"
            [server]
            protocol = "mysql"
            listen = "127.0.0.1:3307"
            [[users]]
            name = "app"
            password = "secret"
            [clusters.old]
            writer = "10.0.0.1:3306"
            monitor_user = "m"
            monitor_password = "p"
            [clusters.new]
            writer = "10.0.0.2:3306"
            monitor_user = "m"
            monitor_password = "p"
            [routing]
            active = "old"
            [cutover]
            catch_up = "gtid"
            {cutover}
            "#
        );
        let raw = toml::from_str(&text).expect("parse");
        match crate::config::validate(raw, &|_| None) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn a_mysql_record_needs_a_schema() {
        assert_eq!(problems(""), ["cutover.record_table"]);
        assert!(problems("database = \"app\"").is_empty());
        assert!(problems("record_table = \"ops.cutovers\"").is_empty());
        assert!(problems("record = false").is_empty());
        assert_eq!(
            problems("database = \"app\"\nsentinel_table = \"x; DROP TABLE y\""),
            ["cutover.sentinel_table"]
        );
    }

    #[test]
    fn table_names_are_plain_identifiers() {
        for good in ["switchyard_cutover", "ops.switchyard_cutover", "_t1"] {
            assert!(is_table_name(good), "{good}");
        }
        for bad in ["", "1t", "a.b.c", "t; DROP TABLE x", "t'", ".t", "s."] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }
}
