//! The application's side of one session, through switchyard as any application would
//! connect: tokio-postgres or mysql_async, prepared statements, explicit transactions.
//! Every statement is timed into [`Stats`]; a failure comes back as its text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use switchyard::error::chain;
use tokio_postgres::{Client, NoTls, Statement};

use super::stats::Stats;
use crate::demo::{APP_DATABASE, APP_PASSWORD, APP_USER, Engine};

/// The statements the application runs, in each dialect.
mod sql {
    pub const PG_INSERT: &str = "INSERT INTO ledger (id, session) VALUES ($1, $2)";
    pub const PG_COUNT: &str = "UPDATE counters SET n = n + 1 WHERE session = $1";
    pub const PG_FIND: &str = "SELECT id FROM ledger WHERE id = $1";
    pub const PG_COUNTER: &str = "SELECT n FROM counters WHERE session = $1";
    pub const PG_RECENT: &str = "SELECT id, written_at FROM ledger ORDER BY seq DESC LIMIT 5";
    pub const MY_INSERT: &str = "INSERT INTO ledger (id, session) VALUES (?, ?)";
    pub const MY_COUNT: &str = "UPDATE counters SET n = n + 1 WHERE session = ?";
    pub const MY_FIND: &str = "SELECT id FROM ledger WHERE id = ?";
    pub const MY_COUNTER: &str = "SELECT n FROM counters WHERE session = ?";
    pub const MY_RECENT: &str = "SELECT id, written_at FROM ledger ORDER BY seq DESC LIMIT 5";
}

/// One application connection through the proxy.
pub enum AppConn {
    Postgres(Box<PgApp>),
    Mysql(mysql_async::Conn),
}

