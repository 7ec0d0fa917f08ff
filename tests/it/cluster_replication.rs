//! The harness's replication between two clusters, old → new, that the cutover tests build
//! on: PostgreSQL logical replication (a subscription on the new primary) and MariaDB binlog
//! replication (the new primary a replica of the old). In both, rows written on the old
//! primary reach the new primary and, through it, the new replica; pausing replication stops
//! them, and resuming it brings them.

use crate::support;

use std::thread;

use mysql_async::prelude::Queryable;

use support::mariadb::ClusterIds;
use support::{MariaCluster, MariaServer, PgCluster, PgServer};

type Rows = Vec<(i64, String)>;

/// Starts two clusters side by side.
fn start_both<T: Send>(old: impl FnOnce() -> T + Send, new: impl FnOnce() -> T + Send) -> (T, T) {
    thread::scope(|scope| {
        let old = scope.spawn(old);
        let new = scope.spawn(new);
        let join = |handle: thread::ScopedJoinHandle<'_, T>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (join(old), join(new))
    })
}

fn numbered(labels: &[&str], first_id: i64) -> Rows {
    (first_id..)
        .zip(labels)
        .map(|(id, label)| (id, label.to_string()))
        .collect()
}

async fn pg_insert(cluster: &PgCluster, db: &str, labels: &[&str]) {
    let client = cluster.superuser(&cluster.primary, db).await;
    for label in labels {
        client
            .execute("INSERT INTO items (label) VALUES ($1)", &[label])
            .await
            .expect("insert on the old primary");
    }
}

async fn pg_rows(cluster: &PgCluster, server: &PgServer, db: &str) -> Rows {
    let client = cluster.superuser(server, db).await;
    let rows = client
        .query("SELECT id, label FROM items ORDER BY id", &[])
        .await
        .unwrap_or_else(|e| panic!("read items on {}: {e}", server.name));
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// Rows on the new primary and on its replica.
async fn pg_new_rows(new: &PgCluster, db: &str) -> [Rows; 2] {
    [
        pg_rows(new, &new.primary, db).await,
        pg_rows(new, &new.replicas[0], db).await,
    ]
}

#[tokio::test]
async fn postgres_subscription_brings_old_rows_to_the_new_cluster() {
    let (old, new) = start_both(|| PgCluster::start(1), || PgCluster::start(1));
    let db = old.create_database("cross_cluster").await;
    let table = "CREATE TABLE items (id bigserial PRIMARY KEY, label text NOT NULL)";
    new.execute_on_both(&old, &db, table).await;
    pg_insert(&old, &db, &["before"]).await;

    new.subscribe_to(&old, &db, "cutover").await;
    new.wait_subscribed(&db, "cutover").await;
    pg_insert(&old, &db, &["after", "later"]).await;
    new.wait_caught_up(&old, "cutover").await;
    let copied = numbered(&["before", "after", "later"], 1);
    assert_eq!(pg_rows(&old, &old.primary, &db).await, copied);
    assert_eq!(pg_new_rows(&new, &db).await, [copied.clone(), copied]);

    new.disable_subscription(&old, &db, "cutover").await;
    pg_insert(&old, &db, &["while disabled"]).await;
    // The subscription's slot is released: nothing can have come.
    let [on_primary, _] = pg_new_rows(&new, &db).await;
    assert_eq!(on_primary.len(), 3, "rows arrived while disabled");

    new.enable_subscription(&db, "cutover").await;
    new.wait_caught_up(&old, "cutover").await;
    let all = numbered(&["before", "after", "later", "while disabled"], 1);
    assert_eq!(pg_new_rows(&new, &db).await, [all.clone(), all]);

    // Copied rows leave the new sequence behind until copy_sequences.
    new.copy_sequences(&old, &db).await;
    let next: i64 = new
        .superuser(&new.primary, &db)
        .await
        .query_one("INSERT INTO items (label) VALUES ('new') RETURNING id", &[])
        .await
        .expect("insert on the new primary")
        .get(0);
    assert_eq!(next, 5);
}

async fn maria_execute(cluster: &MariaCluster, sql: &str) {
    let mut conn = cluster.admin(&cluster.primary).await;
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.disconnect().await.expect("disconnect");
}

async fn maria_insert(cluster: &MariaCluster, db: &str, labels: &[&str]) {
    for label in labels {
        let insert = format!("INSERT INTO `{db}`.items (label) VALUES ('{label}')");
        maria_execute(cluster, &insert).await;
    }
}

async fn maria_rows(cluster: &MariaCluster, server: &MariaServer, db: &str) -> Rows {
    let mut conn = cluster.admin(server).await;
    let select = format!("SELECT id, label FROM `{db}`.items ORDER BY id");
    let rows = conn
        .query(&select)
        .await
        .unwrap_or_else(|e| panic!("read items on {}: {e}", server.name));
    conn.disconnect().await.expect("disconnect");
    rows
}

/// Rows on the new primary and on its replica.
async fn maria_new_rows(new: &MariaCluster, db: &str) -> [Rows; 2] {
    [
        maria_rows(new, &new.primary, db).await,
        maria_rows(new, &new.replicas[0], db).await,
    ]
}

#[tokio::test]
async fn mariadb_new_primary_replicates_the_old_one() {
    let (old, new) = start_both(
        || MariaCluster::start_with_ids(ClusterIds::OLD, 1),
        || MariaCluster::start_with_ids(ClusterIds::NEW, 1),
    );
    // Created before replication starts: the new primary replicates from the binlog's start.
    let db = old.create_database("cross_cluster").await;
    new.replicate_from(&old).await;
    let table = format!(
        "CREATE TABLE `{db}`.items (id bigint AUTO_INCREMENT PRIMARY KEY, label text NOT NULL)"
    );
    maria_execute(&old, &table).await;
    maria_insert(&old, &db, &["first", "second"]).await;
    new.wait_caught_up(&old).await;
    let copied = numbered(&["first", "second"], 1);
    assert_eq!(maria_rows(&old, &old.primary, &db).await, copied);
    assert_eq!(maria_new_rows(&new, &db).await, [copied.clone(), copied]);

    new.pause_replication().await;
    maria_insert(&old, &db, &["while paused"]).await;
    // STOP SLAVE has returned: nothing can have come.
    let [on_primary, _] = maria_new_rows(&new, &db).await;
    assert_eq!(on_primary.len(), 2, "rows arrived while paused");

    new.resume_replication(&old).await;
    new.wait_caught_up(&old).await;
    let all = numbered(&["first", "second", "while paused"], 1);
    assert_eq!(maria_new_rows(&new, &db).await, [all.clone(), all]);
}
