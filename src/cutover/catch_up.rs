//! What a cutover asks of the databases themselves, with each cluster's monitor account:
//! preflight checks, the old writer's last position (and the database-level fence), waiting
//! for the new writer to apply that position, and carrying PostgreSQL sequences over.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::time::Instant;

use super::database::{Conn, Databases, DbError, Writer};
use crate::config::{CatchUp, Fence, Protocol};

/// How often a wait asks the database again.
const POLL: Duration = Duration::from_millis(5);

impl Databases {
    /// Both writers answer, the new one is writable, replication runs and lags less than
    /// `max_lag`, and the record table is ready on the new writer. Returns what was found,
    /// for the report. The connections stay open for the steps inside the pause.
    pub async fn preflight(&self, from: &str, to: &str) -> Result<String, DbError> {
        self.release();
        let Some(c) = self.cutover() else {
            return Ok("no [cutover] section: no database checks".into());
        };
        let mut found = Vec::new();
        if c.catch_up == CatchUp::None {
            found.push("catch_up = \"none\": the old cluster's data is not awaited".into());
        } else {
            let mut old = self.writer(from).await?;
            let mut new = self.writer(to).await?;
            new.check_writable().await?;
            found.push(format!("{} writable", new.addr));
            match c.catch_up {
                CatchUp::Lsn => {
                    let slot = c.slot.as_deref().unwrap_or_default();
                    found.push(old.check_slot(slot, c.max_lag).await?);
                }
                CatchUp::Gtid => found.push(new.check_replica(c.max_lag).await?),
                CatchUp::Sentinel => {
                    for w in [&mut old, &mut new] {
                        w.check_table(&c.sentinel_table).await?;
                    }
                    found.push(format!("sentinel table {} on both", c.sentinel_table));
                }
                CatchUp::None => {}
            }
            self.keep(from, old);
            self.keep(to, new);
        }
        found.push(self.prepare_record(to).await?);
        Ok(found.join("; "))
    }

    /// Fences the old writer in the database when `fence` says so (before the position, so
    /// a straggling proxy's write cannot commit after it unnoticed), then takes the old
    /// writer's last position once nothing more can be written through the proxy (for
    /// `sentinel`, writes the sentinel row). Returns the position to wait for.
    pub async fn mark(&self, from: &str, fence: Fence) -> Result<String, DbError> {
        let Some(c) = self.cutover() else {
            return Ok(String::new());
        };
        if c.catch_up == CatchUp::None && fence == Fence::Proxy {
            return Ok(String::new());
        }
        let mut old = self.writer(from).await?;
        if fence == Fence::Database {
            *self.fenced.lock().unwrap_or_else(|p| p.into_inner()) = true;
            for sql in c.fence_statements(self.protocol(), true) {
                old.exec(&sql).await?;
            }
            old.end_older_transactions(c.drain_timeout).await?;
        }
        let mark = match c.catch_up {
            CatchUp::Lsn => old.one("SELECT pg_current_wal_lsn()::text").await?,
            CatchUp::Gtid => old.gtid_position().await?,
            CatchUp::Sentinel => {
                let id = format!(
                    "{:016x}{:016x}",
                    rand::random::<u64>(),
                    rand::random::<u64>()
                );
                let sql = format!(
                    "INSERT INTO {} (id, written_at) VALUES ('{id}', CURRENT_TIMESTAMP)",
                    c.sentinel_table
                );
                // The database fence refuses this session's writes too, unless it says
                // otherwise for this one transaction.
                let sql = match (fence, self.protocol()) {
                    (Fence::Database, Protocol::Postgres) => {
                        format!("BEGIN; SET TRANSACTION READ WRITE; {sql}; COMMIT")
                    }
                    _ => sql,
                };
                old.exec(&sql).await?;
                id
            }
            CatchUp::None => String::new(),
        };
        self.keep(from, old);
        Ok(mark)
    }

