//! A fleet of proxies cutting over as one, PostgreSQL: members find each other in the
//! database, a member the operator cannot reach is fenced by the database and follows the
//! record by itself, two cutovers at once are one refused by the lock, a coordinator killed
//! between fence and switch leaves every member on the same cluster, and a proxy started
//! during a cutover ends on the new cluster. Every acknowledged write ends on the new writer.
//!
//! The database fence (`ALTER SYSTEM SET default_transaction_read_only`) holds the whole old
//! server, so these tests have a pair of their own (not the cutover tests') and run one at
//! a time.

use crate::support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use support::fault::BlackHole;
use support::ledger::Ledger;
use support::postgres::PgPair;
use support::proxy::{ADMIN_TOKEN, ClusterAddrs, Proxy, cutover_config, json_body};
use support::{Backoff, PgCluster};

/// This module's old/new pair: the database fence would refuse the cutover tests' writes.
fn pair() -> &'static PgPair {
    static PAIR: std::sync::OnceLock<PgPair> = std::sync::OnceLock::new();
    PAIR.get_or_init(PgPair::start)
}

/// One test at a time: the database fence is server-wide.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

const SCHEMA: &str =
    "CREATE TABLE ledger (id bigserial PRIMARY KEY, client_key text UNIQUE NOT NULL)";

/// Lifts a database fence an earlier test left on the old server, then makes a database
/// replicated old → new by a subscription named after it.
async fn replicated_database(prefix: &str) -> String {
    let p = pair();
    let old = p.old.superuser(&p.old.primary, "postgres").await;
    for sql in [
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    ] {
        old.batch_execute(sql).await.unwrap();
    }
    let mut backoff = Backoff::new(Duration::from_secs(10));
    loop {
        let fresh = p.old.superuser(&p.old.primary, "postgres").await;
        let ro: String = fresh
            .query_one("SHOW default_transaction_read_only", &[])
            .await
            .unwrap()
            .get(0);
        if ro == "off" {
            break;
        }
        assert!(backoff.wait().await, "the old server stays read-only");
    }
    let db = p.old.create_database(prefix).await;
    p.new.execute_on_both(&p.old, &db, SCHEMA).await;
    p.new.subscribe_to(&p.old, &db, &db).await;
    p.new.wait_subscribed(&db, &db).await;
    db
}

/// A fleet member's config: the cutover of `db` (catch-up by LSN, the fence left to its
/// fleet default), a members table, and the record re-read every 300 ms.
fn config(db: &str, state_dir: &std::path::Path, advertise: Option<String>) -> String {
    let p = pair();
    let addrs = |c: &PgCluster| ClusterAddrs {
        writer: format!("{}:{}", c.primary.host, c.primary.port),
        reader: format!("{}:{}", c.replicas[0].host, c.replicas[0].port),
    };
    let cutover = format!("database = \"{db}\"\ncatch_up = \"lsn\"\nslot = \"{db}\"");
    let mut text = cutover_config(
        "postgres",
        addrs(&p.old),
        addrs(&p.new),
        "postgres",
        state_dir,
        &cutover,
    );
    text.push_str("\n[fleet]\npoll_interval = \"300ms\"\nstale_after = 5\n");
    if let Some(url) = advertise {
        text.push_str(&format!("advertise = \"{url}\"\n"));
    }
    text
}

/// The load on one proxy: writes (in a transaction or not), each read back. A write refused
/// with the standard read-only error (25006: the old cluster fenced, in the database or at a
/// proxy) is counted in `refused` and the client goes on; a connection the server ended is
/// counted in the ledger and the client connects again; any other error fails the test.
async fn worker(
    proxy: std::net::SocketAddr,
    db: String,
    ledger: Arc<Ledger>,
    refused: Arc<AtomicUsize>,
    n: usize,
) {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname={db}",
        proxy.port()
    );
    let connect = || async {
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok::<_, tokio_postgres::Error>(client)
    };
    let mut client = match connect().await {
        Ok(c) => c,
        Err(e) => return ledger.error(format!("connect: {e}")),
    };
    let mut i = 0;
    while !ledger.stopped() {
        i += 1;
        let key = format!("{}-w{n}-{i}", proxy.port());
        let result: Result<(), tokio_postgres::Error> = async {
            if i % 2 == 0 {
                let tx = client.transaction().await?;
                tx.execute("INSERT INTO ledger (client_key) VALUES ($1)", &[&key])
                    .await?;
                tx.commit().await?;
            } else {
                client
                    .execute("INSERT INTO ledger (client_key) VALUES ($1)", &[&key])
                    .await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => ledger.ack(key),
            Err(e)
                if e.code()
                    == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) =>
            {
                refused.fetch_add(1, Ordering::SeqCst);
                // Pacing, not readiness: the member follows the record on its own.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The database fence ends the old writer's sessions whose transactions began
            // before it (a straggler's): FATAL 57P01 and the connection closes, as on the
            // server; the write was never acknowledged. The application connects again.
            Err(e)
                if e.is_closed()
                    || e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN) =>
            {
                ledger.connection_ended();
                client = match connect().await {
                    Ok(c) => c,
                    Err(e) => return ledger.error(format!("reconnect: {e}")),
                };
            }
            Err(e) => {
                ledger.error(format!("{key}: {e}"));
                return;
            }
        }
    }
}

