//! The end report: what the application did, whether every acknowledged write is on the new
//! writer, what the cutover cost, where the statements went before and after it, and how few
//! server connections switchyard's pools carried the sessions on.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Instance;
use super::cutover::{Outcome, Report as CutoverReport};
use super::watch::{PerInstance, PoolsByInstance};

/// The report lists this many distinct error texts, the most frequent first.
const MAX_ERROR_TEXTS: usize = 10;

/// Everything the report says.
#[derive(Debug)]
pub struct Summary {
    pub server_version: String,
    pub sessions: usize,
    /// How long the load ran.
    pub ran: Duration,
    pub statements: u64,
    pub p99: Option<Duration>,
    pub errors: u64,
    pub error_texts: BTreeMap<String, u64>,
    pub write_transactions: u64,
    pub read_your_writes_checks: u64,
    pub read_your_writes_misses: u64,
    pub writes: Verification,
    pub cutover: Outcome,
    /// When the cutover was requested, since the load started.
    pub cutover_at: Option<Duration>,
    pub slowest_during_cutover: Option<Duration>,
    pub instances: Vec<Instance>,
    /// Statements per instance before the cutover was requested, and after it ended.
    pub before: PerInstance,
    pub after: PerInstance,
    /// `server.pool_mode` as switchyard ran with it (`transaction`, `session`).
    pub pool_mode: String,
    /// Client connections switchyard accepted (the application's sessions, and the ones it
    /// opened again after an error); `None` when `/metrics` did not say.
    pub client_connections: Option<u64>,
    /// Backend connections per instance at the end, once the application disconnected.
    pub pools: PoolsByInstance,
    pub metrics_url: String,
}

/// The acknowledged writes, looked for on the new writer.
#[derive(Debug, Default)]
pub struct Verification {
    pub on: String,
    pub acknowledged: usize,
    pub found: usize,
    /// A few acknowledged ids the new writer does not have.
    pub missing: Vec<i64>,
    /// Sessions whose counter on the new writer is below its acknowledged transactions:
    /// (session, acknowledged, found).
    pub short_counters: Vec<(i32, i64, i64)>,
    pub counters_checked: usize,
    /// The check could not run (the new writer did not answer, …).
    pub error: Option<String>,
}

impl Verification {
    fn lost(&self) -> usize {
        self.acknowledged - self.found.min(self.acknowledged)
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration as milliseconds with one decimal: `2.9 ms`.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Summary {
    /// Whether the demo kept its promise: switched, no errors, nothing lost or unseen.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.statements == 0 {
            problems.push("the application ran no statement".to_owned());
        }
        if self.errors > 0 {
            problems.push(format!("{} error(s)", thousands(self.errors)));
        }
        if let Some(e) = &self.writes.error {
            problems.push(format!("the writes could not be checked: {e}"));
        } else if self.writes.lost() > 0 {
            problems.push(format!(
                "{} acknowledged write(s) missing on {}",
                thousands(self.writes.lost() as u64),
                self.writes.on
            ));
        }
        if !self.writes.short_counters.is_empty() {
            problems.push(format!(
                "{} counter(s) on {} behind their acknowledged transactions",
                self.writes.short_counters.len(),
                self.writes.on
            ));
        }
        if self.read_your_writes_misses > 0 {
            problems.push(format!(
                "{} read(s) missed the session's own write",
                thousands(self.read_your_writes_misses)
            ));
        }
        match &self.cutover {
            Outcome::Switched(_) => {}
            Outcome::Passed(_) => problems.push("only the dry run ran".to_owned()),
            Outcome::Aborted(r) if r.dry_run => problems.push(format!(
                "the cutover's dry run refused: {}",
                r.error.as_deref().unwrap_or("no reason given")
            )),
            Outcome::Aborted(r) => problems.push(format!(
                "the cutover aborted: {}",
                r.error.as_deref().unwrap_or("no reason given")
            )),
            Outcome::Unavailable(why) | Outcome::Failed(why) => {
                problems.push(format!("no cutover: {why}"))
            }
        }
        problems
    }

