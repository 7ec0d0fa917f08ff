//! Starts switchyard in-process in front of a test cluster (on listeners bound to port 0),
//! plus a raw protocol client for the tests that must send exactly the bytes they choose.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use switchyard::app::{App, Listeners};
use switchyard::config::{self, Config};
use switchyard::shutdown::{self, Trigger};
use tokio::task::JoinSet;

use super::mariadb::MariaCluster;
use super::postgres::PgCluster;

pub const ADMIN_TOKEN: &str = "test-token";

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    trigger: Trigger,
    /// The proxy's tasks; dropping them aborts whatever shutdown has not ended yet.
    _tasks: JoinSet<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// Users the PostgreSQL tests log in as, one per authentication path.
const POSTGRES_USERS: &str = r#"
[[users]]
name = "md5user"
password = "md5-secret"
auth = "md5"

[[users]]
name = "plainuser"
password = "plain-secret"

[[users]]
name = "trustuser"
auth = "trust"
"#;

/// Users the MySQL tests log in as besides `app`: a raw-protocol one and a second login.
const MYSQL_USERS: &str = r#"
[[users]]
name = "trustuser"
auth = "trust"
backend_user = "app"
backend_password = "app-secret"

[[users]]
name = "app2"
password = "app2-secret"
backend_user = "app"
backend_password = "app-secret"
"#;

/// A test config: `protocol` in front of `writer` and `readers` (`host:port`), with
/// `server_extra` added to `[server]` and `users` after the `app` user.
fn config(
    protocol: &str,
    writer: String,
    readers: &[String],
    server_extra: &str,
    users: &str,
) -> String {
    let readers: Vec<String> = readers.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        r#"
[server]
protocol = "{protocol}"
listen = "127.0.0.1:0"
auth_timeout = "2s"
max_message_bytes = 1048576
{server_extra}

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[[users]]
name = "app"
password = "app-secret"
{users}
[clusters.main]
writer = "{writer}"
readers = [{}]

[routing]
active = "main"
# Routing tests check where each read goes: no read-your-writes window.
read_your_writes = "0s"
"#,
        readers.join(", ")
    )
}

/// The config the PostgreSQL tests use, in front of `cluster`.
pub fn config_text(cluster: &PgCluster, server_extra: &str) -> String {
    let readers: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| format!("{}:{}", r.host, r.port))
        .collect();
    let writer = format!("{}:{}", cluster.primary.host, cluster.primary.port);
    config("postgres", writer, &readers, server_extra, POSTGRES_USERS)
}

/// The config the MySQL tests use, in front of a MariaDB `cluster`.
pub fn mysql_config_text(cluster: &MariaCluster, server_extra: &str) -> String {
    let readers: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| format!("{}:{}", r.host, r.port))
        .collect();
    let writer = format!("{}:{}", cluster.primary.host, cluster.primary.port);
    config("mysql", writer, &readers, server_extra, MYSQL_USERS)
}

/// `config` with its readers replaced by `readers` (`host:port`).
pub fn with_readers(config: &str, readers: &[String]) -> String {
    let start = config.find("readers = [").expect("config has readers");
    let end = start + config[start..].find(']').expect("readers list ends") + 1;
    let list: Vec<String> = readers.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "{}readers = [{}]{}",
        &config[..start],
        list.join(", "),
        &config[end..]
    )
}

/// The writer of cluster `main` in config `text` as the proxy sees it, with the pool
/// settings of that config.
pub fn pool_topology(
    text: &str,
) -> (
    Arc<switchyard::topology::Cluster>,
    switchyard::pool::Settings,
) {
    let raw = toml::from_str(text).expect("config parses");
    let config = config::validate(raw, &|_| None).expect("config is valid");
    let topology = switchyard::topology::Topology::from_config(&config).expect("topology");
    let main = Arc::clone(&topology.clusters["main"]);
    let server = &config.raw.server;
    (
        main,
        switchyard::pool::Settings::from_config(server, server.pool_mode),
    )
}

/// `config` with its sessions in pool mode `mode` (`session`, `transaction`), for a test
/// of what one mode does.
pub fn in_pool_mode(config: &str, mode: &str) -> String {
    config.replacen(
        "[server]\n",
        &format!("[server]\npool_mode = \"{mode}\"\n"),
        1,
    )
}

