//! Cutover of MariaDB: an old cluster (primary + replica) whose binlog the new cluster's
//! primary replicates by GTID, with a load of reads and ledgered writes running through the
//! proxy the whole time: zero client errors and every acknowledged write on the new writer;
//! an abort when the new cluster cannot catch up leaves the clients on the old one; a
//! fleet of three proxies, one of which the operator cannot reach, cut over as one.

use crate::support;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread;

use mysql_async::prelude::Queryable;

use support::fault::BlackHole;
use support::ledger::Ledger;
use support::mariadb::ClusterIds;
use support::proxy::{ADMIN_TOKEN, ClusterAddrs, Proxy, cutover_config, in_pool_mode, json_body};
use support::{Backoff, MariaCluster};

/// The abort test blocks the new primary's (single) replication thread, which would stall
/// the other test's catch-up: the tests of this module take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Pair {
    old: MariaCluster,
    new: MariaCluster,
}

fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let (old, new) = thread::scope(|s| {
            let old = s.spawn(|| MariaCluster::start(1));
            let new = s.spawn(|| MariaCluster::start_with_ids(ClusterIds::NEW, 1));
            let join = |h: thread::ScopedJoinHandle<'_, MariaCluster>| {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            };
            (join(old), join(new))
        });
        support::block_on(new.replicate_from(&old));
        Pair { old, new }
    })
}

/// A database created on the old primary (replication brings it and its table to new).
/// Lifts a database fence an earlier test left on old, and restarts replication into new
/// where one stopped it.
async fn replicated_database(prefix: &str) -> String {
    let p = pair();
    let mut admin = p.old.admin(&p.old.primary).await;
    admin
        .query_drop("SET GLOBAL read_only = OFF")
        .await
        .unwrap();
    let mut new_admin = p.new.admin(&p.new.primary).await;
    new_admin.query_drop("START SLAVE").await.unwrap();
    let db = p.old.create_database(prefix).await;
    admin
        .query_drop(format!(
            "CREATE TABLE `{db}`.ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, client_key VARCHAR(64) NOT NULL UNIQUE)"
        ))
        .await
        .expect("create the ledger");
    p.new.wait_caught_up(&p.old).await;
    db
}

/// `GRANT ALL` includes READ_ONLY ADMIN, which writes through `read_only`: the application
/// account of a migration does not have it, so the database fence holds it too.
async fn app_obeys_read_only(cluster: &MariaCluster) {
    let mut admin = cluster.admin(&cluster.primary).await;
    admin
        .query_drop("REVOKE READ_ONLY ADMIN ON *.* FROM 'app'@'%'")
        .await
        .expect("revoke READ_ONLY ADMIN from app");
}

fn config(db: &str, state_dir: &Path) -> String {
    let p = pair();
    let addrs = |c: &MariaCluster| ClusterAddrs {
        writer: format!("{}:{}", c.primary.host, c.primary.port),
        reader: format!("{}:{}", c.replicas[0].host, c.replicas[0].port),
    };
    let cutover = format!("catch_up = \"gtid\"\ndatabase = \"{db}\"");
    cutover_config(
        "mysql",
        addrs(&p.old),
        addrs(&p.new),
        "root",
        state_dir,
        &cutover,
    )
}

