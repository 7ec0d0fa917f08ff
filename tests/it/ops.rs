//! Operations, as a platform runs the proxy: the real `switchyard serve` process under
//! signals (SIGTERM drains under a writing load, SIGHUP reloads readers and passwords with
//! sessions open), and the shipped dashboard and alerts checked against the metric names
//! a running proxy exports.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

use crate::support::ledger::Ledger;
use crate::support::postgres::PgCluster;
use crate::support::proxy::{ADMIN_TOKEN, Proxy, config_text, with_readers};
use crate::support::{Backoff, ServerProcess, Signal, free_port, signal};

/// `switchyard serve -c FILE` as a child process, on free ports; killed when dropped.
struct Served {
    process: ServerProcess,
    addr: SocketAddr,
    admin: SocketAddr,
    file: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts the binary with `config` (a test config listening on port 0, whose two
    /// `listen` keys get free ports) and waits until `/readyz` answers 200.
    async fn start(config: &str) -> Served {
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (port, admin_port) = (free_port(), free_port());
            let text = config
                .replacen(
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"127.0.0.1:{port}\""),
                    1,
                )
                .replacen(
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"127.0.0.1:{admin_port}\""),
                    1,
                );
            let file = dir.path().join("switchyard.toml");
            std::fs::write(&file, &text).expect("write the config");
            let log = dir.path().join("switchyard.log");
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
            command
                .args(["serve", "-c"])
                .arg(&file)
                .env("SWITCHYARD_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            let process = ServerProcess::spawn(command, Signal::TERM, Signal::KILL)
                .expect("spawn switchyard serve");
            let mut served = Served {
                process,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
                file,
                log,
                _dir: dir,
            };
            if served.wait_ready().await {
                return served;
            }
            // Most likely a port was taken in between: try others.
            served.process.wait_stopped();
        }
        panic!("switchyard serve never became ready");
    }

    async fn wait_ready(&mut self) -> bool {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        loop {
            if let Some((200, _)) = self.get("/readyz").await {
                return true;
            }
            if !self.process.is_running() || !backoff.wait().await {
                eprintln!("switchyard serve log:\n{}", self.log());
                return false;
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        signal(self.process.id(), sig);
    }

    fn conninfo(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.addr.port()
        )
    }

    /// An HTTP request to the admin listener: its status and body, or `None` when the
    /// listener does not answer.
    async fn http(&self, request: String) -> Option<(u16, String)> {
        let mut tcp = TcpStream::connect(self.admin).await.ok()?;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.ok()?;
        let status = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((status, body.to_owned()))
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        self.http(format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await
    }

    async fn post(&self, path: &str) -> Option<(u16, String)> {
        self.http(format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"
        ))
        .await
    }

    /// Waits for the process to exit by itself; its exit status.
    async fn wait_exit(&mut self) -> String {
        let mut backoff = Backoff::new(Duration::from_secs(60));
        while self.process.is_running() {
            assert!(
                backoff.wait().await,
                "switchyard did not exit; log:\n{}",
                self.log()
            );
        }
        self.process.describe_exit()
    }
}

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Ends when the proxy closes the session or the client is dropped.
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether `e` is how the README says a drain ends a session between transactions:
/// 57P01 (admin_shutdown), or the connection closed right after it.
fn closed_by_the_drain(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::ADMIN_SHUTDOWN) || e.is_closed()
}

