//! A writer failover of a MariaDB cluster, as Aurora does one: semi-synchronous replication
//! (`AFTER_SYNC`, with a timeout long enough never to fall back to asynchronous), so that
//! every commit acknowledged to a client is in the replica's relay log; then the primary
//! killed, and the replica promoted once it has applied all it received.

use mysql_async::Row;
use mysql_async::prelude::Queryable;

use super::{Backoff, MariaCluster, MariaServer, REPLICATION_TIMEOUT, admin, close};

/// How long the primary waits for a replica's acknowledgement before it would commit
/// without one: far longer than any test runs.
const SEMI_SYNC_TIMEOUT_MS: u64 = 3_600_000;

impl MariaCluster {
    /// Makes every commit on the primary wait until replica `n` has the transaction in its
    /// relay log, and waits until the primary sees that replica acknowledging. Only the
    /// primary waits: the promoted replica commits on its own.
    pub async fn replicate_semi_synchronously(&self, n: usize) {
        let mut primary = admin(&self.primary).await;
        primary
            .query_drop(format!(
                "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC;
                 SET GLOBAL rpl_semi_sync_master_timeout = {SEMI_SYNC_TIMEOUT_MS};
                 SET GLOBAL rpl_semi_sync_master_enabled = ON"
            ))
            .await
            .unwrap_or_else(|e| panic!("turn semi-sync on, on the primary: {e}"));
        let replica = &self.replicas[n];
        let mut conn = admin(replica).await;
        // The IO thread reads the setting when it starts.
        conn.query_drop(
            "SET GLOBAL rpl_semi_sync_slave_enabled = ON;
             STOP SLAVE IO_THREAD; START SLAVE IO_THREAD",
        )
        .await
        .unwrap_or_else(|e| panic!("turn semi-sync on, on {}: {e}", replica.name));
        close(conn).await;
        let mut backoff = Backoff::new(REPLICATION_TIMEOUT);
        loop {
            let status = semi_sync_status(&mut primary).await;
            if status == ("ON".to_string(), 1) {
                break;
            }
            assert!(
                backoff.wait().await,
                "semi-sync did not start within {REPLICATION_TIMEOUT:?}: status, clients {status:?}\n{}",
                self.primary.log_tail()
            );
        }
        close(primary).await;
    }

    /// Promotes replica `n`: waits until it has applied every transaction it received, then
    /// stops replication and makes it writable.
    pub async fn promote(&self, n: usize) {
        let replica = &self.replicas[n];
        let mut conn = admin(replica).await;
        let status: Option<Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .unwrap_or_else(|e| panic!("SHOW SLAVE STATUS on {}: {e}", replica.name));
        let received: String = status
            .and_then(|row| row.get_opt("Gtid_IO_Pos").and_then(Result::ok))
            .unwrap_or_default();
        let timeout = REPLICATION_TIMEOUT.as_secs();
        let applied: Option<i32> = conn
            .exec_first("SELECT MASTER_GTID_WAIT(?, ?)", (&received, timeout))
            .await
            .unwrap_or_else(|e| panic!("MASTER_GTID_WAIT on {}: {e}", replica.name));
        assert_eq!(
            applied,
            Some(0),
            "{} did not apply what it received ({received}) within {REPLICATION_TIMEOUT:?}\n{}",
            replica.name,
            replica.log_tail()
        );
        conn.query_drop("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
            .await
            .unwrap_or_else(|e| panic!("promote {}: {e}", replica.name));
        close(conn).await;
    }
}

impl MariaServer {
    /// Kills the server as `kill -9` does and waits until it is gone.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        testkit::signal(self.pid(), testkit::Signal::KILL);
        self.process.wait_stopped();
    }
}

/// `Rpl_semi_sync_master_status` and `Rpl_semi_sync_master_clients` of a primary.
async fn semi_sync_status(primary: &mut mysql_async::Conn) -> (String, u64) {
    let rows: Vec<(String, String)> = primary
        .query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
        .await
        .unwrap_or_else(|e| panic!("read the primary's semi-sync status: {e}"));
    let value = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let clients = value("Rpl_semi_sync_master_clients").parse().unwrap_or(0);
    (value("Rpl_semi_sync_master_status"), clients)
}
