//! The fleet: the proxies behind one load balancer, with the databases as their shared
//! truth. Every `poll_interval` each proxy heartbeats into a members table on its active
//! cluster's writer (id, admin URL, version, active cluster, epoch, last seen by the
//! database's clock), reads the members back from every cluster, resolves `peers` /
//! `peers_dns`, and re-reads the newest cutover record: one with a higher epoch than its
//! own is a cutover it missed, and it follows it at once. Writing on the active cluster only
//! keeps the table from conflicting with replication old → new, which may carry it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::Routing;
use super::database::{CONNECT_TIMEOUT, Conn, Databases, DbError, Writer};
use super::record::{Record, read_newest};
use crate::config::FleetConfig;
use crate::shutdown::Shutdown;

/// One proxy of the fleet as this proxy last saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub id: String,
    pub admin_url: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub active: String,
    #[serde(default)]
    pub epoch: u64,
    /// Seconds since its last heartbeat, by the database's clock (`None`: not registered,
    /// known from `peers` / `peers_dns` only).
    pub seen_ago_s: Option<f64>,
    /// Heartbeating within `stale_after` intervals (or listed by peers / DNS).
    pub live: bool,
    /// Where it was found: `database`, `peers`, `dns`.
    pub source: String,
}

/// What `GET /v1/fleet` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    #[serde(rename = "self")]
    pub this: String,
    pub poll_interval_ms: u64,
    pub members: Vec<Member>,
}

pub struct Fleet {
    config: FleetConfig,
    databases: Arc<Databases>,
    /// This proxy's admin address, known once its listener is bound.
    admin: OnceLock<SocketAddr>,
    members: Mutex<Vec<Member>>,
}

impl Fleet {
    pub fn new(config: FleetConfig, databases: Arc<Databases>) -> Fleet {
        Fleet {
            config,
            databases,
            admin: OnceLock::new(),
            members: Mutex::new(Vec::new()),
        }
    }

    /// This proxy's admin listener (bound to port 0 in tests): the default id and URL.
    pub fn set_admin(&self, addr: SocketAddr) {
        let _ = self.admin.set(addr);
    }

    pub fn id(&self) -> String {
        if let Some(id) = &self.config.id {
            return id.clone();
        }
        let port = self.admin.get().map_or(0, |a| a.port());
        format!("{}:{port}", host_name())
    }

    pub fn advertise(&self) -> String {
        if let Some(url) = &self.config.advertise {
            return url.trim_end_matches('/').to_owned();
        }
        match self.admin.get() {
            Some(a) if a.ip().is_unspecified() => format!("http://{}:{}", host_name(), a.port()),
            Some(a) => format!("http://{a}"),
            None => String::new(),
        }
    }