/// One writer of the load: transactions of two inserts each, every committed key in the
/// ledger, until its session is closed. The only error allowed is the drain's, at the
/// start of a transaction; any other (a transaction cut in the middle) is recorded.
async fn write_until_closed(conninfo: String, worker: usize, ledger: Arc<Ledger>) {
    let client = match connect(&conninfo).await {
        Ok(c) => c,
        Err(e) => return ledger.error(format!("worker {worker}: connect: {e}")),
    };
    for i in 0.. {
        if let Err(e) = client.batch_execute("BEGIN").await {
            if !closed_by_the_drain(&e) {
                ledger.error(format!("worker {worker}: BEGIN: {e:?}"));
            }
            return;
        }
        let keys = [format!("w{worker}-{i}-a"), format!("w{worker}-{i}-b")];
        for key in &keys {
            let insert = format!("INSERT INTO ledger VALUES ('{key}')");
            if let Err(e) = client.batch_execute(&insert).await {
                return ledger.error(format!("worker {worker}: cut mid-transaction: {e:?}"));
            }
        }
        if let Err(e) = client.batch_execute("COMMIT").await {
            return ledger.error(format!("worker {worker}: COMMIT: {e:?}"));
        }
        for key in keys {
            ledger.ack(key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_writing_load_finishes_transactions_and_loses_no_acknowledged_write() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("sigterm").await;
    let primary = cluster.superuser(&cluster.primary, &db).await;
    primary
        .batch_execute("CREATE TABLE ledger (k text PRIMARY KEY); GRANT ALL ON ledger TO app")
        .await
        .expect("create the ledger table");
    // One worker thread: the binary on its current-thread runtime, signals and drain
    // included (the in-process proxies of the other tests run on the tests' runtimes).
    let mut proxy = Served::start(&config_text(
        cluster,
        "shutdown_timeout = \"60s\"\nlog_format = \"json\"\nworker_threads = 1",
    ))
    .await;
    let conninfo = proxy.conninfo("app", "app-secret", &db);

    // A client in the middle of a transaction when the signal comes.
    let holder = connect(&conninfo).await.expect("connect the holder");
    holder
        .batch_execute("BEGIN; INSERT INTO ledger VALUES ('held-1')")
        .await
        .expect("open the held transaction");
    let ledger = Arc::new(Ledger::default());
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write_until_closed(conninfo.clone(), w, Arc::clone(&ledger))))
        .collect();
    ledger.wait_for_writes(40).await;

    proxy.signal(libc::SIGTERM);
    // Load balancers are told at once: readiness fails while sessions drain.
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        match proxy.get("/readyz").await {
            Some((503, body)) => {
                assert!(body.contains("shutting down"), "{body}");
                break;
            }
            other => assert!(backoff.wait().await, "readyz during the drain: {other:?}"),
        }
    }
    assert_eq!(
        proxy.get("/healthz").await.map(|(s, _)| s),
        Some(200),
        "alive while draining"
    );
    // No new clients.
    let mut backoff = Backoff::new(Duration::from_secs(30));
    while TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(
            backoff.wait().await,
            "the listener still accepts during the drain"
        );
    }
    // The transaction in progress finishes, then its session is closed.
    holder
        .batch_execute("INSERT INTO ledger VALUES ('held-2'); COMMIT")
        .await
        .expect("a transaction open at SIGTERM commits");
    ledger.ack("held-1".into());
    ledger.ack("held-2".into());
    let after = holder.batch_execute("SELECT 1").await;
    assert!(
        after.as_ref().is_err_and(closed_by_the_drain),
        "the holder's session ends at its transaction boundary: {after:?}"
    );
    for worker in workers {
        worker.await.expect("worker");
    }
    let exit = proxy.wait_exit().await;
    assert!(
        exit.contains("exit status: 0"),
        "exit: {exit}\n{}",
        proxy.log()
    );
    assert!(
        ledger.errors().is_empty(),
        "errors outside a transaction boundary: {:?}",
        ledger.errors()
    );

    let acknowledged = ledger.acknowledged();
    let found: i64 = primary
        .query_one(
            "SELECT count(*) FROM ledger WHERE k = ANY($1)",
            &[&acknowledged],
        )
        .await
        .expect("count acknowledged writes")
        .get(0);
    assert_eq!(
        found as usize,
        acknowledged.len(),
        "every acknowledged write is on the writer"
    );
    let log = proxy.log();
    assert!(log.contains("every session closed"), "{log}");
    // log_format = "json": one object per line.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(event.get("level").is_some(), "{line}");
    }
    assert!(!log.contains("app-secret"), "a password in the log:\n{log}");
}

/// The shared test config plus a user `rotated` with `password`, logging in to the
/// backend as `app`.
fn with_rotated_user(config: &str, password: &str) -> String {
    config.replace(
        "[clusters.main]",
        &format!(
            "[[users]]\nname = \"rotated\"\npassword = \"{password}\"\nbackend_user = \"app\"\nbackend_password = \"app-secret\"\n\n[clusters.main]"
        ),
    )
}

