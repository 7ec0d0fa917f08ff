//! Scripted database servers for the flow tests: one per instance, on 127.0.0.1:0, that
//! log anyone in, answer each statement by what it is (a read gets one row with the
//! server's name), keep the transaction status, and record every statement they receive in
//! a journal shared by the whole world, so a test asserts where each statement ran. A fault
//! armed on a server hits the next statement that is not a SET (so replayed session state
//! does not trip it). The wire formats live in `postgres_server.rs` and `mysql_server.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::Proto;

/// What a scripted server does to the next statement that is not a SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Closes the connection before any byte of the answer.
    CloseBeforeAnswer,
    /// Sends the first row of a read's answer, then closes the connection.
    CloseAfterFirstRow,
    /// The whole server dies before answering: every connection closes, no new one opens.
    CrashBeforeAnswer,
    /// Answers with an error of its own (PostgreSQL 42P01, MySQL 1146), as a real server
    /// does for a missing table.
    AnswerError,
}

/// One statement a server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Received {
    pub server: &'static str,
    pub sql: String,
}

/// Every statement every server of one world received, in order.
#[derive(Debug, Default)]
pub(super) struct Journal(Mutex<Vec<Received>>);

impl Journal {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The statements received since the journal had `mark` entries.
    pub fn since(&self, mark: usize) -> Vec<Received> {
        self.lock().get(mark..).unwrap_or_default().to_vec()
    }

    fn push(&self, server: &'static str, sql: &str) {
        let sql = sql.to_owned();
        self.lock().push(Received { server, sql });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a scripted server answers one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// One row, one column: the server's name.
    Row,
    /// Opens a transaction.
    Begin,
    /// Ends the transaction (COMMIT, ROLLBACK).
    End,
    /// Anything else: done, no rows.
    Done,
    /// A fault instead of an answer.
    Fault(Fault),
}

impl Reply {
    /// The answer to one statement by its first word (after a leading comment).
    pub fn to(sql: &str) -> Reply {
        let sql = match sql.trim_start().strip_prefix("/*") {
            Some(comment) => comment.split_once("*/").map_or("", |(_, rest)| rest),
            None => sql,
        };
        let word = sql
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match word.as_str() {
            "SELECT" => Reply::Row,
            "BEGIN" | "START" => Reply::Begin,
            "COMMIT" | "ROLLBACK" | "END" => Reply::End,
            _ => Reply::Done,
        }
    }
}

/// What a connection task shares with its server.
pub(super) struct Shared {
    pub name: &'static str,
    journal: Arc<Journal>,
    fault: Mutex<Option<Fault>>,
    conns: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
}

impl Shared {
    /// Records `sql` and says how to answer it: the armed fault if it applies, else by the
    /// statement.
    pub fn received(&self, sql: &str) -> Reply {
        self.journal.push(self.name, sql);
        let is_set = sql.trim_start().to_ascii_uppercase().starts_with("SET");
        if !is_set && let Some(fault) = self.fault.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            return Reply::Fault(fault);
        }
        Reply::to(sql)
    }

    /// Stops accepting and drops every connection (a connection task calling this ends
    /// itself by returning).
    pub fn crash(&self) {
        self.stop.send_replace(true);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

/// A running scripted server.
pub(super) struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    pub async fn start(proto: Proto, name: &'static str, journal: Arc<Journal>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            name,
            journal,
            fault: Mutex::new(None),
            conns: Mutex::new(JoinSet::new()),
            stop,
        });
        let accept = tokio::spawn(accept(proto, listener, Arc::clone(&shared)));
        Server {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        }
    }

    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    pub fn arm(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    /// Closes every connection and waits until they are closed; new ones are welcome.
    pub async fn disconnect(&self) {
        let mut conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|p| p.into_inner()));
        conns.shutdown().await;
    }

    /// Kills the server and waits until its listener and every connection are closed.
    pub async fn kill(&self) {
        self.shared.crash();
        let accept = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        self.disconnect().await;
    }
}

async fn accept(proto: Proto, listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let tcp = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => return,
            },
        };
        let conn = serve(proto, tcp, Arc::clone(&shared));
        shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(conn);
    }
}

async fn serve(proto: Proto, tcp: TcpStream, shared: Arc<Shared>) {
    // A connection ends when its peer leaves or a fault closes it; either is fine here.
    let _ = match proto {
        Proto::Postgres | Proto::PostgresExtended => {
            super::postgres_server::serve(tcp, &shared).await
        }
        Proto::Mysql | Proto::MysqlPrepared => super::mysql_server::serve(tcp, &shared).await,
    };
}
