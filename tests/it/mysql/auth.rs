//! Authentication through the proxy: an unknown user is answered exactly as a known user
//! with a wrong password, and `[auth]` lets an account created at run time log in with its
//! own password (mysql_native_password pass-through to the primary and the replicas).

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use mysql_common::scramble::scramble_native;

use super::support::mariadb::MariaCluster;
use super::support::proxy::{Proxy, mysql_config_text};
use super::{RawMysql, on_replica, opts, setup};

/// The scramble of a greeting (protocol 10): 8 bytes, then 12 after the fixed fields.
fn greeting_scramble(greeting: &[u8]) -> Vec<u8> {
    let version_end = greeting.iter().position(|&b| b == 0).expect("version") + 1;
    let part1 = &greeting[version_end + 4..version_end + 12];
    let part2_at = version_end + 12 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
    [part1, &greeting[part2_at..part2_at + 12]].concat()
}

/// One login as `user` with `password`, answering first in `plugin`: every packet the proxy
/// sent after the greeting, with a switch request's scramble (random) blanked and `user`'s
/// name replaced by `X`; ends at the ERR or OK.
async fn attempt(proxy: &Proxy, user: &str, password: &str, plugin: &str) -> Vec<(u8, Vec<u8>)> {
    let mut c = RawMysql {
        tcp: tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect raw"),
    };
    let (_, greeting) = c.read_packet().await.expect("greeting");
    let scramble = greeting_scramble(&greeting);
    // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH
    let caps: u32 = 0x200 | 0x8000 | 0x80000;
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    let answer = match plugin {
        "mysql_native_password" => scramble_native(&scramble, password.as_bytes())
            .unwrap()
            .to_vec(),
        _ => vec![7; 32],
    };
    p.push(answer.len() as u8);
    p.extend_from_slice(&answer);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    c.send(1, &p).await;
    let mut seen = Vec::new();
    while let Some((seq, payload)) = c.read_packet().await {
        match payload.as_slice().first() {
            Some(0xFE) => {
                // AuthSwitchRequest: plugin name, then a fresh scramble.
                let name_end = payload.iter().position(|&b| b == 0).expect("plugin name");
                let switch = &payload[name_end + 1..payload.len() - 1];
                let reply = scramble_native(switch, password.as_bytes()).unwrap();
                c.send(seq + 1, &reply).await;
                seen.push((seq, payload[..name_end].to_vec()));
            }
            Some(0xFF | 0x00) => {
                seen.push((seq, replace(&payload, user.as_bytes(), b"X")));
                break;
            }
            _ => seen.push((seq, payload)),
        }
    }
    seen
}

/// `bytes` with every `from` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn an_unknown_user_is_answered_as_a_wrong_password() {
    let (_, proxy, db) = setup("authleak").await;
    let auth_errors = "switchyard_errors_total{kind=\"auth\"}";
    let before = counter(&proxy, auth_errors).await;
    for plugin in ["mysql_native_password", "caching_sha2_password"] {
        let known = attempt(&proxy, "app", "wrong", plugin).await;
        let unknown = attempt(&proxy, "nobody", "wrong", plugin).await;
        assert_eq!(known, unknown, "answering in {plugin}");
        let (_, err) = known.last().expect("an answer");
        assert_eq!(&err[..3], b"\xff\x15\x04", "ERR 1045: {err:?}");
        let text = String::from_utf8_lossy(err);
        assert!(
            text.ends_with("Access denied for user 'X'@'127.0.0.1' (using password: YES)"),
            "as the server says it: {text}"
        );
    }
    // What a driver reports.
    let message = |user: &'static str| {
        let o = opts(&proxy, &db).user(Some(user)).pass(Some("wrong"));
        async move {
            let e = Conn::new(o).await.expect_err("refused");
            e.to_string().replace(user, "X")
        }
    };
    assert_eq!(message("app").await, message("nobody").await);
    // Every refusal is counted as an authentication error.
    proxy.wait_for_gauge(auth_errors, before + 6.0).await;
}