/// A load of `sessions` clients on `proxy`, with its own ledger.
fn load(proxy: &Proxy, db: &str, sessions: usize) -> (Arc<Ledger>, Arc<AtomicUsize>) {
    let ledger = Arc::new(Ledger::default());
    let refused = Arc::new(AtomicUsize::new(0));
    for n in 0..sessions {
        tokio::spawn(worker(
            proxy.addr,
            db.to_owned(),
            Arc::clone(&ledger),
            Arc::clone(&refused),
            n,
        ));
    }
    (ledger, refused)
}

async fn keys_on(cluster: &PgCluster, db: &str) -> std::collections::HashSet<String> {
    let client = cluster.superuser(&cluster.primary, db).await;
    let rows = client
        .query("SELECT client_key FROM ledger", &[])
        .await
        .expect("read the ledger");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Every acknowledged write of every ledger is on the new writer.
async fn assert_all_on_new(ledgers: &[&Ledger], db: &str) {
    // What was acknowledged first: a client stopping may still get an answer after this.
    let acknowledged: Vec<String> = ledgers.iter().flat_map(|l| l.acknowledged()).collect();
    let on_new = keys_on(&pair().new, db).await;
    let missing: Vec<String> = acknowledged
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

/// Waits until `proxy` sees `n` live members in its fleet.
async fn wait_for_members(proxy: &Proxy, n: usize) {
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        let view = json_body(&proxy.admin_get("/v1/fleet").await);
        let live = view["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["live"] == true).count());
        if live >= n {
            return;
        }
        assert!(
            backoff.wait().await,
            "the fleet never had {n} members: {view}"
        );
    }
}

/// Waits until `proxy` serves `cluster`, not paused (it followed the record).
async fn wait_active(proxy: &Proxy, cluster: &str) -> serde_json::Value {
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        let routing = json_body(&proxy.admin_get("/status").await)["routing"].clone();
        if routing["active"] == cluster && routing["modes"][cluster] == "read_write" {
            return routing;
        }
        assert!(
            backoff.wait().await,
            "the proxy never served {cluster}: {routing}"
        );
    }
}

/// `switchyard cutover --to new` through `proxy`'s admin API only (the rest of the fleet
/// comes from its members table); `hold_after` stops it after that phase until its
/// standard input gets a line.
fn cli(proxy: &Proxy, hold_after: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["cutover", "--to", "new", "--token", ADMIN_TOKEN])
        .arg("--admin")
        .arg(format!("http://{}", proxy.admin))
        .env_remove("SWITCHYARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(phase) = hold_after {
        cmd.env("SWITCHYARD_CUTOVER_HOLD_AFTER", phase);
    }
    cmd.spawn().expect("run switchyard cutover")
}

/// Reads the CLI's output until it says it holds; returns what it printed so far.
async fn wait_holding(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    while let Some(line) = lines.next_line().await.expect("read the CLI's output") {
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("holding after") {
            // The rest of its output goes on being read, so it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return seen;
        }
    }
    panic!("the CLI ended without holding: {seen}");
}

