//! Cutover of PostgreSQL: an old cluster (primary + replica) replicated by logical
//! replication to a new one (primary + replica), with a load of reads and ledgered writes
//! running through the proxy the whole time. Zero client errors, every acknowledged write
//! on the new writer, sequences continuing without duplicates, aborts that leave the
//! clients on the old cluster, three proxies cut over by one `switchyard cutover`, and a
//! restarted proxy that stays on the new cluster, with its state file or from the record
//! on the new writer.

use crate::support;

use std::path::Path;
use std::sync::Arc;

use support::PgCluster;
use support::ledger::Ledger;
use support::postgres::pair;
use support::proxy::{ADMIN_TOKEN, ClusterAddrs, Proxy, cutover_config, in_pool_mode, json_body};

const SCHEMA: &str =
    "CREATE TABLE ledger (id bigserial PRIMARY KEY, client_key text UNIQUE NOT NULL);
CREATE TABLE switchyard_sentinel (id varchar(64) PRIMARY KEY, written_at timestamp)";

/// A database replicated old → new by a subscription named after it.
async fn replicated_database(prefix: &str) -> String {
    let p = pair();
    let db = p.old.create_database(prefix).await;
    p.new.execute_on_both(&p.old, &db, SCHEMA).await;
    p.new.subscribe_to(&p.old, &db, &db).await;
    p.new.wait_subscribed(&db, &db).await;
    db
}

fn config(db: &str, state_dir: &Path, cutover: &str) -> String {
    let p = pair();
    let addrs = |c: &PgCluster| ClusterAddrs {
        writer: format!("{}:{}", c.primary.host, c.primary.port),
        reader: format!("{}:{}", c.replicas[0].host, c.replicas[0].port),
    };
    let cutover = format!("database = \"{db}\"\n{cutover}");
    cutover_config(
        "postgres",
        addrs(&p.old),
        addrs(&p.new),
        "postgres",
        state_dir,
        &cutover,
    )
}

fn lsn(db: &str) -> String {
    format!("catch_up = \"lsn\"\nslot = \"{db}\"")
}

/// One client of the load: writes (in a transaction or not) each followed by a read of its
/// own row, and plain reads; every acknowledged write goes in the ledger.
async fn worker(proxy: std::net::SocketAddr, db: String, ledger: Arc<Ledger>, n: usize) {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname={db}",
        proxy.port()
    );
    let (mut client, conn) = match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => return ledger.error(format!("connect: {e}")),
    };
    tokio::spawn(conn);
    let mut i = 0;
    while !ledger.stopped() {
        i += 1;
        let key = format!("w{n}-{i}");
        let result: Result<(), String> = async {
            if i % 2 == 0 {
                let tx = client.transaction().await.map_err(|e| e.to_string())?;
                tx.execute("INSERT INTO ledger (client_key) VALUES ($1)", &[&key])
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
            } else {
                client
                    .execute("INSERT INTO ledger (client_key) VALUES ($1)", &[&key])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let seen: i64 = client
                .query_one("SELECT count(*) FROM ledger WHERE client_key = $1", &[&key])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if seen != 1 {
                return Err(format!("{key}: own write not visible"));
            }
            client
                .simple_query("SELECT count(*) FROM ledger")
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => ledger.ack(key),
            Err(e) => {
                ledger.error(format!("{key}: {e}"));
                return;
            }
        }
    }
}

fn start_load(proxies: &[&Proxy], db: &str, sessions: usize) -> Arc<Ledger> {
    let ledger = Arc::new(Ledger::default());
    for n in 0..sessions {
        let proxy = proxies[n % proxies.len()].addr;
        tokio::spawn(worker(proxy, db.to_owned(), Arc::clone(&ledger), n));
    }
    ledger
}

async fn keys_on(cluster: &PgCluster, db: &str) -> std::collections::HashSet<String> {
    let client = cluster.superuser(&cluster.primary, db).await;
    let rows = client
        .query("SELECT client_key FROM ledger", &[])
        .await
        .expect("read the ledger");
    rows.iter().map(|r| r.get(0)).collect()
}

