//! Replication lag: what a health check learns of a replica's replication, the lag that
//! makes (remembering, per instance, since when a replica has lost its source), and the lag
//! ceiling's verdict on a healthy reader. Pure; the queries live in `probe`.

use std::time::{Duration, Instant};

use super::{Role, Status};

/// What an instance's own replication view says, as of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Nothing to catch up with: a writer, a replica that has replayed all it received, or
    /// a read-only server that replicates from nowhere.
    Current,
    /// Behind its source by this much.
    Behind(Duration),
    /// Replication is stopped (MySQL: the SQL thread does not run; PostgreSQL: no lag can be
    /// computed): the replica's data gets older without bound.
    Stopped,
    /// MySQL: it applies, but has applied everything it received and is not connected to its
    /// source (`Seconds_Behind_Master` is NULL while the SQL thread runs). Usual while the
    /// source restarts or fails over.
    SourceLost,
}

impl Replication {
    /// `SHOW SLAVE STATUS` / `SHOW REPLICA STATUS`: `row` is `None` when it returned no row
    /// (not a replica), else whether the SQL thread runs and the seconds behind the source
    /// (NULL: unknown).
    pub fn from_mysql(row: Option<(bool, Option<u64>)>) -> Replication {
        match row {
            None => Replication::Current,
            Some((false, _)) => Replication::Stopped,
            Some((true, None)) => Replication::SourceLost,
            Some((true, Some(0))) => Replication::Current,
            Some((true, Some(seconds))) => Replication::Behind(Duration::from_secs(seconds)),
        }
    }

    /// PostgreSQL's lag in seconds as the health check's query computes it (0 when the
    /// replica has replayed all it received); NULL means it cannot be computed.
    pub fn from_postgres(seconds: Option<f64>) -> Replication {
        match seconds {
            None => Replication::Stopped,
            Some(s) if s.is_nan() => Replication::Stopped,
            Some(s) if s <= 0.0 => Replication::Current,
            Some(s) => Replication::Behind(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)),
        }
    }
}

/// Per instance, what turns successive [`Replication`] views into a lag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagMemory {
    /// The last lag measured while connected to the source.
    last: Duration,
    /// When the replica was first seen without its source, in the current run of such views.
    lost_since: Option<Instant>,
}

impl LagMemory {
    /// The lag a check that saw `view` at `now` measures; `None` when replication is
    /// stopped. A replica that lost its source is taken to fall behind from the moment that
    /// was first seen (from the lag it had then): fine through a short restart or failover
    /// of the source, over the ceiling after a long one.
    pub fn next(&mut self, view: Replication, now: Instant) -> Option<Duration> {
        match view {
            Replication::Current | Replication::Behind(_) => {
                let lag = match view {
                    Replication::Behind(lag) => lag,
                    _ => Duration::ZERO,
                };
                *self = LagMemory {
                    last: lag,
                    lost_since: None,
                };
                Some(lag)
            }
            Replication::Stopped => {
                self.lost_since = None;
                None
            }
            Replication::SourceLost => {
                let since = *self.lost_since.get_or_insert(now);
                Some(self.last + now.saturating_duration_since(since))
            }
        }
    }
}

/// The status to publish for an instance whose health is `status`: a healthy reader whose
/// lag is above `max_lag`, or cannot be measured (`None`), is [`Status::Lagging`].
pub fn with_lag(status: Status, role: Role, lag: Option<Duration>, max_lag: Duration) -> Status {
    let too_far = lag.is_none_or(|lag| lag > max_lag);
    if status == Status::Healthy && role == Role::Reader && too_far {
        Status::Lagging
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn mysql_replica_status_rows() {
        let table = [
            (None, Replication::Current),
            (Some((false, Some(3))), Replication::Stopped),
            (Some((false, None)), Replication::Stopped),
            (Some((true, None)), Replication::SourceLost),
            (Some((true, Some(0))), Replication::Current),
            (Some((true, Some(7))), Replication::Behind(S(7))),
        ];
        for (row, view) in table {
            assert_eq!(Replication::from_mysql(row), view, "{row:?}");
        }
    }

    #[test]
    fn postgres_lag_values() {
        assert_eq!(Replication::from_postgres(None), Replication::Stopped);
        assert_eq!(
            Replication::from_postgres(Some(f64::NAN)),
            Replication::Stopped
        );
        assert_eq!(Replication::from_postgres(Some(0.0)), Replication::Current);
        // A replica's clock slightly ahead of the primary's.
        assert_eq!(Replication::from_postgres(Some(-0.2)), Replication::Current);
        assert_eq!(
            Replication::from_postgres(Some(1.5)),
            Replication::Behind(Duration::from_millis(1500))
        );
        assert_eq!(
            Replication::from_postgres(Some(f64::INFINITY)),
            Replication::Behind(Duration::MAX)
        );
    }

    #[test]
    fn a_replica_without_its_source_falls_behind_from_when_that_was_seen() {
        let t0 = Instant::now();
        let mut m = LagMemory::default();
        assert_eq!(m.next(Replication::Behind(S(2)), t0), Some(S(2)));
        assert_eq!(m.next(Replication::SourceLost, t0 + S(1)), Some(S(2)));
        assert_eq!(m.next(Replication::SourceLost, t0 + S(4)), Some(S(5)));
        // Back in touch: the measured lag again, and a later loss counts from then.
        assert_eq!(m.next(Replication::Current, t0 + S(5)), Some(S(0)));
        assert_eq!(m.next(Replication::SourceLost, t0 + S(6)), Some(S(0)));
        assert_eq!(m.next(Replication::SourceLost, t0 + S(9)), Some(S(3)));
        assert_eq!(m.next(Replication::Stopped, t0 + S(10)), None);
        assert_eq!(m.next(Replication::SourceLost, t0 + S(11)), Some(S(0)));
    }

    #[test]
    fn the_ceiling_takes_lagging_healthy_readers_out() {
        let max = S(30);
        let table = [
            (Status::Healthy, Role::Reader, Some(S(30)), Status::Healthy),
            (Status::Healthy, Role::Reader, Some(S(31)), Status::Lagging),
            (Status::Healthy, Role::Reader, None, Status::Lagging),
            (Status::Healthy, Role::Writer, None, Status::Healthy),
            (Status::Unhealthy, Role::Reader, None, Status::Unhealthy),
            (Status::Joining, Role::Reader, Some(S(99)), Status::Joining),
            (Status::Retired, Role::Reader, Some(S(99)), Status::Retired),
        ];
        for (status, role, lag, want) in table {
            assert_eq!(
                with_lag(status, role, lag, max),
                want,
                "{status:?} {role:?} {lag:?}"
            );
        }
    }
}