/// Runs the CLI to its end; returns (success, stdout + stderr).
async fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().await.expect("the CLI ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

#[tokio::test]
async fn a_member_the_operator_cannot_reach_is_fenced_by_the_database_and_follows_the_record() {
    let _one = exclusive().await;
    let db = replicated_database("straggler").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Proxy::from_config(&config(&db, dirs[0].path(), None)).await;
    let b = Proxy::from_config(&config(&db, dirs[1].path(), None)).await;
    // The straggler registers an admin URL that accepts connections and never answers.
    let hole = BlackHole::start().await;
    let straggler = Proxy::from_config(&config(
        &db,
        dirs[2].path(),
        Some(format!("http://{}", hole.addr)),
    ))
    .await;
    wait_for_members(&a, 3).await;

    let (ledger_a, refused_a) = load(&a, &db, 2);
    let (ledger_b, _) = load(&b, &db, 2);
    let (ledger_s, refused_s) = load(&straggler, &db, 2);
    for l in [&ledger_a, &ledger_b, &ledger_s] {
        l.wait_for_writes(20).await;
    }

    let (ok, out) = finish(cli(&a, None)).await;
    assert!(ok, "the cutover failed: {out}");
    assert!(out.contains("fence database"), "{out}");
    assert!(out.contains("switched: active cluster new"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&hole.addr.to_string()) && l.contains("left out")),
        "the report names the unreachable member: {out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("switched to new"))
            .count(),
        2,
        "{out}"
    );
    // From here on nothing old receives reaches new: a write acknowledged by old after the
    // cutover would be lost, and show up below.
    let p = pair();
    p.new.disable_subscription(&p.old, &db, &db).await;

    let routing = wait_active(&straggler, "new").await;
    assert_eq!(routing["modes"]["old"], "read_only", "{routing}");
    for l in [&ledger_a, &ledger_b, &ledger_s] {
        l.wait_for_writes(20).await;
        l.stop();
        assert_eq!(l.errors(), Vec::<String>::new());
    }
    assert_eq!(
        refused_a.load(Ordering::SeqCst),
        0,
        "a member in the cutover refused writes"
    );
    println!(
        "straggler: {} writes refused with 25006 before it followed the record",
        refused_s.load(Ordering::SeqCst)
    );
    assert_all_on_new(&[&ledger_a, &ledger_b, &ledger_s], &db).await;
    let on_old = keys_on(&p.old, &db).await;
    let on_new = keys_on(&p.new, &db).await;
    let only_old: Vec<_> = on_old.difference(&on_new).collect();
    assert!(
        only_old.is_empty(),
        "writes landed on old only: {only_old:?}"
    );
}

