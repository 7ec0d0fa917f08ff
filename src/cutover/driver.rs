//! Runs a cutover across one or more proxies: every step goes to every proxy (pause,
//! drain, fence, switch, abort), the database steps to the first one only. The same driver
//! runs inside a proxy (`POST /v1/cutover`) and in the CLI (`switchyard cutover`, which
//! coordinates several proxies over their admin APIs).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::plan::Phase;
use crate::config::Fence;

/// One step asked of one proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepRequest {
    /// This proxy serves `from`, knows `to`, and nothing is paused; with `warm`, it opens
    /// its sessions' connections on `to`'s writer ahead of the switch (not in a dry run).
    Check {
        from: String,
        to: String,
        #[serde(default)]
        warm: bool,
    },
    Pause {
        from: String,
    },
    /// Waits for work in flight on `from`'s writer to finish.
    Drain {
        from: String,
        timeout_ms: u64,
    },
    Fence {
        from: String,
    },
    /// `to` becomes active; `epoch` is the record's (0: none written).
    Switch {
        from: String,
        to: String,
        #[serde(default)]
        epoch: u64,
    },
    /// Undoes this proxy's pause and fence.
    Abort {
        from: String,
    },
    /// Takes the cutover lock on the new writer for `holder` (kept while steps come, each
    /// renewing it for `lease_ms`), then checks both databases.
    DbPreflight {
        from: String,
        to: String,
        #[serde(default)]
        holder: Option<String>,
        #[serde(default)]
        lease_ms: u64,
    },
    /// Fences the old writer in the database when `fence` is `database` (unset: as the
    /// proxy's config says, `proxy` when it says nothing), then takes its last position.
    DbMark {
        from: String,
        #[serde(default)]
        fence: Option<Fence>,
    },
    /// Gives the cutover lock back (a preflight that took it failed further on).
    DbRelease,
    DbCatchUp {
        from: String,
        to: String,
        mark: String,
        timeout_ms: u64,
    },
    DbUnfence {
        from: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepOutcome {
    pub detail: String,
    /// Switch: transactions that waited during the pause on this proxy.
    #[serde(default)]
    pub held: u64,
    /// Switch and abort: transactions this proxy refused since the pause began (writes to
    /// the fenced cluster, sessions ended because they could not move).
    #[serde(default)]
    pub aborted: u64,
    /// DbMark: the old writer's last position.
    #[serde(default)]
    pub mark: String,
    /// DbCatchUp: the epoch of the record written (0: none).
    #[serde(default)]
    pub epoch: u64,
}

/// A proxy taking part in a cutover: in this process, or behind an admin URL.
pub trait Participant {
    /// Why a step failed on this proxy (the driver reports it with its causes).
    type Error: std::error::Error;

    fn name(&self) -> String;
    fn step(&self, request: StepRequest) -> impl Future<Output = Result<StepOutcome, Self::Error>>;
}

/// One step on one proxy, its failure as one line (with causes) for the report.
async fn step<P: Participant>(p: &P, request: StepRequest) -> Result<StepOutcome, String> {
    p.step(request).await.map_err(|e| crate::error::chain(&e))
}

/// What to do and the time each part may take.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub drain_timeout: Duration,
    pub catch_up_timeout: Duration,
    /// Bounds the pause from its start to the switch.
    pub max_pause: Duration,
    /// Who runs it, for the cutover lock (a second operator is told this name).
    pub holder: String,
    /// Where the old cluster is fenced.
    pub fence: Fence,
}

/// What one proxy did in a cutover, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    pub did: String,
}

/// One step as it went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub phase: Phase,
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub outcome: Phase,
    pub from: String,
    pub to: String,
    pub active: String,
    /// From the pause to the switch (or the abort's resume); `None` when nothing paused.
    pub pause_ms: Option<f64>,
    /// Transactions that waited during the pause, over every proxy.
    pub held: u64,
    /// Transactions refused from the pause to the switch or abort, over every proxy.
    #[serde(default)]
    pub aborted: u64,
    pub proxies: usize,
    pub steps: Vec<StepRecord>,
    pub error: Option<String>,
    /// Every member and what it did (or why it was left out).
    #[serde(default)]
    pub members: Vec<MemberReport>,
    /// The record's epoch when one was written.
    #[serde(default)]
    pub epoch: u64,
}