async fn server_port(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("read the server port")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_reader_list_and_password_without_dropping_a_session() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("sighup").await;
    let reader = |i: usize| format!("{}:{}", cluster.replicas[i].host, cluster.replicas[i].port);
    let base = config_text(cluster, "");
    let before = with_readers(&with_rotated_user(&base, "old-pass"), &[reader(0)]);
    let proxy = Served::start(&before).await;

    let app = connect(&proxy.conninfo("app", "app-secret", &db))
        .await
        .expect("app logs in");
    let rotated = connect(&proxy.conninfo("rotated", "old-pass", &db))
        .await
        .expect("rotated logs in with the old password");
    assert_eq!(server_port(&app).await, i32::from(cluster.replicas[0].port));

    let after = with_readers(
        &with_rotated_user(&base, "new-pass"),
        &[reader(0), reader(1)],
    );
    // Same ports as the running proxy: only the readers and the password differ.
    let running = std::fs::read_to_string(&proxy.file).expect("read the config");
    let after = keep_listen_addresses(&running, &after);
    std::fs::write(&proxy.file, &after).expect("write the new config");
    proxy.signal(libc::SIGHUP);

    // The new password works once the reload is applied; the old one no longer does.
    let mut backoff = Backoff::new(Duration::from_secs(30));
    while connect(&proxy.conninfo("rotated", "new-pass", &db))
        .await
        .is_err()
    {
        assert!(
            backoff.wait().await,
            "the new password never worked:\n{}",
            proxy.log()
        );
    }
    let old = connect(&proxy.conninfo("rotated", "old-pass", &db)).await;
    assert_eq!(
        old.err().and_then(|e| e.code().cloned()),
        Some(SqlState::INVALID_PASSWORD),
        "the old password is refused"
    );
    // New sessions read from the added replica.
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        let client = connect(&proxy.conninfo("app", "app-secret", &db))
            .await
            .expect("connect");
        if server_port(&client).await == i32::from(cluster.replicas[1].port) {
            break;
        }
        assert!(backoff.wait().await, "no read reached the added replica");
    }
    // The sessions open across the reload were not dropped.
    for (name, client) in [("app", &app), ("rotated", &rotated)] {
        client
            .batch_execute("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("{name}'s session after the reload: {e}"));
    }

    // A change only a restart can apply is refused whole, and nothing changes.
    let moved = after.replacen(
        &format!("127.0.0.1:{}", proxy.addr.port()),
        &format!("127.0.0.1:{}", free_port()),
        1,
    );
    std::fs::write(
        &proxy.file,
        with_rotated_user_password(&moved, "third-pass"),
    )
    .expect("write a refused config");
    let (status, body) = proxy.post("/v1/reload").await.expect("reload answers");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("server.listen"), "{body}");
    connect(&proxy.conninfo("rotated", "new-pass", &db))
        .await
        .expect("the password of the running config still works");
    app.batch_execute("SELECT 1")
        .await
        .expect("app's session after a refused reload");
    // The same through the CLI: a clear message and a failing exit status.
    let cli = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["reload", "--admin", &format!("http://{}", proxy.admin)])
        .args(["--token", ADMIN_TOKEN])
        .output()
        .expect("run switchyard reload");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "a refused reload fails the CLI");
    assert!(stderr.contains("server.listen"), "{stderr}");
    let metrics = proxy.get("/metrics").await.expect("metrics").1;
    for line in [
        "switchyard_config_reloads_total{result=\"ok\"} 1",
        "switchyard_config_reloads_total{result=\"refused\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // Every session this test opened is closed: the open-connections gauge comes back to 0.
    drop((app, rotated));
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        let metrics = proxy.get("/metrics").await.expect("metrics").1;
        let open = metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_client_connections "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if open == Some(0.0) {
            break;
        }
        assert!(
            backoff.wait().await,
            "switchyard_client_connections stays at {open:?} with no client"
        );
    }
    assert!(!proxy.log().contains("app-secret"), "a password in the log");
}

