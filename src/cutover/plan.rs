//! The cutover's steps as a state enum with one pure transition function. The driver
//! runs a phase, then asks `next` where its outcome leads.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Both clusters reachable, replication running, lag under the limit, every proxy
    /// serving the old cluster.
    Preflight,
    /// New transactions on the old cluster wait.
    Pause,
    /// Transactions in flight finish (bounded by `drain_timeout`).
    Drain,
    /// The old cluster will refuse writes; its last position is taken.
    Fence,
    /// The new writer has applied that position; sequences are carried over.
    CatchUp,
    /// The new cluster becomes active; held transactions run on it.
    Switch,
    /// Undo pause and fence: clients continue on the old cluster.
    Abort,
    Switched,
    Aborted,
    /// Preflight passed and nothing else was done (`--dry-run`).
    DryRun,
    /// The switch reached only some proxies: an operator must look.
    Failed,
}

pub const ALL: [Phase; 11] = [
    Phase::Preflight,
    Phase::Pause,
    Phase::Drain,
    Phase::Fence,
    Phase::CatchUp,
    Phase::Switch,
    Phase::Abort,
    Phase::Switched,
    Phase::Aborted,
    Phase::DryRun,
    Phase::Failed,
];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Pause => "pause",
            Phase::Drain => "drain",
            Phase::Fence => "fence",
            Phase::CatchUp => "catch_up",
            Phase::Switch => "switch",
            Phase::Abort => "abort",
            Phase::Switched => "switched",
            Phase::Aborted => "aborted",
            Phase::DryRun => "dry_run",
            Phase::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Switched | Phase::Aborted | Phase::DryRun | Phase::Failed
        )
    }

    /// Where a phase leads once it succeeded (`ok`) or failed. Failures before the switch
    /// abort (preflight has nothing to undo); the switch itself cannot be undone.
    pub fn next(self, ok: bool, dry_run: bool) -> Phase {
        use Phase::*;
        match (self, ok) {
            (Preflight, true) if dry_run => DryRun,
            (Preflight, true) => Pause,
            (Preflight, false) => Aborted,
            (Pause, true) => Drain,
            (Drain, true) => Fence,
            (Fence, true) => CatchUp,
            (CatchUp, true) => Switch,
            (Pause | Drain | Fence | CatchUp, false) => Abort,
            (Switch, true) => Switched,
            (Switch, false) => Failed,
            (Abort, _) => Aborted,
            (done, _) => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;
    use super::*;

    #[test]
    fn transitions() {
        let table = [
            // (phase, ok, dry_run, next)
            (Preflight, true, false, Pause),
            (Preflight, true, true, DryRun),
            (Preflight, false, false, Aborted),
            (Pause, true, false, Drain),
            (Pause, false, false, Abort),
            (Drain, true, false, Fence),
            (Drain, false, false, Abort),
            (Fence, true, false, CatchUp),
            (Fence, false, false, Abort),
            (CatchUp, true, false, Switch),
            (CatchUp, false, false, Abort),
            (Switch, true, false, Switched),
            (Switch, false, false, Failed),
            (Abort, true, false, Aborted),
            (Abort, false, false, Aborted),
            (Switched, true, false, Switched),
            (Aborted, false, false, Aborted),
        ];
        for (phase, ok, dry, next) in table {
            assert_eq!(phase.next(ok, dry), next, "{phase:?} ok={ok} dry_run={dry}");
        }
    }

    #[test]
    fn every_run_ends() {
        // Whatever each step answers, a run reaches a final phase within ALL.len() steps.
        for outcomes in 0u32..(1 << 8) {
            let mut phase = Preflight;
            let mut steps = 0;
            while !phase.is_final() {
                phase = phase.next(outcomes & (1 << steps) != 0, false);
                steps += 1;
                assert!(steps <= ALL.len());
            }
        }
    }
}