    fn members_lock(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> View {
        View {
            this: self.id(),
            poll_interval_ms: self.config.poll_interval.as_millis() as u64,
            members: self.members_lock().clone(),
        }
    }

    /// Live members known, this proxy included.
    pub fn known(&self) -> usize {
        let members = self.members_lock();
        let me = self.id();
        1 + members.iter().filter(|m| m.live && m.id != me).count()
    }

    fn table(&self) -> &str {
        &self.config.table
    }

    /// Heartbeats, reads the members and the newest record, and follows a newer record;
    /// every `poll_interval` until shutdown, when it leaves the members table.
    pub async fn run(self: Arc<Self>, routing: Arc<Routing>, mut shutdown: Shutdown) {
        let mut conns: BTreeMap<String, Writer> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tick.tick() => {}
            }
            let round = self.round(&routing, &mut conns);
            tokio::select! {
                _ = shutdown.recv() => break,
                () = round => {}
            }
        }
        if self.config.register {
            let me = self.id();
            let active = routing.load().active.clone();
            for (cluster, mut w) in conns.into_iter().filter(|(c, _)| *c == active) {
                let sql = format!(
                    "DELETE FROM {} WHERE id = {}",
                    self.table(),
                    literal(&w, &me)
                );
                if tokio::time::timeout(Duration::from_secs(1), w.exec(&sql))
                    .await
                    .is_err()
                {
                    tracing::debug!(%cluster, "could not leave the members table in time");
                }
            }
        }
    }

    async fn round(self: &Arc<Self>, routing: &Arc<Routing>, conns: &mut BTreeMap<String, Writer>) {
        let state = routing.load();
        let me = Heartbeat {
            id: self.id(),
            admin_url: self.advertise(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active: state.active.clone(),
            epoch: state.epoch,
        };
        let mut reads = JoinSet::new();
        for cluster in self.databases.config.raw.clusters.keys() {
            let (this, cluster, me) = (Arc::clone(self), cluster.clone(), me.clone());
            let register = self.config.register && cluster == state.active;
            let kept = conns.remove(&cluster);
            let bound = self
                .config
                .poll_interval
                .max(Duration::from_secs(1))
                .min(CONNECT_TIMEOUT);
            reads.spawn(async move {
                let visit =
                    tokio::time::timeout(bound, this.visit(&cluster, kept, &me, register)).await;
                (cluster, visit)
            });
        }
        let mut newest: Option<Record> = None;
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        let mut beat_active = false;
        while let Some(joined) = reads.join_next().await {
            let Ok((cluster, visit)) = joined else {
                continue;
            };
            let (w, record, found, beat) = match visit {
                Ok(Ok(v)) => v,
                Ok(Err(DbError::NoLogin(_))) => continue,
                Ok(Err(e)) => {
                    tracing::debug!(%cluster, error = %crate::error::chain(&e), "fleet: could not read the cluster");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%cluster, "fleet: the cluster did not answer within the poll");
                    continue;
                }
            };
            beat_active |= beat;
            conns.insert(cluster, w);
            if let Some(r) = record
                && newest
                    .as_ref()
                    .is_none_or(|n| (r.epoch, r.at_ms) > (n.epoch, n.at_ms))
            {
                newest = Some(r);
            }
            for m in found {
                let keep = members.get(&m.id).is_none_or(|k| {
                    m.seen_ago_s.unwrap_or(f64::MAX) < k.seen_ago_s.unwrap_or(f64::MAX)
                });
                if keep {
                    members.insert(m.id.clone(), m);
                }
            }
        }
        if self.config.register && !beat_active {
            // The active cluster is fenced (a cutover paused or died after its fence, or
            // this proxy is a straggler): heartbeat where writes are accepted, so a live
            // member never looks stale.
            for (cluster, w) in conns.iter_mut().filter(|(c, _)| **c != state.active) {
                if heartbeat(w, self.table(), &me).await {
                    tracing::debug!(%cluster, "fleet: heartbeat on another cluster than the active one (it is fenced)");
                    break;
                }
            }
        }
        let drain = (self.databases.config.raw.cutover.as_ref())
            .map_or(Duration::from_secs(2), |c| c.drain_timeout);
        if let Some(r) = &newest
            && let Err(e) = routing.converge_drained(r, drain).await
        {
            tracing::error!(error = %crate::error::chain(&e), source = %r.source, "could not follow the cutover record");
        }
        let mut list: Vec<Member> = members.into_values().collect();
        for (url, source) in self.peers().await {
            if !list.iter().any(|m| m.admin_url == url) && url != me.admin_url {
                list.push(Member {
                    id: url.trim_start_matches("http://").to_owned(),
                    admin_url: url,
                    version: String::new(),
                    active: String::new(),
                    epoch: 0,
                    seen_ago_s: None,
                    live: true,
                    source: source.to_owned(),
                });
            }
        }
        *self.members_lock() = list;
    }

    /// On one cluster's writer: heartbeat (when registering), the newest record, and the
    /// members table. Gives the connection back for the next round.
    async fn visit(
        &self,
        cluster: &str,
        kept: Option<Writer>,
        me: &Heartbeat,
        register: bool,
    ) -> Result<(Writer, Option<Record>, Vec<Member>, bool), DbError> {
        let mut w = match kept {
            Some(w) => w,
            None => {
                let mut w = self.databases.connect(cluster).await?;
                // On every cluster, so that replication of the active one's rows (a
                // PostgreSQL publication FOR ALL TABLES, MySQL's binlog) finds the table.
                if self.config.register
                    && let Err(e) = w.exec(&create_members(&w, self.table())).await
                {
                    tracing::debug!(%cluster, error = %crate::error::chain(&e), "fleet: members table not created (a fenced writer)");
                }
                w
            }
        };
        let beat = register && heartbeat(&mut w, self.table(), me).await;
        let record = match self
            .databases
            .config
            .raw
            .cutover
            .as_ref()
            .filter(|c| c.record)
        {
            Some(c) => {
                let table = c.record_table.clone();
                read_newest(&mut w, self.databases.protocol(), cluster, &table).await?
            }
            None => None,
        };
        let members = self.read_members(&mut w).await?;
        Ok((w, record, members, beat))
    }

    async fn read_members(&self, w: &mut Writer) -> Result<Vec<Member>, DbError> {
        let t = self.table();
        let exists = match w.conn {
            Conn::Postgres(_) => format!("SELECT (to_regclass('{t}') IS NOT NULL)::int"),
            Conn::Mysql(_) => {
                let (schema, name) = match t.split_once('.') {
                    Some((s, n)) => (format!("'{s}'"), n),
                    None => ("DATABASE()".to_owned(), t),
                };
                format!(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {schema} AND table_name = '{name}'"
                )
            }
        };
        if w.one(&exists).await? != "1" {
            return Ok(Vec::new());
        }
        let age = match w.conn {
            Conn::Postgres(_) => "EXTRACT(EPOCH FROM (now() - last_seen))::float8",
            Conn::Mysql(_) => "TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(3)) / 1000000",
        };
        let rows = w
            .rows(&format!(
                "SELECT id, admin_url, version, active, epoch, {age} FROM {t}"
            ))
            .await?;
        let stale = self.config.stale().as_secs_f64();
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let [id, url, version, active, epoch, age] = <[String; 6]>::try_from(r).ok()?;
                let age = age.parse::<f64>().ok();
                Some(Member {
                    id,
                    admin_url: url,
                    version,
                    active,
                    epoch: epoch.parse().unwrap_or(0),
                    live: age.is_some_and(|a| a <= stale),
                    seen_ago_s: age,
                    source: "database".into(),
                })
            })
            .collect())
    }

    /// Admin URLs from `peers` and from every address of `peers_dns`.
    async fn peers(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = self
            .config
            .peers
            .iter()
            .map(|p| (p.trim_end_matches('/').to_owned(), "peers"))
            .collect();
        if let Some(name) = &self.config.peers_dns {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => out.extend(addrs.map(|a| (format!("http://{a}"), "dns"))),
                Err(e) => tracing::warn!(%name, error = %e, "fleet: peers_dns does not resolve"),
            }
        }
        out
    }
}