/// The share of `max_pause` kept for the switch after the catch-up.
const SWITCH_RESERVE: u32 = 10;

/// Runs the plan to its end; `progress` sees every step as it finishes.
pub async fn run<P: Participant>(
    proxies: &[P],
    plan: &Plan,
    mut progress: impl FnMut(&StepRecord, Phase),
) -> Report {
    let mut report = Report::start(plan, proxies.len());
    let mut did: Vec<String> = vec!["untouched".to_owned(); proxies.len()];
    let mut locked = false;
    let Some(first) = proxies.first() else {
        report.outcome = Phase::Aborted;
        report.error = Some("no proxy to cut over".into());
        return report;
    };
    let mut phase = Phase::Preflight;
    let mut paused_at: Option<Instant> = None;
    let mut mark = String::new();
    let mut db_fenced = false;
    let (from, to) = (plan.from.clone(), plan.to.clone());
    // The switch must happen before the pause watchdog ends the pause.
    let budget = plan.max_pause - plan.max_pause / SWITCH_RESERVE;
    let left = |paused_at: Option<Instant>, cap: Duration| -> u64 {
        let spent = paused_at.map_or(Duration::ZERO, |t| t.elapsed());
        cap.min(budget.saturating_sub(spent)).as_millis() as u64
    };
    while !phase.is_final() {
        let started = Instant::now();
        let result: Result<String, String> = match phase {
            Phase::Preflight => preflight(proxies, plan, &mut did, &mut locked).await,
            Phase::Pause => {
                paused_at = Some(Instant::now());
                all(proxies, StepRequest::Pause { from: from.clone() }, &mut did)
                    .await
                    .map(|_| format!("new transactions on {from} wait"))
            }
            Phase::Drain => {
                let timeout_ms = left(paused_at, plan.drain_timeout);
                all(
                    proxies,
                    StepRequest::Drain {
                        from: from.clone(),
                        timeout_ms,
                    },
                    &mut did,
                )
                .await
                .map(|outcomes| join_details(&outcomes))
            }
            Phase::Fence => {
                fence(proxies, plan, &mut did, &mut db_fenced)
                    .await
                    .map(|(marked, detail)| {
                        mark = marked;
                        detail
                    })
            }
            Phase::CatchUp => step(
                first,
                StepRequest::DbCatchUp {
                    from: from.clone(),
                    to: to.clone(),
                    mark: mark.clone(),
                    timeout_ms: left(paused_at, plan.catch_up_timeout),
                },
            )
            .await
            .map(|o| {
                report.epoch = o.epoch;
                o.detail
            }),
            Phase::Switch => switch(proxies, &to, &mut did, &mut report, paused_at).await,
            Phase::Abort => {
                locked = false;
                abort(proxies, &from, db_fenced, &mut did, &mut report, paused_at).await
            }
            done => Ok(format!("{} already", done.as_str())),
        };
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| {
            if phase != Phase::Abort {
                report.error = Some(format!("{}: {e}", phase.as_str()));
            }
            e
        });
        let record = StepRecord {
            phase,
            ok,
            ms: ms(started.elapsed()),
            detail,
        };
        phase = phase.next(ok, plan.dry_run);
        progress(&record, phase);
        report.steps.push(record);
    }
    // A preflight that took the lock and then failed (or a dry run) gives it back; a switch
    // or an abort has given it back already.
    if locked
        && matches!(phase, Phase::Aborted | Phase::DryRun)
        && let Err(e) = step(first, StepRequest::DbRelease).await
    {
        tracing::warn!(error = %e, "could not give the cutover lock back; it frees with its lease");
    }
    report.outcome = phase;
    report.members = proxies
        .iter()
        .zip(did)
        .map(|(p, did)| MemberReport {
            name: p.name(),
            did,
        })
        .collect();
    report
}

