//! Health of one instance as a state machine: each check's outcome moves it, with
//! consecutive-failure and consecutive-success thresholds before it flips. Pure; the checks
//! themselves live in `probe`, the task that runs them in `monitor`.

/// What the data path sees of an instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Found by discovery, not yet passed its checks: gets no queries.
    Joining = 0,
    Healthy = 1,
    /// Failed its checks (or has the wrong role): gets no new queries.
    Unhealthy = 2,
    /// Removed from the topology; sessions still on it leave it.
    Retired = 3,
    /// A reader that passes its checks but lags more than `max_lag` (or whose replication
    /// is stopped): gets no new reads; sessions on it leave it at their next transaction
    /// boundary.
    Lagging = 4,
}

impl Status {
    pub(super) fn from_u8(v: u8) -> Status {
        match v {
            0 => Status::Joining,
            1 => Status::Healthy,
            2 => Status::Unhealthy,
            4 => Status::Lagging,
            _ => Status::Retired,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::Retired => "retired",
            Status::Lagging => "lagging",
        }
    }

    /// Every status, for metrics by state.
    pub const ALL: [Status; 5] = [
        Status::Joining,
        Status::Healthy,
        Status::Lagging,
        Status::Unhealthy,
        Status::Retired,
    ];

    /// Whether new queries may go to the instance.
    pub fn is_usable(self) -> bool {
        self == Status::Healthy
    }
}

/// The outcome of one health check, compared with the role discovery gave the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Pass,
    Fail,
    /// Answered, but in the other role (a promoted replica, a demoted writer).
    WrongRole,
}

/// How many consecutive outcomes flip the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub fail_after: u32,
    pub recover_after: u32,
}

/// One instance's health, with the run of outcomes that may flip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// New: `passed` checks passed in a row so far.
    Joining { passed: u32 },
    /// In use: `failed` checks failed in a row so far.
    Healthy { failed: u32 },
    /// Out of use: `passed` checks passed in a row so far.
    Unhealthy { passed: u32 },
}

impl HealthState {
    /// An instance that starts in use (listed in the config) or not (found by discovery).
    pub fn initial(status: Status) -> HealthState {
        match status {
            Status::Healthy => HealthState::Healthy { failed: 0 },
            Status::Unhealthy | Status::Retired => HealthState::Unhealthy { passed: 0 },
            // Lagging is the lag ceiling's verdict on a healthy instance, not a health state.
            Status::Lagging => HealthState::Healthy { failed: 0 },
            Status::Joining => HealthState::Joining { passed: 0 },
        }
    }

    pub fn status(self) -> Status {
        match self {
            HealthState::Joining { .. } => Status::Joining,
            HealthState::Healthy { .. } => Status::Healthy,
            HealthState::Unhealthy { .. } => Status::Unhealthy,
        }
    }

    /// The state after one more check. A wrong role takes the instance out at once: it is
    /// certain, unlike a timeout.
    pub fn next(self, probe: Probe, t: Thresholds) -> HealthState {
        use HealthState::*;
        match (self, probe) {
            (_, Probe::WrongRole) => Unhealthy { passed: 0 },
            (Joining { passed } | Unhealthy { passed }, Probe::Pass) => {
                if passed + 1 >= t.recover_after {
                    Healthy { failed: 0 }
                } else if matches!(self, Joining { .. }) {
                    Joining { passed: passed + 1 }
                } else {
                    Unhealthy { passed: passed + 1 }
                }
            }
            (Joining { .. }, Probe::Fail) => Joining { passed: 0 },
            (Unhealthy { .. }, Probe::Fail) => Unhealthy { passed: 0 },
            (Healthy { .. }, Probe::Pass) => Healthy { failed: 0 },
            (Healthy { failed }, Probe::Fail) => {
                if failed + 1 >= t.fail_after {
                    Unhealthy { passed: 0 }
                } else {
                    Healthy { failed: failed + 1 }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HealthState::*;
    use super::*;

    const T: Thresholds = Thresholds {
        fail_after: 3,
        recover_after: 2,
    };

    #[test]
    fn transitions() {
        let table = [
            (Joining { passed: 0 }, Probe::Pass, Joining { passed: 1 }),
            (Joining { passed: 1 }, Probe::Pass, Healthy { failed: 0 }),
            (Joining { passed: 1 }, Probe::Fail, Joining { passed: 0 }),
            (
                Joining { passed: 1 },
                Probe::WrongRole,
                Unhealthy { passed: 0 },
            ),
            (Healthy { failed: 0 }, Probe::Pass, Healthy { failed: 0 }),
            (Healthy { failed: 0 }, Probe::Fail, Healthy { failed: 1 }),
            (Healthy { failed: 1 }, Probe::Fail, Healthy { failed: 2 }),
            (Healthy { failed: 2 }, Probe::Fail, Unhealthy { passed: 0 }),
            (Healthy { failed: 2 }, Probe::Pass, Healthy { failed: 0 }),
            (
                Healthy { failed: 0 },
                Probe::WrongRole,
                Unhealthy { passed: 0 },
            ),
            (
                Unhealthy { passed: 0 },
                Probe::Pass,
                Unhealthy { passed: 1 },
            ),
            (Unhealthy { passed: 1 }, Probe::Pass, Healthy { failed: 0 }),
            (
                Unhealthy { passed: 1 },
                Probe::Fail,
                Unhealthy { passed: 0 },
            ),
            (
                Unhealthy { passed: 1 },
                Probe::WrongRole,
                Unhealthy { passed: 0 },
            ),
        ];
        for (from, probe, to) in table {
            assert_eq!(from.next(probe, T), to, "{from:?} + {probe:?}");
        }
    }

    #[test]
    fn thresholds_of_one_flip_at_once() {
        let t = Thresholds {
            fail_after: 1,
            recover_after: 1,
        };
        assert_eq!(
            Healthy { failed: 0 }.next(Probe::Fail, t),
            Unhealthy { passed: 0 }
        );
        assert_eq!(
            Unhealthy { passed: 0 }.next(Probe::Pass, t),
            Healthy { failed: 0 }
        );
        assert_eq!(
            Joining { passed: 0 }.next(Probe::Pass, t),
            Healthy { failed: 0 }
        );
    }

    #[test]
    fn status_round_trips_through_its_byte() {
        for s in Status::ALL {
            assert_eq!(Status::from_u8(s as u8), s);
        }
        assert!(Status::Healthy.is_usable());
        assert!(!Status::Joining.is_usable());
        assert!(!Status::Lagging.is_usable());
    }
}
