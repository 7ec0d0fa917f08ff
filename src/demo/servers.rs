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

/// The `[cutover]` section for PostgreSQL: logical replication, caught up by LSN.
const POSTGRES_CUTOVER: &str = r#"catch_up = "lsn"
slot = "switchyard"
database = "app"
max_lag = "5s"
drain_timeout = "2s"
catch_up_timeout = "2s"
"#;

/// The `[cutover]` section for MariaDB: binlog replication, caught up by GTID.
const MYSQL_CUTOVER: &str = r#"catch_up = "gtid"
max_lag = "5s"
drain_timeout = "2s"
catch_up_timeout = "2s"
"#;

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
        let [old_writer, old_replica, new_writer, new_replica] = self.instances();
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
        match self {
            Clusters::Postgres(_) => Plan {
                protocol: "postgres",
                clusters,
                monitor_user: "postgres",
                monitor_database: Some(APP_DATABASE),
                cutover: POSTGRES_CUTOVER.into(),
                token,
            },
            Clusters::Mysql(_) => Plan {
                protocol: "mysql",
                clusters,
                monitor_user: "root",
                monitor_database: None,
                cutover: MYSQL_CUTOVER.into(),
                token,
            },
        }
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
