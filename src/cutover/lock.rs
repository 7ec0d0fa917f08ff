//! One cutover at a time: a lock on the new writer (`pg_try_advisory_lock` /
//! `GET_LOCK`), held on a connection of its own by the proxy that runs the cutover's
//! database steps. It dies with its holder: the server frees it when that connection
//! closes (the proxy died), and the proxy closes it when the cutover ends or when no step
//! came for a lease (the coordinator died). A second operator is refused with the holder's
//! name.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::database::{Conn, CutoverLock, Databases, DbError, Held, Writer};
use crate::config::Protocol;

/// The advisory lock key (PostgreSQL; any constant no one else uses: "SWYD").
const PG_KEY: i64 = 0x5357_5944;
/// The named lock (MySQL).
const MYSQL_NAME: &str = "switchyard_cutover";

impl CutoverLock {
    /// Pushes the lease out: the coordinator is still there.
    pub(super) fn renew(&self) {
        if let Some(h) = self.slot().as_ref() {
            h.renew.send_replace(Instant::now() + h.lease);
        }
    }
}

impl Databases {
    /// Takes the cutover lock on `to`'s writer for `holder`, kept while steps keep coming
    /// (each renews it for `lease`). Refused, naming the holder, when another cutover has it.
    pub(super) async fn lock(
        &self,
        to: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<String, DbError> {
        let held_here = self.lock.slot().take();
        if let Some(h) = held_here
            && !h.task.is_finished()
        {
            let holder = h.holder.clone();
            *self.lock.slot() = Some(h);
            return Err(DbError::Refused(format!(
                "another cutover is running: the cutover lock is held by {holder} through this proxy"
            )));
        }
        let mut w = self.connect(to).await?;
        let addr = w.addr.clone();
        match self.protocol() {
            Protocol::Postgres => {
                let name = format!("switchyard cutover by {holder}").replace('\'', "");
                w.exec(&format!("SET application_name = '{name}'")).await?;
                let got = w
                    .one(&format!("SELECT pg_try_advisory_lock({PG_KEY})::text"))
                    .await?;
                if got != "true" {
                    let who = w
                        .one(&format!(
                            "SELECT COALESCE(NULLIF(a.application_name, ''), 'session ' || a.pid) || ' (from ' || COALESCE(host(a.client_addr), 'a local socket') || ', since ' || to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') || ')' FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = {PG_KEY} AND l.objsubid = 1"
                        ))
                        .await
                        .unwrap_or_default();
                    return Err(refused(&who, &addr));
                }
            }
            Protocol::Mysql => {
                let got = w
                    .one(&format!("SELECT GET_LOCK('{MYSQL_NAME}', 0)"))
                    .await?;
                // MySQL has no application name to show: the holder writes its name in a
                // table beside the record, which a refused operator reads.
                let names = self.record_table().map(|t| format!("{t}_lock"));
                if got != "1" {
                    let who = match &names {
                        Some(t) => w
                            .one(&format!(
                                "SELECT CONCAT(holder, ' (since ', since, ')') FROM {t} WHERE id = 1"
                            ))
                            .await
                            .unwrap_or_default(),
                        None => String::new(),
                    };
                    let who = if who.is_empty() {
                        w.one(&format!(
                            "SELECT CONCAT('connection ', ID, ' of ', USER, '@', HOST) FROM information_schema.PROCESSLIST WHERE ID = IS_USED_LOCK('{MYSQL_NAME}')"
                        ))
                        .await
                        .unwrap_or_default()
                    } else {
                        who
                    };
                    return Err(refused(&who, &addr));
                }
                if let Some(t) = &names {
                    let name = format!("switchyard cutover by {holder}").replace(['\\', '\''], "");
                    for sql in [
                        format!(
                            "CREATE TABLE IF NOT EXISTS {t} (id INT PRIMARY KEY, holder VARCHAR(255) NOT NULL, since DATETIME(3) NOT NULL)"
                        ),
                        format!(
                            "REPLACE INTO {t} (id, holder, since) VALUES (1, '{name}', NOW(3))"
                        ),
                    ] {
                        if let Err(e) = w.exec(&sql).await {
                            tracing::warn!(error = %crate::error::chain(&e), "could not write the cutover lock's holder");
                        }
                    }
                }
            }
        }
        let (renew, deadline) = watch::channel(Instant::now() + lease);
        let (release, released) = oneshot::channel();
        let task = tokio::spawn(hold(w, deadline, released, holder.to_owned()));
        *self.lock.slot() = Some(Held {
            holder: holder.to_owned(),
            lease,
            renew,
            release: Some(release),
            task,
        });
        Ok(format!("cutover lock taken on {addr} for {holder}"))
    }

    /// Gives the lock back (the cutover ended); waits until the server has freed it.
    pub(super) async fn unlock(&self) {
        let held = self.lock.slot().take();
        if let Some(mut h) = held {
            if let Some(release) = h.release.take() {
                let _ = release.send(());
            }
            let _ = h.task.await;
        }
    }

    pub(super) fn renew_lock(&self) {
        self.lock.renew();
    }
}

fn refused(who: &str, addr: &str) -> DbError {
    let who = if who.is_empty() {
        "another session"
    } else {
        who
    };
    DbError::Refused(format!(
        "another cutover is running: the cutover lock on {addr} is held by {who}"
    ))
}

/// Keeps the lock's connection until released, or until the lease runs out without a
/// renewal; then unlocks and closes it.
async fn hold(
    mut w: Writer,
    mut deadline: watch::Receiver<Instant>,
    mut released: oneshot::Receiver<()>,
    holder: String,
) {
    loop {
        let until = *deadline.borrow_and_update();
        tokio::select! {
            _ = &mut released => break,
            changed = deadline.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(until) => {
                tracing::warn!(%holder, "no cutover step within the lease: the coordinator is gone; freeing the cutover lock");
                break;
            }
        }
    }
    let sql = match &w.conn {
        Conn::Postgres(_) => format!("SELECT pg_advisory_unlock({PG_KEY})::text"),
        Conn::Mysql(_) => format!("SELECT RELEASE_LOCK('{MYSQL_NAME}')"),
    };
    if let Err(e) = w.one(&sql).await {
        tracing::warn!(error = %crate::error::chain(&e), "unlock the cutover lock (closing its connection frees it)");
    }
}
