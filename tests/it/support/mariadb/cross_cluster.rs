//! Binlog replication from one MariaDB cluster to another, as a migration fills a new cluster
//! from an old one: the new primary is a replica of the old primary and, with
//! `--log-slave-updates` (every server has it), writes what it applies into its own binlog,
//! which its own replicas replicate. Everything flows, DDL included: a database or table
//! created on the old primary appears on the new cluster.
//!
//! Start the new cluster with [`ClusterIds::NEW`](super::ClusterIds::NEW), for two reasons:
//!
//! - **Server ids.** A new primary with the old primary's id refuses to replicate it ("master
//!   and slave have equal MariaDB server ids"). A new replica with that id would silently skip
//!   the old primary's events that reach it through the new primary (a replica skips events
//!   that carry its own id, taking them for its own writes come back around a ring). And a new
//!   primary with an old replica's id would keep kicking that replica off the old primary,
//!   which serves one connection per replica id.
//! - **GTID domains.** The new primary writes transactions of its own (its accounts, at
//!   least) before it replicates. In the old cluster's domain 0 they would take sequence
//!   numbers that the old primary's GTIDs then repeat, and under `--gtid-strict-mode` the new
//!   primary refuses to binlog an out-of-order GTID, stopping replication. In a domain of its
//!   own, each domain's GTIDs come from one cluster only, so `MASTER_GTID_WAIT` on the old
//!   primary's `@@gtid_binlog_pos` means what it says on every server of the new cluster.
//!
//! The new primary replicates the old one's binlog from its start (its `gtid_slave_pos` is
//! empty), so it also gets what the old cluster did before [`MariaCluster::replicate_from`]:
//! the accounts, which it already has (hence `CREATE USER IF NOT EXISTS` in
//! `create_accounts`), and any database created there (which must not exist here already).

use mysql_async::prelude::Queryable;

use super::{
    MariaCluster, admin, binlog_position, close, replicate, start_replicating, wait_applied,
};

impl MariaCluster {
    /// Makes this cluster's primary a replica of `old`'s primary (GTID, from the start of the
    /// old primary's binlog) and waits until both replication threads run. This cluster must
    /// have been started with server ids and a GTID domain of its own, e.g.
    /// [`ClusterIds::NEW`](super::ClusterIds::NEW).
    pub async fn replicate_from(&self, old: &MariaCluster) {
        replicate(&self.primary, &old.primary).await;
    }

    /// `STOP SLAVE` on this cluster's primary: once it returns, nothing more comes from the
    /// old primary until [`MariaCluster::resume_replication`].
    pub async fn pause_replication(&self) {
        let mut conn = admin(&self.primary).await;
        conn.query_drop("STOP SLAVE")
            .await
            .unwrap_or_else(|e| panic!("STOP SLAVE on the new primary: {e}"));
        close(conn).await;
    }

    /// `START SLAVE` on this cluster's primary, which resumes where it stopped; waits until both
    /// replication threads run.
    pub async fn resume_replication(&self, old: &MariaCluster) {
        start_replicating(&self.primary, &old.primary).await;
    }

    /// Waits until this cluster's primary and every replica have applied `old`'s primary's
    /// binlog up to its current GTID position: then every table here has every row the old
    /// primary has.
    pub async fn wait_caught_up(&self, old: &MariaCluster) {
        let position = binlog_position(&old.primary).await;
        for server in std::iter::once(&self.primary).chain(&self.replicas) {
            wait_applied(server, &position).await;
        }
    }
}