/// Fence: every proxy refuses writes on `from`; then the first one fences the old writer
/// in the database (as the plan says) and takes its last position. `db_fenced` is set once
/// the database step was asked for (an abort undoes it). `Ok` holds the position and what
/// was done.
async fn fence<P: Participant>(
    proxies: &[P],
    plan: &Plan,
    did: &mut [String],
    db_fenced: &mut bool,
) -> Result<(String, String), String> {
    let from = &plan.from;
    all(proxies, StepRequest::Fence { from: from.clone() }, did).await?;
    *db_fenced = true;
    step(
        &proxies[0],
        StepRequest::DbMark {
            from: from.clone(),
            fence: Some(plan.fence),
        },
    )
    .await
    .map(|o| (o.mark, o.detail))
}

/// Preflight: the cutover lock and the database checks on the first proxy, then every
/// proxy checks it serves `from`. `locked` says whether the lock was taken.
async fn preflight<P: Participant>(
    proxies: &[P],
    plan: &Plan,
    did: &mut [String],
    locked: &mut bool,
) -> Result<String, String> {
    let (first, from, to) = (&proxies[0], &plan.from, &plan.to);
    // The lock first: a second operator is refused before touching anything.
    let db = step(
        first,
        StepRequest::DbPreflight {
            from: from.clone(),
            to: to.clone(),
            holder: Some(plan.holder.clone()),
            lease_ms: (plan.max_pause + LEASE_MARGIN).as_millis() as u64,
        },
    )
    .await;
    match db {
        Ok(db) => {
            *locked = true;
            let check = StepRequest::Check {
                from: from.clone(),
                to: to.clone(),
                warm: !plan.dry_run,
            };
            match all(proxies, check, did).await {
                Ok(_) => Ok(db.detail),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Switch: every proxy, even when one fails (the record is written, so each one switched
/// is one less waiting to follow it).
async fn switch<P: Participant>(
    proxies: &[P],
    to: &str,
    did: &mut [String],
    report: &mut Report,
    paused_at: Option<Instant>,
) -> Result<String, String> {
    let from = report.from.clone();
    // Every proxy, even when one fails: the record is written, so each one
    // switched is one less waiting to follow it.
    let request = StepRequest::Switch {
        from: from.to_owned(),
        to: to.to_owned(),
        epoch: report.epoch,
    };
    let mut problems = Vec::new();
    for (p, did) in proxies.iter().zip(did.iter_mut()) {
        match step(p, request.clone()).await {
            Ok(o) => {
                report.held += o.held;
                report.aborted += o.aborted;
                *did = describe(&request, &o);
            }
            Err(e) => {
                *did = format!("switch FAILED: {e}; follows the record within its poll_interval");
                problems.push(format!("{}: {e}", p.name()));
            }
        }
    }
    report.pause_ms = paused_at.map(|t| ms(t.elapsed()));
    if problems.is_empty() {
        report.active = to.to_owned();
        Ok(format!(
            "{to} is active; {} held transactions released onto it",
            report.held
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// Abort: the database fence undone (when this cutover set it), then every proxy resumes,
/// even when one fails (each one resumed is one less stuck).
async fn abort<P: Participant>(
    proxies: &[P],
    from: &str,
    db_fenced: bool,
    did: &mut [String],
    report: &mut Report,
    paused_at: Option<Instant>,
) -> Result<String, String> {
    let first = &proxies[0];
    let mut problems = Vec::new();
    if db_fenced
        && let Err(e) = step(
            first,
            StepRequest::DbUnfence {
                from: from.to_owned(),
            },
        )
        .await
    {
        problems.push(format!("unfence {from}: {e}"));
    }
    // Every proxy, even when one fails: each one resumed is one less stuck.
    for (p, did) in proxies.iter().zip(did.iter_mut()) {
        match step(
            p,
            StepRequest::Abort {
                from: from.to_owned(),
            },
        )
        .await
        {
            Ok(o) => {
                report.aborted += o.aborted;
                *did = format!("resumed on {from}: {}", o.detail);
            }
            Err(e) => {
                *did = format!("abort FAILED: {e}");
                problems.push(format!("{}: {e}", p.name()));
            }
        }
    }
    report.pause_ms = paused_at.map(|t| ms(t.elapsed()));
    if problems.is_empty() {
        Ok(format!("{from} resumed as before"))
    } else {
        Err(problems.join("; "))
    }
}

/// How much longer than `max_pause` the cutover lock outlives the last step it heard of.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The same step on every proxy, in order; the first failure names its proxy. `did` gets
/// what each proxy did.
async fn all<P: Participant>(
    proxies: &[P],
    request: StepRequest,
    did: &mut [String],
) -> Result<Vec<StepOutcome>, String> {
    let mut outcomes = Vec::with_capacity(proxies.len());
    for (p, did) in proxies.iter().zip(did.iter_mut()) {
        match step(p, request.clone()).await {
            Ok(o) => {
                *did = describe(&request, &o);
                outcomes.push(o);
            }
            Err(e) => {
                *did = format!("{} FAILED: {e}", step_name(&request));
                if proxies.len() == 1 {
                    return Err(e);
                }
                return Err(format!("{}: {e}", p.name()));
            }
        }
    }
    Ok(outcomes)
}

fn step_name(request: &StepRequest) -> &'static str {
    match request {
        StepRequest::Check { .. } => "check",
        StepRequest::Pause { .. } => "pause",
        StepRequest::Drain { .. } => "drain",
        StepRequest::Fence { .. } => "fence",
        StepRequest::Switch { .. } => "switch",
        StepRequest::Abort { .. } => "abort",
        _ => "database step",
    }
}

impl Report {
    /// The report of a cutover that has not started: `from` still active.
    fn start(plan: &Plan, proxies: usize) -> Report {
        Report {
            outcome: Phase::Preflight,
            from: plan.from.clone(),
            to: plan.to.clone(),
            active: plan.from.clone(),
            pause_ms: None,
            held: 0,
            aborted: 0,
            proxies,
            steps: Vec::new(),
            error: None,
            members: Vec::new(),
            epoch: 0,
        }
    }
}

/// What a proxy did at `request`, in the words of the report.
fn describe(request: &StepRequest, o: &StepOutcome) -> String {
    match request {
        StepRequest::Check { .. } => format!("checked ({})", o.detail),
        StepRequest::Pause { from } => format!("paused {from}"),
        StepRequest::Drain { .. } => format!("paused, drained ({})", o.detail),
        StepRequest::Fence { from } => format!("paused, fenced {from}"),
        StepRequest::Switch { to, .. } => {
            format!("switched to {to}: {} held, {} aborted", o.held, o.aborted)
        }
        _ => o.detail.clone(),
    }
}

fn join_details(outcomes: &[StepOutcome]) -> String {
    let mut details: Vec<&str> = outcomes.iter().map(|o| o.detail.as_str()).collect();
    details.dedup();
    details.join("; ")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A participant that records the steps it gets and fails the one named.
    struct Fake {
        fail: Option<&'static str>,
        seen: RefCell<Vec<String>>,
    }

    impl Participant for Fake {
        type Error = std::io::Error;

        fn name(&self) -> String {
            "fake".into()
        }
        async fn step(&self, request: StepRequest) -> Result<StepOutcome, std::io::Error> {
            let name = serde_json::to_value(&request).unwrap()["step"]
                .as_str()
                .unwrap()
                .to_owned();
            self.seen.borrow_mut().push(name.clone());
            if self.fail == Some(name.as_str()) {
                return Err(std::io::Error::other(format!("{name} failed")));
            }
            Ok(StepOutcome {
                held: 2,
                mark: "0/1".into(),
                ..StepOutcome::default()
            })
        }
    }

    fn plan(dry_run: bool) -> Plan {
        Plan {
            from: "old".into(),
            to: "new".into(),
            dry_run,
            drain_timeout: Duration::from_secs(1),
            catch_up_timeout: Duration::from_secs(1),
            max_pause: Duration::from_secs(2),
            holder: "test".into(),
            fence: Fence::Proxy,
        }
    }

    fn fake(fail: Option<&'static str>) -> Fake {
        Fake {
            fail,
            seen: RefCell::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn a_cutover_runs_every_step_in_order() {
        let proxies = [fake(None), fake(None)];
        let report = run(&proxies, &plan(false), |_, _| {}).await;
        assert_eq!(report.outcome, Phase::Switched);
        assert_eq!(report.held, 4);
        assert_eq!(report.active, "new");
        assert_eq!(
            *proxies[0].seen.borrow(),
            [
                "db_preflight",
                "check",
                "pause",
                "drain",
                "fence",
                "db_mark",
                "db_catch_up",
                "switch"
            ]
        );
        assert_eq!(
            *proxies[1].seen.borrow(),
            ["check", "pause", "drain", "fence", "switch"]
        );
    }

    #[tokio::test]
    async fn a_failed_catch_up_aborts_everywhere_and_unfences() {
        let proxies = [fake(Some("db_catch_up")), fake(None)];
        let report = run(&proxies, &plan(false), |_, _| {}).await;
        assert_eq!(report.outcome, Phase::Aborted);
        assert_eq!(report.active, "old");
        assert!(report.error.unwrap().contains("catch_up"));
        let first = proxies[0].seen.borrow();
        assert_eq!(first[first.len() - 2..], ["db_unfence", "abort"]);
        assert_eq!(proxies[1].seen.borrow().last().unwrap(), "abort");
    }

    #[tokio::test]
    async fn a_switch_that_fails_on_one_proxy_still_reaches_the_others_and_says_which() {
        let proxies = [fake(None), fake(Some("switch")), fake(None)];
        let report = run(&proxies, &plan(false), |_, _| {}).await;
        assert_eq!(report.outcome, Phase::Failed);
        assert_eq!(proxies[2].seen.borrow().last().unwrap(), "switch");
        let did: Vec<&str> = report.members.iter().map(|m| m.did.as_str()).collect();
        assert!(did[0].starts_with("switched to new"), "{did:?}");
        assert!(did[1].starts_with("switch FAILED"), "{did:?}");
        assert!(did[2].starts_with("switched to new"), "{did:?}");
    }

    #[tokio::test]
    async fn a_lock_taken_by_a_preflight_that_fails_later_is_given_back() {
        let proxies = [fake(None), fake(Some("check"))];
        let report = run(&proxies, &plan(false), |_, _| {}).await;
        assert_eq!(report.outcome, Phase::Aborted);
        assert_eq!(
            *proxies[0].seen.borrow(),
            ["db_preflight", "check", "db_release"]
        );
        assert_eq!(report.members[1].did, "check FAILED: check failed");
    }

    #[tokio::test]
    async fn a_failed_preflight_touches_nothing() {
        let proxies = [fake(Some("db_preflight"))];
        let report = run(&proxies, &plan(false), |_, _| {}).await;
        assert_eq!(report.outcome, Phase::Aborted);
        assert_eq!(*proxies[0].seen.borrow(), ["db_preflight"]);
        assert_eq!(report.pause_ms, None);
    }

    #[tokio::test]
    async fn a_dry_run_stops_after_preflight() {
        let proxies = [fake(None)];
        let report = run(&proxies, &plan(true), |_, _| {}).await;
        assert_eq!(report.outcome, Phase::DryRun);
        assert_eq!(
            *proxies[0].seen.borrow(),
            ["db_preflight", "check", "db_release"]
        );
    }
}
