//! The `aurora` discovery source: ask an instance for the cluster's topology (Aurora's own
//! view, or any query with its columns), pick the writer and readers from the rows, and turn
//! server ids into instances through `instance_pattern`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use mysql_async::prelude::Queryable;

use super::probe::{self, MonitorLogin, ProbeError, Target};
use super::{Role, Seen, dns};
use crate::config::Protocol;

pub const POSTGRES_QUERY: &str = "SELECT server_id, session_id, last_update_timestamp, replica_lag_in_msec FROM aurora_replica_status()";
pub const MYSQL_QUERY: &str = "SELECT server_id, session_id, last_update_timestamp, replica_lag_in_milliseconds FROM information_schema.replica_host_status";
/// The `session_id` of the row that describes the writer.
pub const WRITER_SESSION_ID: &str = "MASTER_SESSION_ID";
/// Longest server id put into a host name (one DNS label).
const MAX_SERVER_ID: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum AuroraError {
    #[error("topology query")]
    Probe(#[from] ProbeError),
    #[error("topology query on {addr}: column {column} of row {row} is not {expected}")]
    Column {
        addr: String,
        row: usize,
        column: usize,
        expected: &'static str,
    },
}

/// One row of the topology view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub server_id: String,
    pub session_id: String,
    pub last_update: SystemTime,
    pub lag_ms: Option<f64>,
}

/// Server ids of the writer and readers the rows describe, with the lag each row reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub writer: Option<String>,
    pub readers: Vec<String>,
    /// Lag by server id. Aurora reports none for the writer (and none for a reader that has
    /// just started): missing or negative values count as 0, since Aurora's replicas read
    /// the writer's storage and Aurora itself restarts one that falls far behind.
    pub lag: BTreeMap<String, Duration>,
}

/// Picks the writer and readers from `rows`: rows older than `stale_after` at `now` are
/// ignored; of two rows claiming to be the writer the most recently updated wins (the other,
/// in an unknown role, is left out); server ids that cannot be a host name are left out.
pub fn select(rows: &[Row], now: SystemTime, stale_after: Duration) -> Selection {
    let usable = |r: &&Row| {
        let fresh = now
            .duration_since(r.last_update)
            .map_or(true, |age| age <= stale_after);
        fresh && valid_server_id(&r.server_id)
    };
    let rows: Vec<&Row> = rows.iter().filter(usable).collect();
    let claims = |r: &&&Row| r.session_id == WRITER_SESSION_ID;
    let writer = rows
        .iter()
        .filter(claims)
        .max_by(|a, b| (a.last_update, &b.server_id).cmp(&(b.last_update, &a.server_id)))
        .map(|r| r.server_id.clone());
    let mut readers: Vec<String> = rows
        .iter()
        .filter(|r| !claims(r))
        .map(|r| r.server_id.clone())
        .filter(|id| Some(id) != writer.as_ref())
        .collect();
    readers.sort();
    readers.dedup();
    let mut lag = BTreeMap::new();
    for id in writer.iter().chain(&readers) {
        // Of several rows for one reader, the most recently updated one speaks.
        let reported = rows
            .iter()
            .filter(|r| &r.server_id == id)
            .max_by_key(|r| r.last_update)
            .and_then(|r| r.lag_ms)
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1000.0));
        lag.insert(id.clone(), reported);
    }
    Selection {
        writer,
        readers,
        lag,
    }
}