/// The value of the metric line `name` (labels included), 0 when absent.
async fn counter(proxy: &Proxy, name: &str) -> f64 {
    let text = proxy.admin_get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_account_created_at_run_time_logs_in_through_auth_query() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("authquery").await;
    let text = format!(
        "{}\n[auth]\nquery_user = \"app\"\nquery_password = \"app-secret\"\n\
         cache_ttl = \"0s\"\nnegative_cache_ttl = \"0s\"\n",
        mysql_config_text(cluster, "")
    );
    let proxy = Proxy::from_config(&text).await;
    let user = format!("rt_{db}");
    let mut admin = cluster.admin(&cluster.primary).await;
    for statement in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'rt-secret'"),
        format!("CREATE TABLE `{db}`.t (i int)"),
        format!("GRANT SELECT, INSERT ON `{db}`.* TO '{user}'@'%'"),
    ] {
        admin
            .query_drop(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    cluster.wait_replicated().await;

    let login = |password: &'static str| {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(proxy.addr.port())
            .user(Some(user.clone()))
            .pass(Some(password))
            .db_name(Some(db.clone()))
            .prefer_socket(false)
    };
    let mut conn = Conn::new(login("rt-secret"))
        .await
        .expect("the new account logs in through the proxy");
    conn.query_drop("INSERT INTO t VALUES (1), (2)")
        .await
        .expect("a write as the new account, on the primary");
    let me: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(
        me,
        Some(format!("{user}@%")),
        "the backends know it as itself"
    );
    cluster.wait_replicated().await;
    assert!(on_replica(&mut conn).await, "its reads go to a replica");
    let n: Option<i64> = conn.query_first("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(n, Some(2));

    // COM_CHANGE_USER to it from another login looks it up the same way.
    let mut other = Conn::new(opts(&proxy, &db)).await.expect("app logs in");
    let change = mysql_async::ChangeUserOpts::default()
        .with_user(Some(user.clone()))
        .with_pass(Some("rt-secret".into()))
        .with_db_name(Some(db.clone()));
    other
        .change_user(change)
        .await
        .expect("COM_CHANGE_USER to the new account");
    let me: Option<String> = other.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(me, Some(format!("{user}@%")));
    other.disconnect().await.expect("close");

    let wrong = Conn::new(login("wrong")).await.expect_err("wrong password");
    assert!(
        wrong.to_string().contains(&format!(
            "Access denied for user '{user}'@'127.0.0.1' (using password: YES)"
        )),
        "{wrong}"
    );

    drop(conn);
    admin
        .query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .expect("drop the account");
    let gone = Conn::new(login("rt-secret"))
        .await
        .expect_err("a dropped account");
    assert!(gone.to_string().contains("1045"), "{gone}");
    admin.disconnect().await.expect("close");
}

#[tokio::test]
async fn auth_query_logins_in_transaction_mode_are_greeted_by_the_proxy() {
    use super::support::proxy::in_pool_mode;
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("authgreet").await;
    let text = format!(
        "{}\n[auth]\nquery_user = \"app\"\nquery_password = \"app-secret\"\n",
        mysql_config_text(cluster, "pool_size = 2")
    );
    let proxy = Proxy::from_config(&in_pool_mode(&text, "transaction")).await;
    let user = format!("gr_{db}");
    let mut admin = cluster.admin(&cluster.primary).await;
    for statement in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'gr-secret'"),
        format!("GRANT SELECT ON `{db}`.* TO '{user}'@'%'"),
    ] {
        admin.query_drop(&statement).await.expect("account");
    }
    cluster.wait_replicated().await;
    let login = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some(user.clone()))
        .pass(Some("gr-secret"))
        .db_name(Some(db.clone()))
        .prefer_socket(false);
    // The first login of the writer is greeted by a writer connection; the later ones by
    // the proxy, with ids of its own, over the pool's connections.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut conn = Conn::new(login.clone()).await.expect("login");
        let me: Option<String> = conn
            .query_first("SELECT /* switchyard:writer */ CURRENT_USER()")
            .await
            .unwrap();
        assert_eq!(
            me,
            Some(format!("{user}@%")),
            "logged in to the writer as itself"
        );
        clients.push(conn);
    }
    let proxy_ids = clients.iter().filter(|c| c.id() >= 1 << 30).count();
    assert!(proxy_ids >= 7, "greeted by the proxy: {proxy_ids} of 8");
    let open: Option<i64> = admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?",
            (&user,),
        )
        .await
        .expect("processlist");
    assert!(
        open.unwrap_or_default() <= 2,
        "8 clients over the pool's 2: {open:?}"
    );
    admin.disconnect().await.expect("close");
}
