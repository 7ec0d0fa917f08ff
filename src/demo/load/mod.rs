//! The application: sessions through switchyard that read, write short transactions and
//! check that they read their own writes, each at an application's pace. Every write whose
//! commit was acknowledged goes into the ledger, to be looked for on the new writer at the end.

mod app;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use switchyard::shutdown::Shutdown;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use self::app::AppConn;
use self::stats::Stats;
use super::Engine;

/// Sessions that only read (page views: they go to replicas).
pub const READ_SESSIONS: usize = 10;
/// Sessions that write (and read their own writes, which go to the writer).
pub const WRITE_SESSIONS: usize = 6;
pub const SESSIONS: usize = READ_SESSIONS + WRITE_SESSIONS;
/// Time between two operations of one session: 16 sessions make a few thousand statements a
/// second, leaving the two-core machine room for four servers and the proxy.
const PACE: Duration = Duration::from_millis(4);
/// A statement taking longer than this is an error (a cutover's pause is far shorter).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Wait before reconnecting after an error.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// What the writing sessions had acknowledged when the load stopped.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ledger ids whose write was acknowledged.
    pub ids: Vec<i64>,
    /// Per session: write transactions whose commit was acknowledged.
    pub transactions: Vec<(i32, i64)>,
}

/// The running sessions.
pub struct Load {
    sessions: JoinSet<SessionLedger>,
}

struct SessionLedger {
    session: i32,
    ids: Vec<i64>,
    transactions: i64,
}

impl Load {
    /// Starts every session; they run until `stop`.
    pub fn start(engine: Engine, proxy: SocketAddr, stats: &Arc<Stats>, stop: &Shutdown) -> Load {
        let mut sessions = JoinSet::new();
        for number in 0..SESSIONS {
            let session = Session {
                engine,
                proxy,
                number: number as i32,
                writes: number >= READ_SESSIONS,
                stats: Arc::clone(stats),
                ledger: SessionLedger {
                    session: number as i32,
                    ids: Vec::new(),
                    transactions: 0,
                },
            };
            sessions.spawn(session.run(stop.clone()));
        }
        Load { sessions }
    }

    /// Waits for every session to finish its operation and stop; their ledgers merged.
    pub async fn finish(mut self) -> Ledger {
        let mut ledger = Ledger::default();
        while let Some(done) = self.sessions.join_next().await {
            match done {
                Ok(session) => {
                    ledger.ids.extend(session.ids);
                    ledger
                        .transactions
                        .push((session.session, session.transactions));
                }
                Err(e) => eprintln!("a load session failed: {e}"),
            }
        }
        ledger.transactions.sort_unstable();
        ledger
    }
}

struct Session {
    engine: Engine,
    proxy: SocketAddr,
    number: i32,
    writes: bool,
    stats: Arc<Stats>,
    ledger: SessionLedger,
}

impl Session {
    async fn run(mut self, mut stop: Shutdown) -> SessionLedger {
        let mut tick = tokio::time::interval(PACE);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut conn: Option<AppConn> = None;
        let mut step: u64 = 0;
        while !stop.is_triggered() {
            tokio::select! {
                _ = stop.recv() => break,
                _ = tick.tick() => {}
            }
            let mut current = match conn.take() {
                Some(c) => c,
                None => match AppConn::connect(self.engine, self.proxy).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.failed(e).await;
                        continue;
                    }
                },
            };
            step += 1;
            match tokio::time::timeout(STATEMENT_TIMEOUT, self.operation(&mut current, step)).await
            {
                Ok(Ok(())) => conn = Some(current),
                Ok(Err(e)) => self.failed(e).await,
                Err(_) => {
                    self.failed(format!("no answer within {STATEMENT_TIMEOUT:?}"))
                        .await
                }
            }
        }
        if let Some(conn) = conn {
            conn.close().await;
        }
        self.ledger
    }

    /// Reading sessions read; writing ones cycle through a transaction, a read-your-writes
    /// check and a read.
    async fn operation(&mut self, conn: &mut AppConn, step: u64) -> Result<(), String> {
        let stats = &self.stats;
        if !self.writes {
            return conn.read(self.number, stats).await;
        }
        let id = (i64::from(self.number) << 40) | step as i64;
        match step % 3 {
            0 => {
                conn.write_transaction(id, self.number, stats).await?;
                self.ledger.ids.push(id);
                self.ledger.transactions += 1;
                stats.write_transactions.fetch_add(1, Relaxed);
            }
            1 => {
                let seen = conn.insert_then_read(id, self.number, stats).await?;
                self.ledger.ids.push(id);
                stats.read_your_writes_checks.fetch_add(1, Relaxed);
                if !seen {
                    stats.read_your_writes_misses.fetch_add(1, Relaxed);
                }
            }
            _ => conn.read(self.number, stats).await?,
        }
        Ok(())
    }

    /// Counts the error, and shows it the first time its text comes up; the connection is
    /// dropped (the next operation reconnects) after a short wait.
    async fn failed(&self, error: String) {
        let shown = format!("session {}: {error}", self.number);
        if self.stats.error(error) {
            println!("{:>7} error: {shown}", "");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}