/// `new` with the two `listen` lines of `running` (the ports the proxy was started on).
fn keep_listen_addresses(running: &str, new: &str) -> String {
    let listens: Vec<&str> = running
        .lines()
        .filter(|l| l.starts_with("listen = "))
        .collect();
    let mut out = new.to_owned();
    for listen in listens {
        out = out.replacen("listen = \"127.0.0.1:0\"", listen, 1);
    }
    out
}

fn with_rotated_user_password(config: &str, password: &str) -> String {
    config.replace(
        "password = \"new-pass\"",
        &format!("password = \"{password}\""),
    )
}

/// Every `switchyard_*` metric name a file mentions.
fn metric_names(path: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Whether `/metrics` text exports `name`: a series of that name, or of a histogram's
/// `_bucket`/`_sum`/`_count`.
fn exports(metrics: &str, name: &str) -> bool {
    let series = |n: &str| {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.strip_prefix(n).is_some_and(|r| r.starts_with(['{', ' '])))
    };
    series(name) || series(&format!("{name}_count"))
}

#[tokio::test]
async fn the_dashboard_and_alerts_query_only_metrics_the_proxy_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = [
        root.join("deploy/grafana/switchyard.json"),
        root.join("deploy/prometheus/alerts.yml"),
    ];
    let wanted: BTreeSet<String> = files.iter().flat_map(|f| metric_names(f)).collect();
    assert!(wanted.len() > 10, "the files query few metrics: {wanted:?}");

    let cluster = PgCluster::shared();
    let db = cluster.create_database("metrics").await;
    let proxy = Proxy::with_monitors(&config_text(cluster, "")).await;
    let client = proxy.connect(&db).await;
    client.batch_execute("SELECT 1").await.expect("a query");
    // Health checks publish their gauges after their first round: wait for that, not
    // for a time.
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        let metrics = proxy.admin_get("/metrics").await;
        let missing: Vec<&String> = wanted.iter().filter(|n| !exports(&metrics, n)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            backoff.wait().await,
            "the dashboard or alerts query metrics the proxy does not export: {missing:?}\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_sigterm_lets_the_open_transaction_commit_then_ends_the_session() {
    use mysql_async::prelude::Queryable;

    let cluster = crate::support::MariaCluster::start(0);
    let db = cluster.create_database("sigterm").await;
    let mut root = cluster.admin(&cluster.primary).await;
    root.query_drop(format!(
        "CREATE TABLE `{db}`.ledger (k varchar(64) PRIMARY KEY)"
    ))
    .await
    .expect("create the ledger table");
    let mut proxy = Served::start(&crate::support::proxy::mysql_config_text(
        &cluster,
        "shutdown_timeout = \"60s\"",
    ))
    .await;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db.clone()))
        .prefer_socket(false);
    let mut holder = mysql_async::Conn::new(opts)
        .await
        .expect("connect the holder");
    holder.query_drop("BEGIN").await.expect("BEGIN");
    holder
        .query_drop("INSERT INTO ledger VALUES ('held-1')")
        .await
        .expect("first insert");

    proxy.signal(libc::SIGTERM);
    let mut backoff = Backoff::new(Duration::from_secs(30));
    while !matches!(proxy.get("/readyz").await, Some((503, _))) {
        assert!(backoff.wait().await, "readyz never failed during the drain");
    }
    holder
        .query_drop("INSERT INTO ledger VALUES ('held-2')")
        .await
        .expect("the transaction open at SIGTERM goes on");
    holder
        .query_drop("COMMIT")
        .await
        .expect("the transaction open at SIGTERM commits");
    let after = holder.query_drop("SELECT 1").await;
    match after {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1053, "{e}"),
        Err(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => {}
        other => panic!("the session should end at its transaction boundary: {other:?}"),
    }
    let exit = proxy.wait_exit().await;
    assert!(
        exit.contains("exit status: 0"),
        "exit: {exit}\n{}",
        proxy.log()
    );
    let rows: Option<i64> = root
        .query_first(format!("SELECT COUNT(*) FROM `{db}`.ledger"))
        .await
        .expect("count");
    assert_eq!(rows, Some(2), "both acknowledged writes are on the writer");
}