fn valid_server_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SERVER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs the topology query on the first of `targets` that answers.
pub async fn query(
    protocol: Protocol,
    login: &MonitorLogin,
    targets: &[Target<'_>],
    sql: &str,
    timeout: Duration,
) -> Result<Vec<Row>, AuroraError> {
    let mut last = None;
    for &t in targets {
        let rows = probe::bounded(t.addr, timeout, async {
            match protocol {
                Protocol::Postgres => postgres_rows(t, login, sql).await,
                Protocol::Mysql => mysql_rows(t, login, sql).await,
            }
        })
        .await;
        match rows {
            Ok(rows) => return rows_or_column_error(t.addr, rows),
            Err(e) => {
                tracing::debug!(instance = t.addr, error = %e, "topology query failed; trying the next instance");
                last = Some(e);
            }
        }
    }
    Err(AuroraError::Probe(last.unwrap_or(ProbeError::NoRole {
        addr: "(no instance)".into(),
    })))
}

/// A row that could not be read: (row, column, expected type).
type BadColumn = (usize, usize, &'static str);

fn rows_or_column_error(
    addr: &str,
    rows: Result<Vec<Row>, BadColumn>,
) -> Result<Vec<Row>, AuroraError> {
    rows.map_err(|(row, column, expected)| AuroraError::Column {
        addr: addr.to_owned(),
        row,
        column,
        expected,
    })
}

async fn postgres_rows(
    t: Target<'_>,
    login: &MonitorLogin,
    sql: &str,
) -> Result<Result<Vec<Row>, BadColumn>, ProbeError> {
    let rows = probe::postgres_rows(t, login, sql).await?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let text = |c| r.try_get::<_, String>(c).map_err(|_| (i, c, "text"));
            let lag = r
                .try_get::<_, Option<f64>>(3)
                .or_else(|_| r.try_get::<_, Option<f32>>(3).map(|v| v.map(f64::from)))
                .ok()
                .flatten();
            Ok(Row {
                server_id: text(0)?,
                session_id: text(1)?,
                last_update: r
                    .try_get::<_, SystemTime>(2)
                    .map_err(|_| (i, 2, "a timestamp"))?,
                lag_ms: lag,
            })
        })
        .collect())
}

async fn mysql_rows(
    t: Target<'_>,
    login: &MonitorLogin,
    sql: &str,
) -> Result<Result<Vec<Row>, BadColumn>, ProbeError> {
    let mut conn = probe::mysql(t, login).await?;
    let rows: Vec<mysql_async::Row> =
        conn.query(sql).await.map_err(|source| ProbeError::Mysql {
            addr: t.addr.to_owned(),
            source,
        })?;
    if let Err(e) = conn.disconnect().await {
        tracing::debug!(error = %e, "monitor disconnect");
    }
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let value = |c: usize| r.as_ref(c).unwrap_or(&mysql_async::Value::NULL);
            let text = |c| mysql_text(value(c)).ok_or((i, c, "text"));
            Ok(Row {
                server_id: text(0)?,
                session_id: text(1)?,
                last_update: mysql_time(value(2)).ok_or((i, 2, "a DATETIME"))?,
                lag_ms: mysql_number(value(3)),
            })
        })
        .collect())
}

fn mysql_text(v: &mysql_async::Value) -> Option<String> {
    match v {
        mysql_async::Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        mysql_async::Value::Int(n) => Some(n.to_string()),
        mysql_async::Value::UInt(n) => Some(n.to_string()),
        _ => None,
    }
}