    /// Waits until the new writer has applied `mark` (bounded by `deadline`), carries
    /// sequences over, then writes the cutover's record on the new writer. Returns what was
    /// done, for the report.
    pub async fn catch_up(
        &self,
        from: &str,
        to: &str,
        mark: &str,
        deadline: Instant,
    ) -> Result<(String, u64), DbError> {
        let Some(c) = self.cutover() else {
            return Ok(("nothing to wait for".into(), 0));
        };
        let started = Instant::now();
        let timeout = |mark: &str| DbError::CatchUpTimeout {
            mark: mark.to_owned(),
            waited: started.elapsed(),
        };
        let mut found = Vec::new();
        match c.catch_up {
            CatchUp::None => found.push("nothing to wait for".into()),
            CatchUp::Lsn => {
                let mut old = self.writer(from).await?;
                let slot = c.slot.as_deref().unwrap_or_default();
                // The subscriber reports what it applied (committed, visible) right after
                // each batch, but flushes those commits only at its next WAL flush
                // (subscriptions commit with synchronous_commit = off), so the slot's
                // confirmed_flush_lsn trails by up to wal_writer_delay. Applied is what
                // the switch needs; the record written next, a synchronous commit on the
                // new writer, flushes everything applied before it.
                let sql = format!(
                    "SELECT (COALESCE(r.replay_lsn >= '{mark}'::pg_lsn, false) OR s.confirmed_flush_lsn >= '{mark}'::pg_lsn)::text FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '{}'",
                    slot.replace('\'', "''")
                );
                while old.one(&sql).await? != "true" {
                    if Instant::now() >= deadline {
                        return Err(timeout(mark));
                    }
                    tokio::time::sleep(POLL).await;
                }
                self.keep(from, old);
                found.push(format!("slot {slot} applied {mark}"));
            }
            CatchUp::Gtid => {
                let mut new = self.writer(to).await?;
                let left = deadline.saturating_duration_since(Instant::now());
                if !new.wait_gtid(mark, left).await? {
                    return Err(timeout(mark));
                }
                self.keep(to, new);
                found.push(format!("new writer executed {mark}"));
            }
            CatchUp::Sentinel => {
                let mut new = self.writer(to).await?;
                let sql = format!(
                    "SELECT COUNT(*) FROM {} WHERE id = '{mark}'",
                    c.sentinel_table
                );
                while new.one(&sql).await? == "0" {
                    if Instant::now() >= deadline {
                        return Err(timeout(mark));
                    }
                    tokio::time::sleep(POLL).await;
                }
                self.keep(to, new);
                found.push(format!("sentinel {mark} arrived"));
            }
        }
        if self.protocol() == Protocol::Postgres && c.sync_sequences {
            let mut old = self.writer(from).await?;
            let mut new = self.writer(to).await?;
            found.push(sync_sequences(&mut old, &mut new).await?);
            self.keep(from, old);
            self.keep(to, new);
        }
        let (recorded, epoch) = self.write_record(from, to).await?;
        found.push(recorded);
        Ok((found.join("; "), epoch))
    }

    /// Undoes the database side of an aborted cutover: the fence on the old writer and the
    /// record on the new one.
    pub async fn unfence(&self, from: &str) -> Result<(), DbError> {
        let erased = self.erase_record().await;
        let fenced = std::mem::take(&mut *self.fenced.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(c) = self.cutover().filter(|_| fenced) {
            let mut old = self.writer(from).await?;
            for sql in c.fence_statements(self.protocol(), false) {
                old.exec(&sql).await?;
            }
        }
        self.release();
        erased
    }
}

/// Sets every sequence of the new writer at least to its value on the old one (logical
/// replication carries rows, not sequences).
async fn sync_sequences(old: &mut Writer, new: &mut Writer) -> Result<String, DbError> {
    let Conn::Postgres(client) = &old.conn else {
        return Ok(String::new());
    };
    let rows = client
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences WHERE last_value IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| old.error("read sequences", e))?;
    let Conn::Postgres(target) = &new.conn else {
        return Ok(String::new());
    };
    for row in &rows {
        let name: String = row.get(0);
        let value: i64 = row.get(1);
        target
            .execute(
                "SELECT setval($1::text::regclass, GREATEST($2::bigint, (SELECT COALESCE(last_value, 0) FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename) = $1::text)), true)",
                &[&name, &value],
            )
            .await
            .map_err(|e| new.error(&format!("set sequence {name}"), e))?;
    }
    Ok(format!("{} sequences carried over", rows.len()))
}