/// Writes this proxy's row on `w`'s writer; `false` when the writer is fenced. MySQL's
/// read_only lets the monitor account (SUPER) write: it is not used on a read-only writer,
/// so a row written there never meets the same row written on the other side.
async fn heartbeat(w: &mut Writer, table: &str, me: &Heartbeat) -> bool {
    let fenced = match w.conn {
        Conn::Mysql(_) => w
            .one("SELECT @@GLOBAL.read_only")
            .await
            .is_ok_and(|v| v == "1"),
        Conn::Postgres(_) => false,
    };
    if fenced {
        return false;
    }
    match w.exec(&upsert(w, table, me)).await {
        Ok(()) => true,
        Err(e) => {
            // PostgreSQL's fence refuses it.
            tracing::debug!(error = %crate::error::chain(&e), "fleet: heartbeat refused");
            false
        }
    }
}

/// This proxy's row in the members table.
#[derive(Clone)]
struct Heartbeat {
    id: String,
    admin_url: String,
    version: String,
    active: String,
    epoch: u64,
}

fn literal(w: &Writer, text: &str) -> String {
    match w.conn {
        Conn::Postgres(_) => format!("'{}'", text.replace('\'', "''")),
        Conn::Mysql(_) => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''")),
    }
}

fn create_members(w: &Writer, table: &str) -> String {
    let (text, time) = match w.conn {
        Conn::Postgres(_) => ("text", "timestamptz"),
        Conn::Mysql(_) => ("VARCHAR(255)", "DATETIME(3)"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (id {text} PRIMARY KEY, admin_url {text} NOT NULL, version {text} NOT NULL, active {text} NOT NULL, epoch BIGINT NOT NULL, last_seen {time} NOT NULL)"
    )
}

fn upsert(w: &Writer, table: &str, me: &Heartbeat) -> String {
    let values = format!(
        "{}, {}, {}, {}, {}",
        literal(w, &me.id),
        literal(w, &me.admin_url),
        literal(w, &me.version),
        literal(w, &me.active),
        me.epoch
    );
    match w.conn {
        Conn::Postgres(_) => format!(
            "INSERT INTO {table} (id, admin_url, version, active, epoch, last_seen) VALUES ({values}, now()) ON CONFLICT (id) DO UPDATE SET admin_url = EXCLUDED.admin_url, version = EXCLUDED.version, active = EXCLUDED.active, epoch = EXCLUDED.epoch, last_seen = now()"
        ),
        Conn::Mysql(_) => format!(
            "INSERT INTO {table} (id, admin_url, version, active, epoch, last_seen) VALUES ({values}, NOW(3)) ON DUPLICATE KEY UPDATE admin_url = VALUES(admin_url), version = VALUES(version), active = VALUES(active), epoch = VALUES(epoch), last_seen = NOW(3)"
        ),
    }
}

/// The machine's name (for the default id and URL).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_live_within_stale_after_intervals() {
        let config: FleetConfig =
            toml::from_str("poll_interval = \"1s\"\nstale_after = 3").unwrap();
        assert_eq!(config.stale(), Duration::from_secs(3));
    }
}