/// A tokio-postgres client whose statements are prepared at first use and then reused, as
/// connection pools' statement caches do. (Only at first use: a read-only session that
/// prepared an INSERT would count as having written, and read from the writer for a while.)
pub struct PgApp {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl PgApp {
    async fn statement(&mut self, text: &'static str) -> Outcome<Statement> {
        if let Some(statement) = self.prepared.get(text) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare(text)
            .await
            .map_err(|e| format!("prepare {text:?}: {}", chain(&e)))?;
        self.prepared.insert(text, statement.clone());
        Ok(statement)
    }
}

type Outcome<T> = Result<T, String>;

/// Runs one statement, timing it into `stats`; a failure becomes its text, prefixed with
/// what was running.
async fn timed<T, E: std::error::Error>(
    stats: &Stats,
    what: &str,
    statement: impl Future<Output = Result<T, E>>,
) -> Outcome<T> {
    let start = Instant::now();
    match statement.await {
        Ok(value) => {
            stats.statement(start);
            Ok(value)
        }
        Err(e) => Err(format!("{what}: {}", chain(&e))),
    }
}

impl AppConn {
    pub async fn connect(engine: Engine, proxy: SocketAddr) -> Outcome<AppConn> {
        match engine {
            Engine::Postgres => {
                let (client, connection) = tokio_postgres::Config::new()
                    .host(proxy.ip().to_string())
                    .port(proxy.port())
                    .user(APP_USER)
                    .password(APP_PASSWORD)
                    .dbname(APP_DATABASE)
                    .application_name("switchyard-demo-app")
                    .connect(NoTls)
                    .await
                    .map_err(|e| format!("connect: {}", chain(&e)))?;
                tokio::spawn(async move {
                    // The session sees the same error on its next statement and reports it.
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "application connection ended");
                    }
                });
                Ok(AppConn::Postgres(Box::new(PgApp {
                    client,
                    prepared: HashMap::new(),
                })))
            }
            Engine::Mysql => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(proxy.ip().to_string())
                    .tcp_port(proxy.port())
                    .user(Some(APP_USER))
                    .pass(Some(APP_PASSWORD))
                    .db_name(Some(APP_DATABASE))
                    .prefer_socket(false);
                let conn = mysql_async::Conn::new(opts)
                    .await
                    .map_err(|e| format!("connect: {}", chain(&e)))?;
                Ok(AppConn::Mysql(conn))
            }
        }
    }

    /// A read of the kind a page view makes: the session's counter, then the latest entries.
    pub async fn read(&mut self, session: i32, stats: &Stats) -> Outcome<()> {
        match self {
            AppConn::Postgres(pg) => {
                let (counter, recent) = (
                    pg.statement(sql::PG_COUNTER).await?,
                    pg.statement(sql::PG_RECENT).await?,
                );
                let c = &pg.client;
                timed(stats, "read", c.query_opt(&counter, &[&session])).await?;
                timed(stats, "read", c.query(&recent, &[])).await?;
            }
            AppConn::Mysql(conn) => {
                let counter = conn.exec_first::<i64, _, _>(sql::MY_COUNTER, (session,));
                timed(stats, "read", counter).await?;
                let recent = conn.exec_drop(sql::MY_RECENT, ());
                timed(stats, "read", recent).await?;
            }
        }
        Ok(())
    }

    /// A short write transaction: a ledger entry and the session's counter, committed
    /// together. `Ok` means the commit was acknowledged.
    pub async fn write_transaction(&mut self, id: i64, session: i32, stats: &Stats) -> Outcome<()> {
        match self {
            AppConn::Postgres(pg) => {
                let (insert, count) = (
                    pg.statement(sql::PG_INSERT).await?,
                    pg.statement(sql::PG_COUNT).await?,
                );
                let c = &pg.client;
                let (insert_params, count_params) = ([&id as _, &session as _], [&session as _]);
                timed(stats, "BEGIN", c.batch_execute("BEGIN")).await?;
                let insert = c.execute(&insert, &insert_params);
                timed(stats, "INSERT in a transaction", insert).await?;
                let count = c.execute(&count, &count_params);
                timed(stats, "UPDATE in a transaction", count).await?;
                timed(stats, "COMMIT", c.batch_execute("COMMIT")).await?;
            }
            AppConn::Mysql(conn) => {
                timed(stats, "BEGIN", conn.query_drop("BEGIN")).await?;
                let insert = conn.exec_drop(sql::MY_INSERT, (id, session));
                timed(stats, "INSERT in a transaction", insert).await?;
                let count = conn.exec_drop(sql::MY_COUNT, (session,));
                timed(stats, "UPDATE in a transaction", count).await?;
                timed(stats, "COMMIT", conn.query_drop("COMMIT")).await?;
            }
        }
        Ok(())
    }

    /// Writes a ledger entry on its own (autocommit), then reads it back at once: `Ok(true)`
    /// when the session saw its own write. The insert is acknowledged either way.
    pub async fn insert_then_read(
        &mut self,
        id: i64,
        session: i32,
        stats: &Stats,
    ) -> Outcome<bool> {
        match self {
            AppConn::Postgres(pg) => {
                let (insert, find) = (
                    pg.statement(sql::PG_INSERT).await?,
                    pg.statement(sql::PG_FIND).await?,
                );
                let c = &pg.client;
                let (insert_params, find_params) = ([&id as _, &session as _], [&id as _]);
                let insert = c.execute(&insert, &insert_params);
                timed(stats, "INSERT", insert).await?;
                let find = c.query_opt(&find, &find_params);
                let row = timed(stats, "read-your-writes SELECT", find).await?;
                Ok(row.is_some())
            }
            AppConn::Mysql(conn) => {
                let insert = conn.exec_drop(sql::MY_INSERT, (id, session));
                timed(stats, "INSERT", insert).await?;
                let find = conn.exec_first::<i64, _, _>(sql::MY_FIND, (id,));
                let row = timed(stats, "read-your-writes SELECT", find).await?;
                Ok(row.is_some())
            }
        }
    }

    /// Says goodbye to the proxy (a dropped tokio-postgres client does so by itself).
    pub async fn close(self) {
        if let AppConn::Mysql(conn) = self
            && let Err(e) = conn.disconnect().await
        {
            tracing::debug!(error = %e, "application disconnect");
        }
    }
}