    pub fn render(&self) -> String {
        let mut out = format!("\nReport ({})\n", self.server_version);
        let mut row = |label: &str, text: String| out.push_str(&format!("  {label:<17}{text}\n"));
        let secs = self.ran.as_secs_f64().max(0.001);
        row(
            "application",
            format!(
                "{} sessions for {:.1} s: {} statements ({}/s), p99 {}",
                self.sessions,
                secs,
                thousands(self.statements),
                thousands((self.statements as f64 / secs).round() as u64),
                self.p99.map(millis).unwrap_or_else(|| "-".into()),
            ),
        );
        row("pooling", self.pooling_line());
        row("errors", thousands(self.errors));
        let mut texts: Vec<_> = self.error_texts.iter().collect();
        texts.sort_by(|a, b| b.1.cmp(a.1));
        for (text, count) in texts.iter().take(MAX_ERROR_TEXTS) {
            row("", format!("{count} x {text}"));
        }
        if texts.len() > MAX_ERROR_TEXTS {
            row(
                "",
                format!("… and {} other texts", texts.len() - MAX_ERROR_TEXTS),
            );
        }
        row("writes", self.writes_line());
        if self.writes.counters_checked > 0 {
            row("counters", self.counters_line());
        }
        row(
            "read-your-writes",
            format!(
                "{} checks (insert, then select it at once), {} missed",
                thousands(self.read_your_writes_checks),
                thousands(self.read_your_writes_misses)
            ),
        );
        for (i, line) in self.cutover_lines().into_iter().enumerate() {
            row(if i == 0 { "cutover" } else { "" }, line);
        }
        out.push_str(&self.placement_table());
        out.push_str(&self.connections_table());
        out.push_str(&format!(
            "  {:<17}{} (Prometheus text, as served while the demo ran)\n",
            "metrics", self.metrics_url
        ));
        let problems = self.problems();
        if problems.is_empty() {
            out.push_str(
                "\nPASS: the application moved from old to new under load with no error and no lost write.\n",
            );
        } else {
            out.push_str(&format!("\nFAIL: {}.\n", problems.join("; ")));
        }
        out
    }

    fn writes_line(&self) -> String {
        let w = &self.writes;
        match &w.error {
            Some(e) => format!("{} acknowledged; could not check them: {e}", w.acknowledged),
            None if w.lost() == 0 => format!(
                "{} acknowledged ({} in transactions), all found on {}",
                thousands(w.acknowledged as u64),
                thousands(self.write_transactions),
                w.on
            ),
            None => format!(
                "{} acknowledged, {} LOST (not on {}), e.g. ids {:?}",
                thousands(w.acknowledged as u64),
                thousands(w.lost() as u64),
                w.on,
                w.missing
            ),
        }
    }

    fn counters_line(&self) -> String {
        let w = &self.writes;
        if w.short_counters.is_empty() {
            return format!(
                "each writing session's counter on {} counts all its acknowledged transactions",
                w.on
            );
        }
        let short: Vec<String> = w
            .short_counters
            .iter()
            .map(|(session, want, found)| format!("session {session}: {found} of {want}"))
            .collect();
        format!("BEHIND on {}: {}", w.on, short.join(", "))
    }

    fn cutover_lines(&self) -> Vec<String> {
        let at = self
            .cutover_at
            .map(|at| format!(" at {:.1} s", at.as_secs_f64()))
            .unwrap_or_default();
        let mut lines = match &self.cutover {
            Outcome::Switched(r) => vec![format!(
                "switched {} -> {}{at}: new transactions held {}{}",
                r.from,
                r.to,
                r.pause_ms
                    .map(|ms| format!("{ms:.1} ms"))
                    .unwrap_or_else(|| "? ms".into()),
                r.held
                    .map(|n| format!(" ({n} held, none failed)"))
                    .unwrap_or_default()
            )],
            Outcome::Aborted(r) => vec![format!(
                "{}{at}: {}",
                if r.dry_run {
                    "the dry run refused"
                } else {
                    "ABORTED, the old cluster stays active"
                },
                r.error.as_deref().unwrap_or("no reason given")
            )],
            Outcome::Passed(_) => vec!["only the dry run ran".into()],
            Outcome::Unavailable(why) | Outcome::Failed(why) => vec![format!("did not run: {why}")],
        };
        let ran = matches!(&self.cutover, Outcome::Switched(_))
            || matches!(&self.cutover, Outcome::Aborted(r) if !r.dry_run);
        if let Outcome::Switched(r) | Outcome::Aborted(r) = &self.cutover {
            lines.extend(steps(r));
        }
        if let Some(slowest) = self.slowest_during_cutover.filter(|_| ran) {
            lines.push(format!(
                "slowest statement while it ran: {} (p99 overall {})",
                millis(slowest),
                self.p99.map(millis).unwrap_or_else(|| "-".into())
            ));
        }
        lines
    }

    fn pooling_line(&self) -> String {
        let sessions = self.client_connections.unwrap_or(self.sessions as u64);
        let open: f64 = self.pools.values().map(|p| p.open).sum();
        let opened: f64 = self.pools.values().map(|p| p.opened).sum();
        format!(
            "{} mode: {} client sessions over {} server connections open at the end \
             ({} opened in all)",
            self.pool_mode,
            thousands(sessions),
            thousands(open as u64),
            thousands(opened as u64)
        )
    }

    /// Per instance: the backend connections open at the end and the logins it took.
    fn connections_table(&self) -> String {
        let mut out = format!(
            "  {:<17}{:<13}{:<17}{:>15}{:>15}\n",
            "connections", "instance", "address", "open at end", "opened"
        );
        for instance in &self.instances {
            let pooled = self.pools.get(&instance.addr).copied().unwrap_or_default();
            out.push_str(&format!(
                "  {:<17}{:<13}{:<17}{:>15}{:>15}\n",
                "",
                instance.name,
                instance.addr,
                thousands(pooled.open as u64),
                thousands(pooled.opened as u64)
            ));
        }
        out
    }