impl Writer {
    /// A database fence holds transactions that start after it: one a straggling proxy
    /// began before it (PostgreSQL's `default_transaction_read_only`), or that wrote before
    /// it and commits after (MariaDB's `read_only`), could still commit after the position is
    /// taken. Waits up to `wait` for those to end, then ends their sessions.
    async fn end_older_transactions(&mut self, wait: Duration) -> Result<(), DbError> {
        let postgres = matches!(self.conn, Conn::Postgres(_));
        let (now, older, end) = if postgres {
            (
                "SELECT clock_timestamp()::text",
                "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start < '{t}'::timestamptz",
                "SELECT count(pg_terminate_backend(pid)) ",
            )
        } else {
            (
                "SELECT NOW(6)",
                "FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_started < '{t}'",
                "SELECT trx_mysql_thread_id ",
            )
        };
        let fenced_at = self.one(now).await?;
        let older = older.replace("{t}", &fenced_at);
        let deadline = Instant::now() + wait;
        while self.one(&format!("SELECT count(*) {older}")).await? != "0" {
            if Instant::now() >= deadline {
                let ended = if postgres {
                    self.one(&format!("{end}{older}")).await?
                } else {
                    let ids = self.rows(&format!("{end}{older}")).await?;
                    for id in ids.iter().filter_map(|r| r.first()) {
                        if let Err(e) = self.exec(&format!("KILL CONNECTION {id}")).await {
                            tracing::warn!(error = %crate::error::chain(&e), "fence: could not end a session");
                        }
                    }
                    ids.len().to_string()
                };
                tracing::warn!(sessions = %ended, writer = %self.addr, "fence: ended sessions whose transactions began before it");
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn check_writable(&mut self) -> Result<(), DbError> {
        let (sql, writable) = match self.conn {
            Conn::Postgres(_) => ("SELECT pg_is_in_recovery()::text", "false"),
            Conn::Mysql(_) => ("SELECT @@GLOBAL.read_only", "0"),
        };
        let answer = self.one(sql).await?;
        if answer != writable {
            return Err(DbError::Refused(format!(
                "the new writer {} is read-only ({sql} = {answer}); make it writable before the cutover",
                self.addr
            )));
        }
        Ok(())
    }

    async fn check_table(&mut self, table: &str) -> Result<(), DbError> {
        self.one(&format!("SELECT COUNT(*) FROM {table} WHERE 1 = 0"))
            .await
            .map(|_| ())
            .map_err(|e| {
                DbError::Refused(format!(
                    "sentinel table {table} is not usable on {}: {}",
                    self.addr,
                    crate::error::chain(&e)
                ))
            })
    }

    /// The logical slot exists, a subscriber streams from it, and its lag is under `max`.
    async fn check_slot(&mut self, slot: &str, max: Duration) -> Result<String, DbError> {
        let quoted = slot.replace('\'', "''");
        let sql = format!(
            "SELECT s.active::text || ' ' || COALESCE(EXTRACT(EPOCH FROM r.replay_lag)::text, '0') FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '{quoted}'"
        );
        let answer = self.one(&sql).await?;
        let Some((active, lag)) = answer.split_once(' ') else {
            return Err(DbError::Refused(format!(
                "no replication slot {slot:?} on the old writer {}",
                self.addr
            )));
        };
        if active != "true" {
            return Err(DbError::Refused(format!(
                "replication slot {slot:?} on {} has no subscriber streaming from it",
                self.addr
            )));
        }
        let lag = Duration::from_secs_f64(lag.parse::<f64>().unwrap_or(0.0).max(0.0));
        if lag > max {
            return Err(DbError::Refused(format!(
                "the new cluster lags {lag:?} behind (max_lag {max:?})"
            )));
        }
        Ok(format!("slot {slot} streaming, lag {lag:?}"))
    }

    /// Replication into this (new) writer runs and lags less than `max`.
    async fn check_replica(&mut self, max: Duration) -> Result<String, DbError> {
        let Conn::Mysql(c) = &mut self.conn else {
            return Ok(String::new());
        };
        let rows: Result<Vec<mysql_async::Row>, _> = c.query("SHOW SLAVE STATUS").await;
        let rows = rows.map_err(|e| self.error("SHOW SLAVE STATUS", e))?;
        let Some(row) = rows.first() else {
            return Err(DbError::Refused(format!(
                "the new writer {} does not replicate from anywhere (SHOW SLAVE STATUS is empty)",
                self.addr
            )));
        };
        let text = |names: &[&str]| {
            names.iter().find_map(|n| {
                row.get_opt::<Option<String>, _>(*n)
                    .and_then(|v| v.ok())
                    .flatten()
            })
        };
        let io = text(&["Slave_IO_Running", "Replica_IO_Running"]).unwrap_or_default();
        let sql = text(&["Slave_SQL_Running", "Replica_SQL_Running"]).unwrap_or_default();
        if io != "Yes" || sql != "Yes" {
            return Err(DbError::Refused(format!(
                "replication into the new writer {} is not running (IO {io}, SQL {sql})",
                self.addr
            )));
        }
        let behind = text(&["Seconds_Behind_Master", "Seconds_Behind_Source"])
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let lag = Duration::from_secs(behind);
        if lag > max {
            return Err(DbError::Refused(format!(
                "the new cluster lags {lag:?} behind (max_lag {max:?})"
            )));
        }
        Ok(format!("replication running, {behind}s behind"))
    }

    async fn is_mariadb(&mut self) -> Result<bool, DbError> {
        Ok(self.one("SELECT VERSION()").await?.contains("MariaDB"))
    }

    async fn gtid_position(&mut self) -> Result<String, DbError> {
        if self.is_mariadb().await? {
            self.one("SELECT @@GLOBAL.gtid_binlog_pos").await
        } else {
            self.one("SELECT @@GLOBAL.gtid_executed").await
        }
    }

    /// Waits up to `left` until this writer executed `mark`; `false` on timeout.
    async fn wait_gtid(&mut self, mark: &str, left: Duration) -> Result<bool, DbError> {
        let mariadb = self.is_mariadb().await?;
        let Conn::Mysql(c) = &mut self.conn else {
            return Ok(true);
        };
        let secs = left.as_secs_f64().max(0.001);
        let (sql, reached) = if mariadb {
            ("SELECT MASTER_GTID_WAIT(?, ?)", 0)
        } else {
            ("SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)", 0)
        };
        let answer: Result<Option<i64>, _> = c.exec_first(sql, (mark, secs)).await;
        let answer = answer.map_err(|e| self.error(sql, e))?;
        Ok(answer == Some(reached))
    }
}
