//! The record of a cutover kept in the new cluster itself: one row per switch in
//! `[cutover] record_table` on the new writer, written inside the pause right before the
//! switch and erased if the cutover aborts. A proxy that starts without a state file (a new
//! container, a lost disk, a proxy that was down during the cutover) reads the newest record
//! from every cluster, so it never sends writes to the cluster a cutover fenced.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;

use super::database::{CONNECT_TIMEOUT, Databases, DbError, Writer, Written};
use crate::config::Protocol;

/// One switch, as recorded on the cluster that became active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The cluster the cutover made active.
    pub active: String,
    /// The cluster it left read-only.
    pub fenced: String,
    /// When, in milliseconds since the Unix epoch (the proxy's clock, as the state file's).
    pub at_ms: u64,
    /// One more than the newest record's when it was written (compare-and-set: a unique
    /// index refuses a second record with the same epoch).
    pub epoch: u64,
    /// Where it was read from, for the log.
    pub source: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A string literal for `protocol`'s SQL (cluster names come from the config, but are quoted
/// properly all the same).
fn literal(protocol: Protocol, text: &str) -> String {
    let quoted = match protocol {
        Protocol::Postgres => text.replace('\'', "''"),
        Protocol::Mysql => text.replace('\\', "\\\\").replace('\'', "''"),
    };
    format!("'{quoted}'")
}

fn create_table(protocol: Protocol, table: &str) -> Vec<String> {
    let name = match protocol {
        Protocol::Postgres => "text",
        Protocol::Mysql => "VARCHAR(255)",
    };
    let index = format!("{}_epoch", table.rsplit('.').next().unwrap_or(table));
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (switched_at_ms BIGINT NOT NULL, active {name} NOT NULL, fenced {name} NOT NULL, epoch BIGINT NULL, PRIMARY KEY (switched_at_ms, active))"
        ),
        // Tables from before epochs: their rows keep a NULL epoch, which the unique index
        // allows any number of times.
        format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS epoch BIGINT NULL"),
        format!("CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} (epoch)"),
    ]
}

/// A query answering `1` when `table` exists (qualified or in the current schema/database).
fn table_exists(protocol: Protocol, table: &str) -> String {
    match protocol {
        Protocol::Postgres => format!(
            "SELECT (to_regclass({}) IS NOT NULL)::int",
            literal(protocol, table)
        ),
        Protocol::Mysql => {
            let (schema, name) = match table.split_once('.') {
                Some((schema, name)) => (literal(protocol, schema), name),
                None => ("DATABASE()".to_owned(), table),
            };
            format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {schema} AND table_name = {}",
                literal(protocol, name)
            )
        }
    }
}

impl Databases {
    pub(super) fn record_table(&self) -> Option<&str> {
        self.cutover()
            .filter(|c| c.record)
            .map(|c| c.record_table.as_str())
    }

    fn written_lock(&self) -> std::sync::MutexGuard<'_, Option<Written>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Preflight: the record table exists on the new writer (created when missing), so the
    /// pause only pays for one insert.
    pub(super) async fn prepare_record(&self, to: &str) -> Result<String, DbError> {
        let Some(table) = self.record_table() else {
            return Ok("record = false: no record in the database".into());
        };
        let mut new = match self.writer(to).await {
            Err(DbError::NoLogin(_)) => {
                return Ok(format!(
                    "no record in the database: cluster {to:?} has no monitor_user"
                ));
            }
            other => other?,
        };
        for sql in create_table(self.protocol(), table) {
            if let Err(e) = new.exec(&sql).await {
                return Err(DbError::Refused(format!(
                    "the record table {table} cannot be created on the new writer {}: {}",
                    new.addr,
                    crate::error::chain(&e)
                )));
            }
        }
        self.keep(to, new);
        let seen = self.newest_epoch(table).await;
        *self.seen_epoch.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(format!(
            "record table {table} ready on the new writer, epoch {seen}"
        ))
    }

    /// Records on the new writer that `to` is active and `from` fenced, with the epoch after
    /// the newest one preflight saw (compare-and-set: a record with that epoch written
    /// meanwhile makes the insert fail). Returns what was done and the epoch (0: none).
    pub(super) async fn write_record(
        &self,
        from: &str,
        to: &str,
    ) -> Result<(String, u64), DbError> {
        let Some(table) = self.record_table() else {
            return Ok(("no record written (record = false)".into(), 0));
        };
        let mut new = match self.writer(to).await {
            Err(DbError::NoLogin(_)) => {
                return Ok(("no record written (no monitor_user)".into(), 0));
            }
            other => other?,
        };
        let at_ms = now_ms();
        let epoch = *self.seen_epoch.lock().unwrap_or_else(|p| p.into_inner()) + 1;
        let p = self.protocol();
        new.exec(&format!(
            "INSERT INTO {table} (switched_at_ms, active, fenced, epoch) VALUES ({at_ms}, {}, {}, {epoch})",
            literal(p, to),
            literal(p, from)
        ))
        .await?;
        *self.written_lock() = Some(Written {
            cluster: to.to_owned(),
            at_ms,
        });
        self.keep(to, new);
        Ok((format!("recorded in {table}, epoch {epoch}"), epoch))
    }