    fn placement_table(&self) -> String {
        let mut out = format!(
            "  {:<17}{:<13}{:<17}{:>15}{:>15}\n",
            "statements", "instance", "address", "before cutover", "after"
        );
        for instance in &self.instances {
            let count =
                |m: &PerInstance| thousands(m.get(&instance.addr).copied().unwrap_or(0.0) as u64);
            out.push_str(&format!(
                "  {:<17}{:<13}{:<17}{:>15}{:>15}\n",
                "",
                instance.name,
                instance.addr,
                count(&self.before),
                count(&self.after)
            ));
        }
        out
    }
}

fn steps(report: &CutoverReport) -> Vec<String> {
    report
        .steps
        .iter()
        .map(|s| {
            let detail = if s.detail.is_empty() {
                String::new()
            } else {
                format!("  {}", s.detail)
            };
            format!("  {:<10}{:>9.1} ms{detail}", s.phase, s.ms)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::cutover::Step;
    use crate::demo::watch::Pooled;

    fn summary() -> Summary {
        let instances = vec![
            Instance {
                name: "old-writer".into(),
                addr: "127.0.0.1:5001".into(),
            },
            Instance {
                name: "new-writer".into(),
                addr: "127.0.0.1:5003".into(),
            },
        ];
        Summary {
            server_version: "PostgreSQL 15".into(),
            sessions: 16,
            ran: Duration::from_secs(30),
            statements: 90_000,
            p99: Some(Duration::from_micros(2900)),
            errors: 0,
            error_texts: BTreeMap::new(),
            write_transactions: 3000,
            read_your_writes_checks: 3000,
            read_your_writes_misses: 0,
            writes: Verification {
                on: "new-writer 127.0.0.1:5003".into(),
                acknowledged: 6000,
                found: 6000,
                counters_checked: 6,
                ..Verification::default()
            },
            cutover: Outcome::Switched(CutoverReport {
                outcome: "switched".into(),
                from: "old".into(),
                to: "new".into(),
                pause_ms: Some(41.2),
                held: Some(12),
                steps: vec![Step {
                    phase: "catch_up".into(),
                    ms: 20.0,
                    detail: "lsn 0/3000060".into(),
                }],
                error: None,
                dry_run: false,
            }),
            cutover_at: Some(Duration::from_secs(15)),
            slowest_during_cutover: Some(Duration::from_millis(45)),
            instances,
            before: [("127.0.0.1:5001".to_owned(), 40_000.0)].into(),
            after: [("127.0.0.1:5003".to_owned(), 38_000.0)].into(),
            pool_mode: "transaction".into(),
            client_connections: Some(16),
            pools: [
                (
                    "127.0.0.1:5001".to_owned(),
                    Pooled {
                        open: 3.0,
                        opened: 5.0,
                    },
                ),
                (
                    "127.0.0.1:5003".to_owned(),
                    Pooled {
                        open: 6.0,
                        opened: 6.0,
                    },
                ),
            ]
            .into(),
            metrics_url: "http://127.0.0.1:9/metrics".into(),
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let s = summary();
        assert!(s.passed());
        let text = s.render();
        assert!(text.contains("90,000 statements (3,000/s)"), "{text}");
        assert!(text.contains("switched old -> new at 15.0 s"), "{text}");
        assert!(text.contains("41.2 ms (12 held"), "{text}");
        assert!(text.contains("all found on new-writer"), "{text}");
        assert!(text.contains("catch_up"), "{text}");
        assert!(text.contains("40,000"), "{text}");
        assert!(
            text.contains(
                "transaction mode: 16 client sessions over 9 server connections open at the end \
                 (11 opened in all)"
            ),
            "{text}"
        );
        let new_writer = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("connections"))
            .find(|l| l.contains("new-writer"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        assert_eq!(
            new_writer,
            Some(vec!["new-writer", "127.0.0.1:5003", "6", "6"]),
            "{text}"
        );
        assert!(text.contains("PASS"), "{text}");
    }

    #[test]
    fn errors_lost_writes_and_a_missing_cutover_fail() {
        let mut s = summary();
        s.errors = 2;
        s.error_texts.insert("COMMIT: connection closed".into(), 2);
        s.writes.found = 5999;
        s.writes.missing = vec![42];
        s.cutover = Outcome::Unavailable("POST /v1/cutover answered 404".into());
        assert!(!s.passed());
        let text = s.render();
        assert!(text.contains("2 x COMMIT: connection closed"), "{text}");
        assert!(text.contains("1 LOST"), "{text}");
        assert!(
            text.contains("FAIL: 2 error(s); 1 acknowledged write(s) missing"),
            "{text}"
        );
        assert!(
            text.contains("no cutover: POST /v1/cutover answered 404"),
            "{text}"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(millis(Duration::from_micros(2960)), "3.0 ms");
    }
}
