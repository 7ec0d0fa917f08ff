//! A writer failover of a PostgreSQL cluster, as Aurora does one: synchronous replication,
//! so that every commit acknowledged to a client is on the replica (Aurora's shared storage
//! gives that), then the primary killed and the replica promoted.

use super::{PgCluster, REPLICATION_TIMEOUT, retry};

impl PgCluster {
    /// Makes every commit on the primary wait until a standby has flushed it
    /// (`synchronous_standby_names = '*'`, with the default `synchronous_commit = on`), and
    /// waits until a standby is synchronous. Only the primary has the setting: a promoted
    /// replica, with no standby of its own, commits on its own.
    pub async fn replicate_synchronously(&self) {
        let primary = self.superuser(&self.primary, "postgres").await;
        // One statement each: ALTER SYSTEM refuses to run in a (multi-statement) block.
        for statement in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            primary
                .batch_execute(statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
        }
        let synchronous = retry(REPLICATION_TIMEOUT, async || {
            let query = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'";
            let count: i64 = primary
                .query_one(query, &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if count > 0 {
                Ok(())
            } else {
                Err("no synchronous standby yet".to_string())
            }
        });
        if let Err(why) = synchronous.await {
            panic!(
                "replication did not become synchronous: {why}\n{}",
                self.primary.log_tail()
            );
        }
    }

    /// Promotes replica `n` (`pg_promote`, which waits until it is done). It has replayed
    /// all the WAL it received by then.
    pub async fn promote(&self, n: usize) {
        let replica = &self.replicas[n];
        let client = self.superuser(replica, "postgres").await;
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, 60)", &[])
            .await
            .unwrap_or_else(|e| panic!("promote {}: {e}", replica.name))
            .get(0);
        assert!(
            promoted,
            "{} was not promoted within 60 s\n{}",
            replica.name,
            replica.log_tail()
        );
    }
}