/// One client of the load: writes (in a transaction or not), each followed by a read of its
/// own row as a prepared statement, and plain reads.
async fn worker(proxy: std::net::SocketAddr, db: String, ledger: Arc<Ledger>, n: usize) {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db))
        .prefer_socket(false);
    let mut conn = match mysql_async::Conn::new(opts).await {
        Ok(c) => c,
        Err(e) => return ledger.error(format!("connect: {e}")),
    };
    let mut i = 0;
    while !ledger.stopped() {
        i += 1;
        let key = format!("w{n}-{i}");
        let result: Result<(), mysql_async::Error> = async {
            if i % 2 == 0 {
                conn.query_drop("BEGIN").await?;
                conn.exec_drop("INSERT INTO ledger (client_key) VALUES (?)", (&key,))
                    .await?;
                conn.query_drop("COMMIT").await?;
            } else {
                conn.exec_drop("INSERT INTO ledger (client_key) VALUES (?)", (&key,))
                    .await?;
            }
            let seen: Option<i64> = conn
                .exec_first("SELECT COUNT(*) FROM ledger WHERE client_key = ?", (&key,))
                .await?;
            if seen != Some(1) {
                return Err(mysql_async::Error::Other(
                    format!("{key}: own write not visible").into(),
                ));
            }
            let _: Option<i64> = conn.query_first("SELECT COUNT(*) FROM ledger").await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => ledger.ack(key),
            Err(e) => return ledger.error(format!("{key}: {e}")),
        }
    }
}

fn start_load(proxy: &Proxy, db: &str, sessions: usize) -> Arc<Ledger> {
    let ledger = Arc::new(Ledger::default());
    for n in 0..sessions {
        tokio::spawn(worker(proxy.addr, db.to_owned(), Arc::clone(&ledger), n));
    }
    ledger
}

async fn keys_on(cluster: &MariaCluster, db: &str) -> std::collections::HashSet<String> {
    let mut admin = cluster.admin(&cluster.primary).await;
    admin
        .query(format!("SELECT client_key FROM `{db}`.ledger"))
        .await
        .expect("read the ledger")
        .into_iter()
        .collect()
}

