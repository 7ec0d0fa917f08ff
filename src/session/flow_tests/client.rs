//! The scripted clients: a real driver per protocol (tokio-postgres, mysql_async) in a task
//! of its own, sent one statement at a time through a channel, so a test can leave a
//! statement waiting at the proxy (a pause) while it changes the world.

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use super::Proto;

/// What the client saw for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// It ran: the first column of each row it returned.
    Rows(Vec<String>),
    /// It failed: the server error code (SQLSTATE, or the MySQL error number) when the
    /// client got one, else `None` (the connection broke).
    Error {
        code: Option<String>,
        message: String,
    },
}

type Request = (String, oneshot::Sender<Answer>);

/// A connected client; statements run in order.
pub(super) struct Client {
    requests: mpsc::UnboundedSender<Request>,
}

impl Client {
    /// Logs in to the proxy at `addr` as user `app`.
    pub async fn connect(proto: Proto, addr: SocketAddr) -> Client {
        let (requests, rx) = mpsc::unbounded_channel();
        match proto {
            Proto::Postgres | Proto::PostgresExtended => {
                let client = postgres(addr).await;
                let extended = proto == Proto::PostgresExtended;
                tokio::spawn(run_postgres(client, extended, rx));
            }
            Proto::Mysql | Proto::MysqlPrepared => {
                let conn = mysql(addr).await;
                let prepared = proto == Proto::MysqlPrepared;
                tokio::spawn(run_mysql(conn, prepared, rx));
            }
        }
        Client { requests }
    }

    /// Sends `sql`; the answer comes on the receiver.
    pub fn send(&self, sql: &str) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((sql.to_owned(), tx))
            .expect("the client task runs while the test holds the client");
        rx
    }
}

async fn postgres(addr: SocketAddr) -> tokio_postgres::Client {
    let params = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname=app",
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&params, tokio_postgres::NoTls)
        .await
        .expect("tokio-postgres logs in through the proxy");
    tokio::spawn(async move {
        // Ends with the connection; a broken one is what some cases expect.
        let _ = connection.await;
    });
    client
}

async fn run_postgres(
    client: tokio_postgres::Client,
    extended: bool,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    while let Some((sql, answer)) = rx.recv().await {
        let got = if extended {
            match client.query(&sql, &[]).await {
                Ok(rows) => Answer::Rows(rows.iter().map(|r| r.get(0)).collect()),
                Err(e) => postgres_error(e),
            }
        } else {
            simple_query(&client, &sql).await
        };
        // The test may have stopped waiting (it failed already).
        let _ = answer.send(got);
    }
}

async fn simple_query(client: &tokio_postgres::Client, sql: &str) -> Answer {
    match client.simple_query(sql).await {
        Ok(messages) => Answer::Rows(
            messages
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).unwrap_or_default().to_owned())
                    }
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => postgres_error(e),
    }
}

fn postgres_error(e: tokio_postgres::Error) -> Answer {
    Answer::Error {
        code: e.code().map(|c| c.code().to_owned()),
        message: format!("{e:?}"),
    }
}

async fn mysql(addr: SocketAddr) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(addr.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some("app"))
        .prefer_socket(false)
        // Known, so the driver asks the server nothing after login.
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(28_800));
    mysql_async::Conn::new(opts)
        .await
        .expect("mysql_async logs in through the proxy")
}

async fn run_mysql(
    mut conn: mysql_async::Conn,
    prepared: bool,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    use mysql_async::prelude::Queryable;
    while let Some((sql, answer)) = rx.recv().await {
        let rows = if prepared {
            conn.exec::<String, _, _>(sql.as_str(), ()).await
        } else {
            conn.query::<String, _>(sql.as_str()).await
        };
        let got = match rows {
            Ok(rows) => Answer::Rows(rows),
            Err(mysql_async::Error::Server(e)) => Answer::Error {
                code: Some(e.code.to_string()),
                message: e.message,
            },
            Err(e) => Answer::Error {
                code: None,
                message: format!("{e:?}"),
            },
        };
        // The test may have stopped waiting (it failed already).
        let _ = answer.send(got);
    }
}