async fn assert_all_on_new(ledger: &Ledger, db: &str) {
    let on_new = keys_on(&pair().new, db).await;
    let missing: Vec<_> = ledger
        .acknowledged()
        .into_iter()
        .filter(|k| !on_new.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes are not on the new writer: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test]
async fn a_cutover_under_load_loses_nothing_and_survives_a_restart() {
    let db = replicated_database("cutover").await;
    let state = tempfile::tempdir().unwrap();
    let text = config(&db, state.path(), &lsn(&db));
    let proxy = Proxy::from_config(&text).await;
    let ledger = start_load(&[&proxy], &db, 6);
    ledger.wait_for_writes(60).await;

    let (code, body) = proxy.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
    let report = json_body(&body);
    assert_eq!(code, 200, "{body}");
    assert_eq!(report["outcome"], "switched", "{body}");
    assert_eq!(report["aborted"], 0, "{body}");
    println!(
        "postgres cutover pause: {} ms, {} transactions held",
        report["pause_ms"], report["held"]
    );
    ledger.wait_for_writes(60).await;
    ledger.stop();
    assert_eq!(ledger.errors(), Vec::<String>::new());
    assert_all_on_new(&ledger, &db).await;

    // Sequences continued on the new writer past every id the old one handed out.
    let p = pair();
    let old = p.old.superuser(&p.old.primary, &db).await;
    let new = p.new.superuser(&p.new.primary, &db).await;
    let old_max: i64 = old
        .query_one("SELECT COALESCE(max(id), 0) FROM ledger", &[])
        .await
        .unwrap()
        .get(0);
    let new_seq: i64 = new
        .query_one("SELECT last_value FROM ledger_id_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        new_seq > old_max,
        "new sequence {new_seq} <= old max id {old_max}"
    );

    // The old cluster is fenced: a write through the proxy to it is impossible, and a
    // restarted proxy (same state_dir) sends writes to the new cluster.
    drop(proxy);
    let restarted = Proxy::from_config(&text).await;
    let client = restarted.connect(&db).await;
    client
        .execute(
            "INSERT INTO ledger (client_key) VALUES ('after-restart')",
            &[],
        )
        .await
        .expect("write through the restarted proxy");
    assert!(keys_on(&p.new, &db).await.contains("after-restart"));
    let status = restarted.admin_get("/status").await;
    assert!(status.contains(r#""active":"new""#), "{status}");

    // A proxy without the state file (a new container) finds the cutover recorded on the
    // new writer: writes go to new, and old stays read-only.
    let recorded: String = new
        .query_one(
            "SELECT active || ' ' || fenced FROM switchyard_cutover ORDER BY switched_at_ms DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, "new old");
    let empty = tempfile::tempdir().unwrap();
    let fresh = Proxy::from_config(&config(&db, empty.path(), &lsn(&db))).await;
    fresh
        .connect(&db)
        .await
        .execute(
            "INSERT INTO ledger (client_key) VALUES ('fresh-proxy')",
            &[],
        )
        .await
        .expect("write through a proxy without a state file");
    assert!(keys_on(&p.new, &db).await.contains("fresh-proxy"));
    let routing = json_body(&fresh.admin_get("/status").await)["routing"].clone();
    assert_eq!(routing["active"], "new", "{routing}");
    assert_eq!(routing["modes"]["old"], "read_only", "{routing}");
}

#[tokio::test]
async fn a_cutover_that_cannot_catch_up_aborts_and_clients_stay_on_old() {
    let db = replicated_database("abort").await;
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::from_config(&config(&db, state.path(), &lsn(&db))).await;
    let ledger = start_load(&[&proxy], &db, 4);
    ledger.wait_for_writes(30).await;

    // The new side cannot apply anything while this lock is held: replication is stuck.
    let p = pair();
    let mut blocker = p.new.superuser(&p.new.primary, &db).await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let (code, body) = proxy.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
    let report = json_body(&body);
    assert_eq!(code, 409, "{body}");
    assert_eq!(report["outcome"], "aborted", "{body}");
    assert!(
        report["error"].as_str().unwrap_or("").contains("catch_up"),
        "{body}"
    );
    tx.rollback().await.unwrap();

    ledger.wait_for_writes(30).await;
    ledger.stop();
    assert_eq!(ledger.errors(), Vec::<String>::new());
    let status = proxy.admin_get("/status").await;
    assert!(status.contains(r#""active":"old""#), "{status}");
    let on_old = keys_on(&p.old, &db).await;
    assert!(ledger.acknowledged().iter().all(|k| on_old.contains(k)));

    // Nothing recorded the aborted cutover: a proxy without a state file serves old.
    let empty = tempfile::tempdir().unwrap();
    let fresh = Proxy::from_config(&config(&db, empty.path(), &lsn(&db))).await;
    let routing = json_body(&fresh.admin_get("/status").await)["routing"].clone();
    assert_eq!(routing["active"], "old", "{routing}");
    assert_eq!(routing["modes"]["old"], "read_write", "{routing}");
}

#[tokio::test]
async fn three_proxies_cut_over_together_with_the_cli() {
    let db = replicated_database("three").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut proxies = Vec::new();
    for dir in &dirs {
        // Three proxies make a fleet, whose default fence is the database: server-wide, and
        // the other cutover tests share the old server.
        let cutover = "catch_up = \"sentinel\"\nfence = \"proxy\"";
        proxies.push(Proxy::from_config(&config(&db, dir.path(), cutover)).await);
    }
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let ledger = start_load(&refs, &db, 6);
    ledger.wait_for_writes(60).await;

    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cli.arg("cutover")
        .arg("--to")
        .arg("new")
        .arg("--token")
        .arg(ADMIN_TOKEN);
    for p in &proxies {
        cli.arg("--admin").arg(format!("http://{}", p.admin));
    }
    let out = cli.output().await.expect("run switchyard cutover");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "switchyard cutover failed");
    assert!(stdout.contains("switched: active cluster new"), "{stdout}");
    assert!(stdout.contains("aborted      0 transactions"), "{stdout}");

    ledger.wait_for_writes(60).await;
    ledger.stop();
    assert_eq!(ledger.errors(), Vec::<String>::new());
    assert_all_on_new(&ledger, &db).await;
    for p in &proxies {
        let status = p.admin_get("/status").await;
        assert!(status.contains(r#""active":"new""#), "{status}");
    }
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    {
        let db = replicated_database("dry").await;
        let state = tempfile::tempdir().unwrap();
        let proxy = Proxy::from_config(&config(&db, state.path(), &lsn(&db))).await;
        let (code, body) = proxy
            .admin_post("/v1/cutover", r#"{"to": "new", "dry_run": true}"#)
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(json_body(&body)["outcome"], "dry_run", "{body}");
        let status = proxy.admin_get("/status").await;
        assert!(status.contains(r#""active":"old""#), "{status}");
    }
}

/// The cutover's check (its preflight) opens on the new writer as many connections as the
/// proxy's sessions hold on the old one; the sessions that move at the switch take them,
/// and log in to nothing then.
#[tokio::test]
async fn the_check_warms_the_new_writers_pool_and_the_sessions_take_it() {
    let db = replicated_database("warm").await;
    let state = tempfile::tempdir().unwrap();
    // Session mode: each session holds one writer connection.
    let config = in_pool_mode(&config(&db, state.path(), &lsn(&db)), "session");
    let proxy = Proxy::from_config(&config).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = proxy.connect(&db).await;
        client.batch_execute("SELECT 1").await.expect("a session");
        clients.push(client);
    }
    let p = pair();
    let new_writer = format!("{}:{}", p.new.primary.host, p.new.primary.port);
    assert_eq!(
        proxy.pool_opened(&new_writer, &db).await,
        0.0,
        "nothing yet"
    );
    let (code, body) = proxy
        .admin_post("/v1/cutover", r#"{"to": "new", "dry_run": true}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        proxy.pool_opened(&new_writer, &db).await,
        0.0,
        "a dry run opens nothing"
    );
    proxy.cut_over_warmed(&new_writer, &db, 3.0).await;
    for (i, client) in clients.iter().enumerate() {
        let insert = format!("INSERT INTO ledger (client_key) VALUES ('warm-{i}')");
        client
            .batch_execute(&insert)
            .await
            .expect("a write after the switch");
    }
    assert_eq!(
        proxy.pool_opened(&new_writer, &db).await,
        3.0,
        "the sessions moved onto the warm connections"
    );
}

#[tokio::test]
async fn a_client_that_only_began_its_transaction_does_not_hold_the_cutover() {
    let db = replicated_database("begun").await;
    let state = tempfile::tempdir().unwrap();
    // Transaction mode: the proxy answers the BEGIN itself.
    let text = in_pool_mode(&config(&db, state.path(), &lsn(&db)), "transaction");
    let proxy = Proxy::from_config(&text).await;
    let client = proxy.connect(&db).await;
    client.batch_execute("BEGIN").await.expect("BEGIN");
    // Nothing of the transaction runs on the old writer: the drain does not wait for it
    // (a transaction open there would hold the drain past drain_timeout, and abort).
    let (code, body) = proxy.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_body(&body)["outcome"], "switched", "{body}");
    // The transaction starts on the new writer with its first statement, and commits there.
    client
        .batch_execute("INSERT INTO ledger (client_key) VALUES ('begun-before')")
        .await
        .expect("the first statement, after the switch");
    client.batch_execute("COMMIT").await.expect("COMMIT");
    let p = pair();
    assert!(keys_on(&p.new, &db).await.contains("begun-before"));
    assert!(!keys_on(&p.old, &db).await.contains("begun-before"));
}