/// `config` with `lines` added to its `[routing]` table (later keys of the same name win
/// nowhere: TOML refuses duplicates, so replace those with `str::replace`).
pub fn with_routing(config: &str, lines: &str) -> String {
    config.replace("[routing]\n", &format!("[routing]\n{lines}\n"))
}

/// One cluster of a cutover config: its writer and one reader (`host:port`).
pub struct ClusterAddrs {
    pub writer: String,
    pub reader: String,
}

/// The `[server]`, `[admin]` and `[[users]]` sections every test config starts with: a
/// `protocol` proxy on free ports, the admin token [`ADMIN_TOKEN`], and user `app`.
pub fn config_header(protocol: &str) -> String {
    format!(
        r#"
[server]
protocol = "{protocol}"
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[[users]]
name = "app"
password = "app-secret"
"#
    )
}

/// A cutover test's config: clusters `old` (active) and `new`, each with `monitor_user`
/// (which the cutover's database steps use), the routing state kept in `state_dir`, and
/// `cutover` as the body of `[cutover]`.
pub fn cutover_config(
    protocol: &str,
    old: ClusterAddrs,
    new: ClusterAddrs,
    monitor_user: &str,
    state_dir: &std::path::Path,
    cutover: &str,
) -> String {
    let cluster = |c: &ClusterAddrs, name: &str| {
        format!(
            "[clusters.{name}]\nwriter = \"{}\"\nreaders = [\"{}\"]\nmonitor_user = \"{monitor_user}\"\n",
            c.writer, c.reader
        )
    };
    format!(
        r#"{}
{}
{}
[routing]
active = "old"
max_pause = "4s"
state_dir = "{}"

[cutover]
drain_timeout = "2s"
catch_up_timeout = "2s"
{cutover}
"#,
        config_header(protocol),
        cluster(&old, "old"),
        cluster(&new, "new"),
        state_dir.display()
    )
}

/// The JSON body of an admin API answer (which comes with its HTTP headers).
pub fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or(answer, |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}"))
}

impl Proxy {
    pub async fn start(cluster: &PgCluster) -> Proxy {
        Proxy::from_config(&config_text(cluster, "")).await
    }

    pub async fn from_config(text: &str) -> Proxy {
        Proxy::launch(text, false).await
    }

    /// Like [`Proxy::from_config`], plus the discovery and health-check tasks that
    /// `switchyard serve` runs.
    pub async fn with_monitors(text: &str) -> Proxy {
        Proxy::launch(text, true).await
    }

    async fn launch(text: &str, monitors: bool) -> Proxy {
        let mut raw: Config = toml::from_str(text).expect("test config parses");
        // The test matrix: every test whose config does not choose a pool mode runs in
        // the one `SWITCHYARD_TEST_POOL_MODE` names (scripts/test.sh runs both).
        if !text.contains("pool_mode")
            && let Ok(mode) = std::env::var("SWITCHYARD_TEST_POOL_MODE")
        {
            raw.server.pool_mode = match mode.as_str() {
                "session" => switchyard::config::PoolMode::Session,
                "transaction" => switchyard::config::PoolMode::Transaction,
                other => panic!("SWITCHYARD_TEST_POOL_MODE={other}: session or transaction"),
            };
        }
        let config = Arc::new(config::validate(raw, &|_| None).expect("test config is valid"));
        let app = App::start(config).await.expect("proxy parts");
        let clients = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr = clients.local_addr().expect("proxy address");
        let admin = admin_listener.local_addr().expect("admin address");
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        let listeners = Listeners {
            clients,
            admin: Some(admin_listener),
        };
        app.spawn(listeners, monitors, &shutdown, &mut tasks)
            .expect("discovery and health checks start");
        Proxy {
            addr,
            admin,
            trigger,
            _tasks: tasks,
        }
    }