fn mysql_number(v: &mysql_async::Value) -> Option<f64> {
    match v {
        mysql_async::Value::Double(d) => Some(*d),
        mysql_async::Value::Float(f) => Some(f64::from(*f)),
        mysql_async::Value::Int(n) => Some(*n as f64),
        mysql_async::Value::UInt(n) => Some(*n as f64),
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// A MySQL DATETIME (binary, or text `YYYY-MM-DD HH:MM:SS[.ffffff]`) read as UTC.
fn mysql_time(v: &mysql_async::Value) -> Option<SystemTime> {
    let (y, mo, d, h, mi, s, us) = match v {
        mysql_async::Value::Date(y, mo, d, h, mi, s, us) => (
            i64::from(*y),
            u32::from(*mo),
            u32::from(*d),
            u64::from(*h),
            u64::from(*mi),
            u64::from(*s),
            *us,
        ),
        mysql_async::Value::Bytes(b) => {
            let text = std::str::from_utf8(b).ok()?;
            let (date, time) = text.split_once([' ', 'T'])?;
            let mut date = date.split('-').map(str::parse::<u32>);
            let (y, mo, d) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
            let (time, frac) = time.split_once('.').unwrap_or((time, "0"));
            let mut time = time.split(':').map(str::parse::<u64>);
            let (h, mi, s) = (time.next()?.ok()?, time.next()?.ok()?, time.next()?.ok()?);
            let frac = format!("{frac:0<6}");
            let us: u32 = frac.get(..6)?.parse().ok()?;
            (i64::from(y), mo, d, h, mi, s, us)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(us)))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The instances a selection names: `?` in `pattern` (`host:port`) becomes the server id,
/// and the host resolves through `resolver`. An instance whose name does not resolve is
/// left out of this round.
pub async fn seen(
    selection: &Selection,
    pattern: (&str, u16),
    resolver: &TokioResolver,
) -> Vec<Seen> {
    let (host_pattern, port) = pattern;
    let roles = selection
        .writer
        .iter()
        .map(|id| (id, Role::Writer))
        .chain(selection.readers.iter().map(|id| (id, Role::Reader)));
    let mut out = Vec::new();
    for (id, role) in roles {
        let name = host_pattern.replace('?', id);
        match dns::resolve(resolver, &name).await {
            Ok(ips) if !ips.is_empty() => out.push(Seen {
                addr: format!("{name}:{port}"),
                host: ips[0].to_string(),
                port,
                tls_name: name.clone(),
                role,
                reported_lag: Some(selection.lag.get(id).copied().unwrap_or_default()),
            }),
            Ok(_) => tracing::warn!(%name, "topology names an instance that does not resolve"),
            Err(e) => tracing::warn!(%name, error = %e, "cannot resolve an instance"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, session: &str, age_secs: u64, now: SystemTime) -> Row {
        Row {
            server_id: id.into(),
            session_id: session.into(),
            last_update: now - Duration::from_secs(age_secs),
            lag_ms: None,
        }
    }

    const STALE: Duration = Duration::from_secs(300);

    #[test]
    fn the_master_session_row_is_the_writer() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rows = [
            row("r2", "abc", 1, now),
            row("w", WRITER_SESSION_ID, 1, now),
            row("r1", "def", 1, now),
        ];
        let s = select(&rows, now, STALE);
        assert_eq!(s.writer.as_deref(), Some("w"));
        assert_eq!(s.readers, ["r1", "r2"]);
    }

    #[test]
    fn each_selected_instance_has_the_lag_its_row_reports() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lagging = |id: &str, age_secs, lag_ms| Row {
            lag_ms,
            ..row(id, "abc", age_secs, now)
        };
        let rows = [
            row("w", WRITER_SESSION_ID, 1, now),
            lagging("r1", 1, Some(1500.0)),
            lagging("r2", 1, None),
            lagging("r3", 1, Some(-1.0)),
            // An older row for r1 does not speak for it.
            lagging("r1", 5, Some(90_000.0)),
            lagging("stale", 400, Some(10.0)),
        ];
        let s = select(&rows, now, STALE);
        let ms = |id: &str| s.lag.get(id).map(Duration::as_millis);
        assert_eq!(ms("w"), Some(0));
        assert_eq!(ms("r1"), Some(1500));
        assert_eq!(ms("r2"), Some(0));
        assert_eq!(ms("r3"), Some(0));
        assert_eq!(ms("stale"), None);
    }

    #[test]
    fn stale_rows_are_ignored() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rows = [
            row("w", WRITER_SESSION_ID, 1, now),
            row("old", "abc", 301, now),
            row("edge", "abc", 300, now),
        ];
        let s = select(&rows, now, STALE);
        assert_eq!(s.readers, ["edge"]);
        let only_stale_writer = [row("w", WRITER_SESSION_ID, 600, now)];
        assert_eq!(select(&only_stale_writer, now, STALE), Selection::default());
    }

    #[test]
    fn of_two_writers_the_most_recently_updated_wins() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rows = [
            row("old-writer", WRITER_SESSION_ID, 20, now),
            row("new-writer", WRITER_SESSION_ID, 2, now),
            row("r", "abc", 1, now),
        ];
        let s = select(&rows, now, STALE);
        assert_eq!(s.writer.as_deref(), Some("new-writer"));
        assert_eq!(s.readers, ["r"]);
    }

    #[test]
    fn server_ids_that_are_not_host_labels_are_left_out() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rows = [
            row("w", WRITER_SESSION_ID, 1, now),
            row("evil.example.com:1", "abc", 1, now),
            row("", "abc", 1, now),
        ];
        assert!(select(&rows, now, STALE).readers.is_empty());
    }

    #[test]
    fn mysql_datetimes_read_as_utc() {
        let text = mysql_async::Value::Bytes(b"2024-03-01 12:34:56.5".to_vec());
        let binary = mysql_async::Value::Date(2024, 3, 1, 12, 34, 56, 500_000);
        let want = UNIX_EPOCH + Duration::from_millis(1_709_296_496_500);
        assert_eq!(mysql_time(&text), Some(want));
        assert_eq!(mysql_time(&binary), Some(want));
        assert_eq!(
            mysql_time(&mysql_async::Value::Bytes(b"nonsense".to_vec())),
            None
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
