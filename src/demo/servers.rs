//! The two clusters of either engine behind one face: start them, name their instances,
//! describe them to switchyard's config, and read the ledger back from the new writer.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::Result;

use super::mariadb::{self, MariaClusters};
use super::postgres::{self, PgClusters};
use super::process::{Account, Processes};
use super::proxy::{ClusterPlan, Plan};
use super::{APP_DATABASE, Engine, Instance, SLOT};

/// The `[cutover]` section for PostgreSQL: logical replication, caught up by the LSN of the
/// subscription's slot on the old writer.
fn postgres_cutover() -> String {
    format!(
        r#"catch_up = "lsn"
slot = "{SLOT}"
database = "{APP_DATABASE}"
max_lag = "5s"
drain_timeout = "2s"
catch_up_timeout = "2s"
"#
    )
}

/// The `[cutover]` section for MariaDB: binlog replication, caught up by GTID; the record of
/// the switch goes in the application's schema.
fn mysql_cutover() -> String {
    format!(
        r#"catch_up = "gtid"
database = "{APP_DATABASE}"
max_lag = "5s"
drain_timeout = "2s"
catch_up_timeout = "2s"
"#
    )
}

/// What switchyard's config says of the four `instances` (old writer, old replica, new
/// writer, new replica): the monitor is the superuser, which the cutover's catch-up uses too.
fn plan(engine: Engine, instances: [Instance; 4], token: String) -> Plan {
    let [old_writer, old_replica, new_writer, new_replica] = instances;
    let clusters = [
        ClusterPlan {
            name: "old",
            writer: old_writer,
            replica: old_replica,
        },
        ClusterPlan {
            name: "new",
            writer: new_writer,
            replica: new_replica,
        },
    ];
    match engine {
        Engine::Postgres => Plan {
            protocol: "postgres",
            clusters,
            monitor_user: "postgres",
            monitor_database: Some(APP_DATABASE),
            cutover: postgres_cutover(),
            token,
        },
        Engine::Mysql => Plan {
            protocol: "mysql",
            clusters,
            monitor_user: "root",
            monitor_database: None,
            cutover: mysql_cutover(),
            token,
        },
    }
}

pub enum Clusters {
    Postgres(PgClusters),
    Mysql(MariaClusters),
}

impl Engine {
    /// The account that owns the servers' files (the demo's directory is theirs).
    pub async fn account(self) -> Result<Account> {
        match self {
            Engine::Postgres => Account::named("postgres").await,
            Engine::Mysql => Account::named("mysql").await,
        }
    }

    pub fn check_installed(self) -> Result<()> {
        match self {
            Engine::Postgres => postgres::check_installed(),
            Engine::Mysql => mariadb::check_installed(),
        }
    }
}

impl Clusters {
    pub async fn start(
        engine: Engine,
        dir: &Path,
        processes: &Processes,
        sessions: usize,
    ) -> Result<Clusters> {
        Ok(match engine {
            Engine::Postgres => {
                Clusters::Postgres(postgres::start(dir, processes, sessions).await?)
            }
            Engine::Mysql => Clusters::Mysql(mariadb::start(dir, processes, sessions).await?),
        })
    }

    pub fn version(&self) -> &str {
        match self {
            Clusters::Postgres(c) => &c.version,
            Clusters::Mysql(c) => &c.version,
        }
    }

    /// Old writer, old replica, new writer, new replica.
    pub fn instances(&self) -> [Instance; 4] {
        match self {
            Clusters::Postgres(c) => [
                c.old.writer.instance(),
                c.old.replica.instance(),
                c.new.writer.instance(),
                c.new.replica.instance(),
            ],
            Clusters::Mysql(c) => [
                c.old.writer.instance(),
                c.old.replica.instance(),
                c.new.writer.instance(),
                c.new.replica.instance(),
            ],
        }
    }

    pub fn new_writer(&self) -> Instance {
        self.instances()[2].clone()
    }

    /// How the new cluster gets the old one's writes.
    pub fn replication(&self) -> String {
        match self {
            Clusters::Postgres(_) => format!(
                "logical replication old-writer -> new-writer (publication and subscription \
                 \"{SLOT}\"), streaming replication writer -> replica in each cluster"
            ),
            Clusters::Mysql(_) => "binlog replication with GTIDs: old-writer -> old-replica, \
                 old-writer -> new-writer -> new-replica"
                .into(),
        }
    }

    /// What switchyard's config says of them.
    pub fn plan(&self, token: String) -> Plan {
        let engine = match self {
            Clusters::Postgres(_) => Engine::Postgres,
            Clusters::Mysql(_) => Engine::Mysql,
        };
        plan(engine, self.instances(), token)
    }

    /// Waits until the new writer has applied everything the old one wrote.
    pub async fn wait_caught_up(&self) -> Result<()> {
        match self {
            Clusters::Postgres(c) => c.wait_caught_up().await,
            Clusters::Mysql(c) => c.wait_caught_up().await,
        }
    }

    /// Every ledger id and every counter on the new writer, read from it directly.
    pub async fn ledger(&self) -> Result<(HashSet<i64>, BTreeMap<i32, i64>)> {
        match self {
            Clusters::Postgres(c) => c.ledger().await,
            Clusters::Mysql(c) => c.ledger().await,
        }
    }

    /// A client command for the application's database: through switchyard at `addr` with
    /// the application's login, or straight to an instance as the superuser.
    pub fn client_command(&self, addr: &str, through_proxy: bool) -> String {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
        match (self, through_proxy) {
            (Clusters::Postgres(_), true) => format!(
                "psql \"postgres://{}:{}@{addr}/{APP_DATABASE}\"",
                super::APP_USER,
                super::APP_PASSWORD
            ),
            (Clusters::Postgres(_), false) => {
                format!("psql -h {host} -p {port} -U postgres {APP_DATABASE}")
            }
            (Clusters::Mysql(_), true) => format!(
                "mariadb -h {host} -P {port} -u {} -p{} {APP_DATABASE}",
                super::APP_USER,
                super::APP_PASSWORD
            ),
            (Clusters::Mysql(_), false) => {
                format!("mariadb -h {host} -P {port} -u root {APP_DATABASE}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::proxy::{accepts_cutover_section, config_text};

    /// The configs the demo writes pass this build's validation: with `[cutover]` once the
    /// build knows it, without it until then.
    #[test]
    fn the_demo_configs_are_valid() {
        for engine in [Engine::Postgres, Engine::Mysql] {
            let instances = ["old-writer", "old-replica", "new-writer", "new-replica"];
            let instances = std::array::from_fn(|i| Instance {
                name: instances[i].into(),
                addr: format!("127.0.0.1:{}", 5001 + i),
            });
            let plan = plan(engine, instances, "t0ken".into());
            let dir = Path::new("/nonexistent/demo");
            let with = config_text(&plan, 6000, 6001, dir, true);
            assert!(with.contains("[cutover]\ncatch_up = "), "{with}");
            let text = match accepts_cutover_section(&with).expect("readable") {
                true => with,
                false => config_text(&plan, 6000, 6001, dir, false),
            };
            let raw: switchyard::config::Config = toml::from_str(&text).expect("parse");
            let valid = switchyard::config::validate(raw, &|_| None)
                .unwrap_or_else(|problems| panic!("{problems:?}\n{text}"));
            assert_eq!(valid.raw.routing.active, "old");
            assert_eq!(valid.raw.clusters["new"].readers, ["127.0.0.1:5004"]);
            assert_eq!(valid.admin_token.as_deref(), Some("t0ken"));
        }
    }
}