    /// The highest epoch recorded on any cluster this proxy can read (0: none).
    async fn newest_epoch(&self, table: &str) -> u64 {
        let mut newest = 0;
        for cluster in self.config.raw.clusters.keys() {
            let read = tokio::time::timeout(CONNECT_TIMEOUT, self.read_record(cluster, table));
            match read.await {
                Ok(Ok(Some(r))) => newest = newest.max(r.epoch),
                Ok(Ok(None)) | Ok(Err(DbError::NoLogin(_))) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%cluster, error = %crate::error::chain(&e), "could not read the cutover record's epoch")
                }
                Err(_) => {
                    tracing::warn!(%cluster, "could not read the cutover record's epoch in time")
                }
            }
        }
        newest
    }

    /// Erases the record this cutover wrote (it aborted after writing it).
    pub(super) async fn erase_record(&self) -> Result<(), DbError> {
        let written = self.written_lock().take();
        let (Some(w), Some(table)) = (written, self.record_table()) else {
            return Ok(());
        };
        let mut new = self.writer(&w.cluster).await?;
        new.exec(&format!(
            "DELETE FROM {table} WHERE switched_at_ms = {} AND active = {}",
            w.at_ms,
            literal(self.protocol(), &w.cluster)
        ))
        .await?;
        self.keep(&w.cluster, new);
        Ok(())
    }

    /// The newest record on `cluster`'s writer; `None` when it has no record table or no row.
    async fn read_record(&self, cluster: &str, table: &str) -> Result<Option<Record>, DbError> {
        let mut w = self.connect(cluster).await?;
        read_newest(&mut w, self.protocol(), cluster, table).await
    }

    /// The newest cutover record over every cluster with a monitor account, each read
    /// bounded by `timeout`. A cluster that cannot be read is logged and skipped: the state
    /// file, when there is one, still holds the routing state.
    pub async fn newest_record(self: &Arc<Self>, timeout: Duration) -> Option<Record> {
        let table = self.record_table()?.to_owned();
        let mut reads = JoinSet::new();
        for cluster in self.config.raw.clusters.keys() {
            let (this, cluster, table) = (Arc::clone(self), cluster.clone(), table.clone());
            reads.spawn(async move {
                let read = tokio::time::timeout(timeout, this.read_record(&cluster, &table)).await;
                (cluster, read)
            });
        }
        let mut newest: Option<Record> = None;
        while let Some(joined) = reads.join_next().await {
            let Ok((cluster, read)) = joined else {
                continue;
            };
            match read {
                Ok(Ok(Some(r)))
                    if newest
                        .as_ref()
                        .is_none_or(|n| (r.epoch, r.at_ms) > (n.epoch, n.at_ms)) =>
                {
                    newest = Some(r);
                }
                Ok(Ok(_)) | Ok(Err(DbError::NoLogin(_))) => {}
                Ok(Err(e)) => tracing::warn!(
                    %cluster,
                    error = %crate::error::chain(&e),
                    "could not read the cutover record"
                ),
                Err(_) => tracing::warn!(
                    %cluster,
                    ?timeout,
                    "could not read the cutover record in time"
                ),
            }
        }
        newest
    }
}

/// The newest record in `table` on `w` (`cluster`'s writer); `None` when it has no
/// record table or no row. Orders by epoch, then time (rows from before epochs have none).
pub(super) async fn read_newest(
    w: &mut Writer,
    protocol: Protocol,
    cluster: &str,
    table: &str,
) -> Result<Option<Record>, DbError> {
    if w.one(&table_exists(protocol, table)).await? != "1" {
        return Ok(None);
    }
    let row = w
        .row(&format!(
            "SELECT switched_at_ms, active, fenced, COALESCE(epoch, 0) FROM {table} ORDER BY COALESCE(epoch, 0) DESC, switched_at_ms DESC LIMIT 1"
        ))
        .await?;
    let [at, active, fenced, epoch] = row.as_slice() else {
        return Ok(None);
    };
    let number = |what: &str, text: &str| {
        text.parse::<u64>()
            .map_err(|e| w.error(&format!("read {table}.{what} {text:?}"), e))
    };
    Ok(Some(Record {
        active: active.clone(),
        fenced: fenced.clone(),
        at_ms: number("switched_at_ms", at)?,
        epoch: number("epoch", epoch)?,
        source: format!("{table} on {} ({cluster})", w.addr),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted_for_each_dialect() {
        assert_eq!(literal(Protocol::Postgres, r"o'ld\"), r"'o''ld\'");
        assert_eq!(literal(Protocol::Mysql, r"o'ld\"), r"'o''ld\\'");
    }

    #[test]
    fn the_table_check_follows_qualification() {
        assert_eq!(
            table_exists(Protocol::Mysql, "ops.switchyard_cutover"),
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'ops' AND table_name = 'switchyard_cutover'"
        );
        assert!(table_exists(Protocol::Mysql, "switchyard_cutover").contains("DATABASE()"));
        assert_eq!(
            table_exists(Protocol::Postgres, "s.t"),
            "SELECT (to_regclass('s.t') IS NOT NULL)::int"
        );
    }
}