    /// A libpq-style connection string for `user` to database `db` through the proxy.
    pub fn conninfo(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.addr.port()
        )
    }

    /// Connects tokio-postgres as `app` through the proxy.
    /// A tokio-postgres client as `app`, with the notifications its connection receives.
    pub async fn connect_listening(
        &self,
        db: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ) {
        use futures_util::StreamExt;
        let (client, mut connection) = tokio_postgres::connect(
            &self.conninfo("app", "app-secret", db),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect through the proxy");
        let (notify, notifications) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = m {
                    let _ = notify.send(n);
                }
            }
        });
        (client, notifications)
    }

    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        self.connect_as("app", "app-secret", db).await
    }

    /// A PostgreSQL client as `app` through the proxy, with the task that drives its
    /// connection: its outcome says how the connection ended, and aborting it closes the
    /// client's socket.
    pub async fn connect_driven(
        &self,
        db: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let (client, connection) = tokio_postgres::connect(
            &self.conninfo("app", "app-secret", db),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect through the proxy");
        (client, tokio::spawn(connection))
    }

    /// A PostgreSQL client logged in through the proxy as `user` (the login must succeed).
    pub async fn connect_as(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(user, password, db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{user} logs in through the proxy: {e}"));
        tokio::spawn(async move {
            // The connection ends when the test drops the client.
            let _ = connection.await;
        });
        client
    }

    /// POST `body` (JSON) to a path of the admin API with the test token (or `token`);
    /// returns the status code and body.
    pub async fn admin_post_as(
        &self,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut tcp = TcpStream::connect(self.admin).await.expect("connect admin");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut response = String::new();
        tcp.read_to_string(&mut response)
            .await
            .expect("read response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, response)
    }

    pub async fn admin_post(&self, path: &str, body: &str) -> (u16, String) {
        self.admin_post_as(path, body, Some(ADMIN_TOKEN)).await
    }

    /// Waits until the metric line `name` (with no labels) reads at least `value`.
    pub async fn wait_for_gauge(&self, name: &str, value: f64) {
        let mut backoff = super::Backoff::new(std::time::Duration::from_secs(30));
        loop {
            let text = self.admin_get("/metrics").await;
            let current = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .unwrap_or(0.0);
            if current >= value {
                return;
            }
            assert!(backoff.wait().await, "{name} never reached {value}");
        }
    }

    /// Runs the cutover to cluster `new` and checks that its check opened `warmed`
    /// connections on `new_writer` for `db` before the switch.
    pub async fn cut_over_warmed(&self, new_writer: &str, db: &str, warmed: f64) {
        let (code, body) = self.admin_post("/v1/cutover", r#"{"to": "new"}"#).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(json_body(&body)["outcome"], "switched", "{body}");
        assert_eq!(
            self.pool_opened(new_writer, db).await,
            warmed,
            "one connection per session, opened before the switch"
        );
    }

    /// The `/status` entry of the pool for `instance` and `db`.
    pub async fn pool_status(&self, instance: &str, db: &str) -> serde_json::Value {
        let status = json_body(&self.admin_get("/status").await);
        let pools = status["pools"].as_array().expect("status lists the pools");
        let pool = pools
            .iter()
            .find(|p| p["instance"] == instance && p["database"] == db);
        pool.cloned()
            .unwrap_or_else(|| panic!("the pool of {instance} for {db} is in /status: {status}"))
    }

    /// How many sessions `/status` says are pinned for `reason` now.
    /// Turns read-only mode of cluster `main` on or off through the admin API.
    pub async fn read_only(&self, on: bool) {
        let body = format!(r#"{{"enabled":{on}}}"#);
        let (status, body) = self.admin_post("/v1/clusters/main/read-only", &body).await;
        assert_eq!(status, 200, "read-only {on}: {body}");
    }

    /// Waits until `n` checkouts wait in line in the proxy's pools (`/status`).
    pub async fn until_checkouts_wait(&self, n: usize) {
        let waiting = crate::support::retry(std::time::Duration::from_secs(30), async || {
            let status = json_body(&self.admin_get("/status").await);
            let pools = status["pools"].as_array().cloned().unwrap_or_default();
            let sum: u64 = pools.iter().filter_map(|p| p["waiting"].as_u64()).sum();
            if sum == n as u64 { Ok(()) } else { Err(status) }
        })
        .await;
        assert!(waiting.is_ok(), "{n} checkouts wait: {waiting:?}");
    }

    pub async fn pinned(&self, reason: &str) -> i64 {
        let status = json_body(&self.admin_get("/status").await);
        status["pinned_sessions"][reason]
            .as_i64()
            .unwrap_or_else(|| panic!("/status counts pins for {reason}: {status}"))
    }

    /// For each case, runs its statements that take state (`run` sends one through the
    /// pinned client), checks the client stays pinned for `statement` until the last of
    /// the ones that give it back, and then that `other` (another client's statement on
    /// the writer) gets the connection. `run` of `SELECT 1` after each statement makes
    /// sure the proxy is done with the one before.
    pub async fn check_pins_let_go(
        &self,
        cases: &[(&[&str], &[&str])],
        mut run: impl AsyncFnMut(&str),
        mut other: impl AsyncFnMut(),
    ) {
        for (take, give_back) in cases {
            for sql in *take {
                run(sql).await;
            }
            for (i, sql) in give_back.iter().enumerate() {
                assert_eq!(self.pinned("statement").await, 1, "pinned before {sql}");
                run(sql).await;
                run("SELECT 1").await;
                if i + 1 < give_back.len() {
                    assert_eq!(
                        self.pinned("statement").await,
                        1,
                        "still pinned after {sql}"
                    );
                }
            }
            assert_eq!(
                self.pinned("statement").await,
                0,
                "{take:?} then {give_back:?} unpins"
            );
            // The connection is back in the pool: another client gets it.
            other().await;
        }
    }

    /// The `switchyard_pool_opened_total` (logins) of the pools for `instance` and `db`.
    pub async fn pool_opened(&self, instance: &str, db: &str) -> f64 {
        let text = self.admin_get("/metrics").await;
        let wanted = [
            format!("instance=\"{instance}\""),
            format!("database=\"{db}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with("switchyard_pool_opened_total{"))
            .filter(|l| wanted.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// GET a path of the admin API and return the body.
    /// A pool series `name` per instance for database `db`, as `/metrics` shows it now
    /// (summed over the other labels), keyed by `host:port`.
    pub async fn pool_series_by_instance(
        &self,
        name: &str,
        db: &str,
    ) -> std::collections::BTreeMap<String, f64> {
        let metrics = self.admin_get("/metrics").await;
        let database = format!("database=\"{db}\"");
        let mut by_instance = std::collections::BTreeMap::new();
        for line in metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&database))
        {
            let instance = line
                .split("instance=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no instance label: {line}"));
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no value: {line}"));
            *by_instance.entry(instance.to_owned()).or_insert(0.0) += value;
        }
        by_instance
    }

    pub async fn admin_get(&self, path: &str) -> String {
        let mut tcp = TcpStream::connect(self.admin).await.expect("connect admin");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut body = String::new();
        tcp.read_to_string(&mut body).await.expect("read response");
        body
    }
}

/// A client that speaks the protocol byte by byte.
pub struct RawClient {
    pub tcp: TcpStream,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            tcp: TcpStream::connect(addr).await.expect("connect raw"),
        }
    }

    /// Sends a StartupMessage for a `trust` user and reads up to ReadyForQuery.
    pub async fn startup(addr: SocketAddr, user: &str, db: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes());
        for s in ["user", user, "database", db, ""] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        c.tcp.write_all(&packet).await.expect("send startup");
        loop {
            let (tag, _) = c.read_message().await.expect("startup answer");
            assert_ne!(tag, b'E', "startup refused");
            if tag == b'Z' {
                return c;
            }
        }
    }

    /// Reads one tagged message; `None` at end of stream.
    pub async fn read_message(&mut self) -> Option<(u8, Vec<u8>)> {
        let tag = self.tcp.read_u8().await.ok()?;
        let len = self.tcp.read_i32().await.ok()?;
        let mut body = vec![0; (len as usize).saturating_sub(4)];
        self.tcp.read_exact(&mut body).await.ok()?;
        Some((tag, body))
    }

    /// Sends a tagged message.
    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        self.tcp.write_all(&m).await.expect("send message");
    }

    /// Reads until an ErrorResponse and returns its SQLSTATE; `None` if the stream ends first.
    pub async fn expect_error(&mut self) -> Option<String> {
        loop {
            let (tag, body) = self.read_message().await?;
            if tag == b'E' {
                return Some(sqlstate(&body));
            }
        }
    }

    /// True once the server has closed the connection (reads to end of stream).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.tcp.read_to_end(&mut rest).await.is_ok()
    }
}

/// The `C` field of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// The pool key of the application user's connections to `cluster`'s writer and `db`, as
/// the pool tests check out with (login options 0).
pub fn app_pool_key(cluster: &switchyard::topology::Cluster, db: &str) -> switchyard::pool::Key {
    switchyard::pool::Key {
        cluster: cluster.name.clone(),
        instance: cluster.writer.addr.clone(),
        user: super::postgres::APP.user.into(),
        database: db.into(),
        options: 0,
    }
}