#[tokio::test]
async fn two_cutovers_at_once_one_runs_and_the_other_is_refused_naming_the_holder() {
    let _one = exclusive().await;
    let db = replicated_database("twice").await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Proxy::from_config(&config(&db, dirs[0].path(), None)).await;
    let b = Proxy::from_config(&config(&db, dirs[1].path(), None)).await;
    wait_for_members(&a, 2).await;

    let mut first = cli(&a, Some("preflight"));
    let first_pid = first.id().expect("the first CLI runs");
    wait_holding(&mut first).await;
    let (ok, out) = finish(cli(&b, None)).await;
    assert!(!ok, "a second cutover ran beside the first: {out}");
    assert!(
        out.contains("another cutover is running") && out.contains(&format!("pid {first_pid}")),
        "the refusal names the holder: {out}"
    );
    let status = b.admin_get("/status").await;
    assert!(status.contains(r#""active":"old""#), "{status}");

    let mut stdin = first.stdin.take().expect("piped stdin");
    stdin.write_all(b"\n").await.unwrap();
    let (ok, out) = finish(first).await;
    assert!(ok, "the first cutover failed: {out}");
    for p in [&a, &b] {
        wait_active(p, "new").await;
    }
}

#[tokio::test]
async fn a_coordinator_killed_between_fence_and_switch_leaves_every_member_on_one_cluster() {
    let _one = exclusive().await;
    let db = replicated_database("killed").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut proxies = Vec::new();
    for dir in &dirs {
        proxies.push(Proxy::from_config(&config(&db, dir.path(), None)).await);
    }
    wait_for_members(&proxies[0], 3).await;
    let loads: Vec<_> = proxies.iter().map(|p| load(p, &db, 2)).collect();
    for (l, _) in &loads {
        l.wait_for_writes(20).await;
    }

    let mut coordinator = cli(&proxies[0], Some("fence"));
    wait_holding(&mut coordinator).await;
    coordinator.kill().await.expect("kill the coordinator");

    // No record was written: every member's watchdog ends its pause with the old cluster
    // fenced, and every member stays on old.
    for p in &proxies {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        loop {
            let routing = json_body(&p.admin_get("/status").await)["routing"].clone();
            if routing["modes"]["old"] == "read_only" {
                assert_eq!(routing["active"], "old", "{routing}");
                break;
            }
            assert!(backoff.wait().await, "the pause never ended: {routing}");
        }
    }
    // The lock died with its holder's lease: a new cutover runs and the fleet moves as one.
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        let (ok, out) = finish(cli(&proxies[1], None)).await;
        if ok {
            assert!(out.contains("switched: active cluster new"), "{out}");
            // Every member is live although the cluster it served is fenced.
            assert!(out.contains("on 3 proxies"), "{out}");
            break;
        }
        assert!(out.contains("another cutover is running"), "{out}");
        assert!(backoff.wait().await, "the cutover lock never freed: {out}");
    }
    for p in &proxies {
        wait_active(p, "new").await;
    }
    for (l, _) in &loads {
        l.wait_for_writes(10).await;
        l.stop();
        assert_eq!(l.errors(), Vec::<String>::new());
    }
    let ledgers: Vec<&Ledger> = loads.iter().map(|(l, _)| l.as_ref()).collect();
    assert_all_on_new(&ledgers, &db).await;
}

#[tokio::test]
async fn a_proxy_started_during_a_cutover_ends_on_the_new_cluster() {
    let _one = exclusive().await;
    let db = replicated_database("latecomer").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Proxy::from_config(&config(&db, dirs[0].path(), None)).await;
    let b = Proxy::from_config(&config(&db, dirs[1].path(), None)).await;
    wait_for_members(&a, 2).await;
    let (ledger_a, _) = load(&a, &db, 2);
    ledger_a.wait_for_writes(20).await;

    let mut coordinator = cli(&a, Some("fence"));
    wait_holding(&mut coordinator).await;
    // Started inside the pause, after the fence: no record yet, so it starts on old, where
    // the database refuses its writes.
    let late = Proxy::from_config(&config(&db, dirs[2].path(), None)).await;
    let (ledger_late, _) = load(&late, &db, 2);
    let mut stdin = coordinator.stdin.take().expect("piped stdin");
    stdin.write_all(b"\n").await.unwrap();
    let (ok, out) = finish(coordinator).await;
    assert!(ok, "the cutover failed: {out}");

    for p in [&a, &b, &late] {
        wait_active(p, "new").await;
    }
    for l in [&ledger_a, &ledger_late] {
        l.wait_for_writes(20).await;
        l.stop();
        assert_eq!(l.errors(), Vec::<String>::new());
    }
    assert_all_on_new(&[&ledger_a, &ledger_late], &db).await;
}

#[tokio::test]
async fn members_listed_by_peers_and_by_dns_are_reached_without_registering() {
    let _one = exclusive().await;
    let db = replicated_database("peers").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two proxies with no [fleet] at all, found by the third's static list and DNS name.
    let plain = |dir: &std::path::Path| {
        let text = config(&db, dir, None);
        text[..text.find("\n[fleet]").unwrap()].to_owned()
    };
    let b = Proxy::from_config(&plain(dirs[1].path())).await;
    let c = Proxy::from_config(&plain(dirs[2].path())).await;
    let mut text = config(&db, dirs[0].path(), None);
    text.push_str(&format!(
        "register = false\npeers = [\"http://{}\"]\npeers_dns = \"localhost:{}\"\n",
        b.admin,
        c.admin.port()
    ));
    let a = Proxy::from_config(&text).await;
    let mut backoff = Backoff::new(Duration::from_secs(30));
    let view = loop {
        let view = json_body(&a.admin_get("/v1/fleet").await);
        let members = view["members"].as_array().cloned().unwrap_or_default();
        let from = |source: &str, url: String| {
            members
                .iter()
                .any(|m| m["source"] == source && m["admin_url"] == url.as_str())
        };
        if from("peers", format!("http://{}", b.admin))
            && from("dns", format!("http://{}", c.admin))
        {
            break view;
        }
        assert!(backoff.wait().await, "the peers never showed: {view}");
    };
    assert!(
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["source"] != "database"),
        "nothing registered: {view}"
    );

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args([
        "cutover",
        "--to",
        "new",
        "--dry-run",
        "--token",
        ADMIN_TOKEN,
    ])
    .arg("--admin")
    .arg(format!("http://{}", a.admin))
    .env_remove("SWITCHYARD_CONFIG")
    .kill_on_drop(true);
    let out = cmd.output().await.expect("run switchyard cutover");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("dry_run: active cluster old"), "{text}");
    for p in [&a, &b, &c] {
        assert!(
            text.lines()
                .any(|l| l.contains(&p.admin.to_string()) && l.contains("checked")),
            "every member took part: {text}"
        );
    }
}