#[tokio::test]
async fn a_cutover_under_load_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let db = replicated_database("cutover").await;
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::from_config(&config(&db, state.path())).await;
    let ledger = start_load(&proxy, &db, 6);
    ledger.wait_for_writes(60).await;

    let (code, body) = proxy.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
    let report = json_body(&body);
    assert_eq!(code, 200, "{body}");
    assert_eq!(report["outcome"], "switched", "{body}");
    assert_eq!(report["aborted"], 0, "{body}");
    println!(
        "mysql cutover pause: {} ms, {} transactions held; steps {}",
        report["pause_ms"], report["held"], report["steps"]
    );
    ledger.wait_for_writes(60).await;
    ledger.stop();
    assert_eq!(ledger.errors(), Vec::<String>::new());
    let on_new = keys_on(&pair().new, &db).await;
    let missing: Vec<_> = ledger
        .acknowledged()
        .into_iter()
        .filter(|k| !on_new.contains(k))
        .collect();
    assert!(missing.is_empty(), "not on the new writer: {missing:?}");
    let status = proxy.admin_get("/status").await;
    assert!(status.contains(r#""active":"new""#), "{status}");

    // A proxy without the state file finds the cutover recorded on the new writer.
    let empty = tempfile::tempdir().unwrap();
    let fresh = Proxy::from_config(&config(&db, empty.path())).await;
    let routing = json_body(&fresh.admin_get("/status").await)["routing"].clone();
    assert_eq!(routing["active"], "new", "{routing}");
    assert_eq!(routing["modes"]["old"], "read_only", "{routing}");
}

#[tokio::test]
async fn a_cutover_that_cannot_catch_up_aborts_and_clients_stay_on_old() {
    let _turn = SERIAL.lock().await;
    let db = replicated_database("abort").await;
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::from_config(&config(&db, state.path())).await;
    let ledger = start_load(&proxy, &db, 4);
    ledger.wait_for_writes(30).await;

    // The new primary's replication cannot apply to the ledger while this lock is held.
    let p = pair();
    let mut blocker = p.new.admin(&p.new.primary).await;
    blocker
        .query_drop(format!("LOCK TABLES `{db}`.ledger WRITE"))
        .await
        .unwrap();
    let (code, body) = proxy.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
    blocker.query_drop("UNLOCK TABLES").await.unwrap();
    let report = json_body(&body);
    assert_eq!(code, 409, "{body}");
    assert_eq!(report["outcome"], "aborted", "{body}");

    ledger.wait_for_writes(30).await;
    ledger.stop();
    assert_eq!(ledger.errors(), Vec::<String>::new());
    let on_old = keys_on(&p.old, &db).await;
    assert!(ledger.acknowledged().iter().all(|k| on_old.contains(k)));
    let status = proxy.admin_get("/status").await;
    assert!(status.contains(r#""active":"old""#), "{status}");
    let empty = tempfile::tempdir().unwrap();
    let fresh = Proxy::from_config(&config(&db, empty.path())).await;
    let routing = json_body(&fresh.admin_get("/status").await)["routing"].clone();
    assert_eq!(routing["active"], "old", "{routing}");
}

/// A fleet member's load: writes, each in a transaction or not. A write refused with the
/// standard read-only error (1290, or 1792 inside a transaction) is counted and the client
/// goes on; any other error fails the test.
async fn fleet_worker(
    proxy: std::net::SocketAddr,
    db: String,
    ledger: Arc<Ledger>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
) {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db))
        .prefer_socket(false);
    let connect = || mysql_async::Conn::new(opts.clone());
    let mut conn = match connect().await {
        Ok(c) => c,
        Err(e) => return ledger.error(format!("connect: {e}")),
    };
    let mut i = 0;
    while !ledger.stopped() {
        i += 1;
        let key = format!("{}-w{n}-{i}", proxy.port());
        let result: Result<(), mysql_async::Error> = async {
            if i % 2 == 0 {
                conn.query_drop("BEGIN").await?;
                let insert = conn
                    .exec_drop("INSERT INTO ledger (client_key) VALUES (?)", (&key,))
                    .await;
                if insert.is_err() {
                    let _ = conn.query_drop("ROLLBACK").await;
                }
                insert?;
                conn.query_drop("COMMIT").await?;
            } else {
                conn.exec_drop("INSERT INTO ledger (client_key) VALUES (?)", (&key,))
                    .await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => ledger.ack(key),
            Err(mysql_async::Error::Server(e)) if e.code == 1290 || e.code == 1792 => {
                refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Pacing, not readiness: the member follows the record on its own.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // The database fence ends the old writer's sessions whose transactions began
            // before it (a straggler's): the connection closes, as it would on the server,
            // and the write was never acknowledged. The application connects again.
            Err(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => {
                ledger.connection_ended();
                conn = match connect().await {
                    Ok(c) => c,
                    Err(e) => return ledger.error(format!("reconnect: {e}")),
                };
            }
            Err(e) => return ledger.error(format!("{key}: {e}")),
        }
    }
}

#[tokio::test]
async fn a_fleet_member_the_operator_cannot_reach_is_fenced_by_the_database_and_follows_the_record()
{
    let _turn = SERIAL.lock().await;
    let db = replicated_database("fleet").await;
    let p = pair();
    app_obeys_read_only(&p.old).await;
    let mut admin = p.old.admin(&p.old.primary).await;
    let hole = BlackHole::start().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let fleet = |dir: &Path, advertise: Option<String>| {
        let mut text = config(&db, dir);
        text.push_str("\n[fleet]\npoll_interval = \"300ms\"\nstale_after = 5\n");
        if let Some(url) = advertise {
            text.push_str(&format!("advertise = \"{url}\"\n"));
        }
        text
    };
    let a = Proxy::from_config(&fleet(dirs[0].path(), None)).await;
    let b = Proxy::from_config(&fleet(dirs[1].path(), None)).await;
    let straggler = Proxy::from_config(&fleet(
        dirs[2].path(),
        Some(format!("http://{}", hole.addr)),
    ))
    .await;
    let mut backoff = Backoff::new(std::time::Duration::from_secs(30));
    loop {
        let view = json_body(&a.admin_get("/v1/fleet").await);
        let live = view["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["live"] == true).count());
        if live == 3 {
            break;
        }
        assert!(
            backoff.wait().await,
            "the fleet never had 3 members: {view}"
        );
    }
    let mut loads = Vec::new();
    for proxy in [&a, &b, &straggler] {
        let ledger = Arc::new(Ledger::default());
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..2 {
            tokio::spawn(fleet_worker(
                proxy.addr,
                db.clone(),
                Arc::clone(&ledger),
                Arc::clone(&refused),
                n,
            ));
        }
        ledger.wait_for_writes(20).await;
        loads.push((ledger, refused));
    }

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cutover", "--to", "new", "--token", ADMIN_TOKEN, "--admin"])
        .arg(format!("http://{}", a.admin))
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .await
        .expect("run switchyard cutover");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the cutover failed: {text}");
    assert!(text.contains("fence database"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&hole.addr.to_string()) && l.contains("left out")),
        "{text}"
    );
    // From here on nothing written on old reaches new.
    let mut new_admin = p.new.admin(&p.new.primary).await;
    new_admin.query_drop("STOP SLAVE").await.unwrap();

    let mut backoff = Backoff::new(std::time::Duration::from_secs(30));
    loop {
        let routing = json_body(&straggler.admin_get("/status").await)["routing"].clone();
        if routing["active"] == "new" {
            assert_eq!(routing["modes"]["old"], "read_only", "{routing}");
            break;
        }
        assert!(
            backoff.wait().await,
            "the straggler never followed: {routing}"
        );
    }
    for (ledger, _) in &loads {
        ledger.wait_for_writes(20).await;
        ledger.stop();
        assert_eq!(ledger.errors(), Vec::<String>::new());
    }
    assert_eq!(loads[0].1.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Members the cutover reached drained before the fence: none of their clients lost a
    // connection (only the straggler's transactions may be ended by the database fence).
    assert_eq!(loads[0].0.ended() + loads[1].0.ended(), 0);
    println!(
        "straggler: {} writes refused before it followed the record",
        loads[2].1.load(std::sync::atomic::Ordering::SeqCst)
    );
    // What was acknowledged first: a client stopping may still get an answer after this.
    let acknowledged: Vec<String> = loads.iter().flat_map(|(l, _)| l.acknowledged()).collect();
    let on_new = keys_on(&p.new, &db).await;
    let on_old = keys_on(&p.old, &db).await;
    let missing: Vec<_> = acknowledged
        .into_iter()
        .filter(|k| !on_new.contains(k))
        .collect();
    let on_old_too: Vec<bool> = missing.iter().map(|k| on_old.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "not on the new writer: {missing:?} (on old: {on_old_too:?})"
    );
    let only_old: Vec<_> = on_old.difference(&on_new).collect();
    assert!(
        only_old.is_empty(),
        "writes landed on old only: {only_old:?}"
    );
    admin
        .query_drop("GRANT READ_ONLY ADMIN ON *.* TO 'app'@'%'")
        .await
        .unwrap();
}

#[tokio::test]
async fn two_cutovers_at_once_one_runs_and_the_other_is_refused_naming_the_holder() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let _turn = SERIAL.lock().await;
    let db = replicated_database("twice").await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two proxies listed by hand (no [fleet]), each fencing at the proxy only.
    let text =
        |dir: &Path| config(&db, dir).replace("[cutover]\n", "[cutover]\nfence = \"proxy\"\n");
    let a = Proxy::from_config(&text(dirs[0].path())).await;
    let b = Proxy::from_config(&text(dirs[1].path())).await;
    let cli = |first: &Proxy, hold: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["cutover", "--to", "new", "--token", ADMIN_TOKEN])
            .args(["--admin", &format!("http://{}", first.admin)])
            .args([
                "--admin",
                &format!(
                    "http://{}",
                    if first.admin == a.admin {
                        b.admin
                    } else {
                        a.admin
                    }
                ),
            ])
            .env_remove("SWITCHYARD_CONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if hold {
            cmd.env("SWITCHYARD_CUTOVER_HOLD_AFTER", "preflight");
        }
        cmd.spawn().expect("run switchyard cutover")
    };
    let mut first = cli(&a, true);
    let first_pid = first.id().expect("the first CLI runs");
    let mut lines = tokio::io::BufReader::new(first.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the first CLI holds");
        if line.starts_with("holding after") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let second = cli(&b, false).wait_with_output().await.unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
    println!("{out}");
    assert!(!second.status.success(), "{out}");
    assert!(
        out.contains("another cutover is running") && out.contains(&format!("pid {first_pid}")),
        "the refusal names the holder: {out}"
    );
    first.stdin.take().unwrap().write_all(b"\n").await.unwrap();
    let done = first.wait_with_output().await.unwrap();
    assert!(done.status.success(), "the first cutover failed");
    for p in [&a, &b] {
        let status = p.admin_get("/status").await;
        assert!(status.contains(r#""active":"new""#), "{status}");
    }
}

#[tokio::test]
async fn a_coordinator_killed_after_the_fence_leaves_the_fleet_on_one_cluster_and_a_rerun_finishes()
{
    use tokio::io::AsyncBufReadExt;
    let _turn = SERIAL.lock().await;
    let db = replicated_database("killed").await;
    let p = pair();
    app_obeys_read_only(&p.old).await;
    let mut admin = p.old.admin(&p.old.primary).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut proxies = Vec::new();
    for dir in &dirs {
        let mut text = config(&db, dir.path());
        text.push_str("\n[fleet]\npoll_interval = \"300ms\"\nstale_after = 5\n");
        proxies.push(Proxy::from_config(&text).await);
    }
    let mut loads = Vec::new();
    for proxy in &proxies {
        let ledger = Arc::new(Ledger::default());
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..2 {
            let (l, r) = (Arc::clone(&ledger), Arc::clone(&refused));
            tokio::spawn(fleet_worker(proxy.addr, db.clone(), l, r, n));
        }
        ledger.wait_for_writes(20).await;
        loads.push(ledger);
    }
    // The fleet is known (three live members) before the coordinator starts.
    let mut backoff = Backoff::new(std::time::Duration::from_secs(30));
    loop {
        let view = json_body(&proxies[0].admin_get("/v1/fleet").await);
        let live = view["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["live"] == true).count());
        if live == 3 {
            break;
        }
        assert!(
            backoff.wait().await,
            "the fleet never had 3 members: {view}"
        );
    }
    let cli = |hold: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["cutover", "--to", "new", "--token", ADMIN_TOKEN, "--admin"])
            .arg(format!("http://{}", proxies[0].admin))
            .env_remove("SWITCHYARD_CONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if hold {
            cmd.env("SWITCHYARD_CUTOVER_HOLD_AFTER", "fence");
        }
        cmd.spawn().expect("run switchyard cutover")
    };
    let mut coordinator = cli(true);
    let mut lines = tokio::io::BufReader::new(coordinator.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next_line().await.unwrap().expect("the CLI holds");
        if line.starts_with("holding after") {
            break;
        }
    }
    coordinator.kill().await.expect("kill the coordinator");

    // No record: each member's watchdog ends its pause with old fenced; all stay on old.
    for proxy in &proxies {
        let mut backoff = Backoff::new(std::time::Duration::from_secs(30));
        loop {
            let routing = json_body(&proxy.admin_get("/status").await)["routing"].clone();
            if routing["modes"]["old"] == "read_only" {
                assert_eq!(routing["active"], "old", "{routing}");
                break;
            }
            assert!(backoff.wait().await, "the pause never ended: {routing}");
        }
    }
    // The lock frees with its lease; a new cutover moves the fleet as one.
    let mut backoff = Backoff::new(std::time::Duration::from_secs(30));
    loop {
        let out = cli(false).wait_with_output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            println!("{text}");
            // Every member is live although the cluster it served is fenced.
            assert!(text.contains("on 3 proxies"), "{text}");
            break;
        }
        assert!(text.contains("another cutover is running"), "{text}");
        assert!(backoff.wait().await, "the cutover lock never freed: {text}");
    }
    for proxy in &proxies {
        let status = proxy.admin_get("/status").await;
        assert!(status.contains(r#""active":"new""#), "{status}");
    }
    for ledger in &loads {
        ledger.wait_for_writes(10).await;
        ledger.stop();
        assert_eq!(ledger.errors(), Vec::<String>::new());
    }
    let acknowledged: Vec<String> = loads.iter().flat_map(|l| l.acknowledged()).collect();
    let on_new = keys_on(&p.new, &db).await;
    let missing: Vec<_> = acknowledged
        .into_iter()
        .filter(|k| !on_new.contains(k))
        .collect();
    assert!(missing.is_empty(), "not on the new writer: {missing:?}");
    admin
        .query_drop("GRANT READ_ONLY ADMIN ON *.* TO 'app'@'%'")
        .await
        .unwrap();
}

/// The cutover's check opens on the new writer as many connections as the sessions hold on
/// the old one (their writers are the connections they were greeted with, counted in their
/// pools); the sessions that move at the switch take them.
#[tokio::test]
async fn the_check_warms_the_new_writers_pool_and_the_sessions_take_it() {
    let _turn = SERIAL.lock().await;
    let db = replicated_database("warm").await;
    let state = tempfile::tempdir().unwrap();
    // Session mode: each session holds one writer connection.
    let proxy = Proxy::from_config(&in_pool_mode(&config(&db, state.path()), "session")).await;
    let opts = crate::mysql::opts(&proxy, &db);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut conn = mysql_async::Conn::new(opts.clone())
            .await
            .expect("a client");
        conn.query_drop("SELECT 1").await.expect("a session");
        clients.push(conn);
    }
    let p = pair();
    let new_writer = format!("{}:{}", p.new.primary.host, p.new.primary.port);
    proxy.cut_over_warmed(&new_writer, &db, 3.0).await;
    for (i, conn) in clients.iter_mut().enumerate() {
        conn.exec_drop(
            "INSERT INTO ledger (client_key) VALUES (?)",
            (format!("warm-{i}"),),
        )
        .await
        .expect("a write after the switch");
    }
    assert_eq!(
        proxy.pool_opened(&new_writer, &db).await,
        3.0,
        "the sessions moved onto the warm connections"
    );
    for conn in clients {
        conn.disconnect().await.expect("disconnect");
    }
}

#[tokio::test]
async fn a_client_that_only_began_its_transaction_does_not_hold_the_cutover() {
    let _turn = SERIAL.lock().await;
    let db = replicated_database("begun").await;
    let state = tempfile::tempdir().unwrap();
    // Transaction mode: the proxy answers the BEGIN itself.
    let text = in_pool_mode(&config(&db, state.path()), "transaction");
    let proxy = Proxy::from_config(&text).await;
    let mut client = mysql_async::Conn::new(crate::mysql::opts(&proxy, &db))
        .await
        .expect("connect");
    client.query_drop("BEGIN").await.expect("BEGIN");
    // Nothing of the transaction runs on the old writer: the drain does not wait for it
    // (a transaction open there would hold the drain past drain_timeout, and abort).
    let (code, body) = proxy.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_body(&body)["outcome"], "switched", "{body}");
    // The transaction starts on the new writer with its first statement, and commits there.
    client
        .query_drop("INSERT INTO ledger (client_key) VALUES ('begun-before')")
        .await
        .expect("the first statement, after the switch");
    client.query_drop("COMMIT").await.expect("COMMIT");
    assert!(keys_on(&pair().new, &db).await.contains("begun-before"));
    assert!(!keys_on(&pair().old, &db).await.contains("begun-before"));
}
