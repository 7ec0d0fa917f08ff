//! The cutover, requested exactly as an operator would: `POST /v1/cutover` on the admin API
//! with the bearer token, a dry run (preflight only) first. Also the phase shown in the
//! progress lines, from `GET /v1/cutover`.

use serde_json::{Value, json};

use super::proxy::blocking;
use crate::operator::{Admin, error_message};

/// One phase of a cutover as its report lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub phase: String,
    pub ms: f64,
    pub detail: String,
}

/// What a cutover request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The dry run passed: the cutover may go ahead.
    Passed(Report),
    /// The proxy switched every client to the new cluster.
    Switched(Report),
    /// The proxy aborted (the old cluster is active again), or the dry run refused.
    Aborted(Report),
    /// This build of switchyard has no cutover (the endpoint answered 404).
    Unavailable(String),
    /// The request itself failed: no answer, a bad request, an unreadable answer.
    Failed(String),
}

/// The body of the proxy's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub outcome: String,
    pub from: String,
    pub to: String,
    /// How long new transactions were held.
    pub pause_ms: Option<f64>,
    /// How many transactions were held by the pause.
    pub held: Option<u64>,
    pub steps: Vec<Step>,
    pub error: Option<String>,
    /// Whether this was the dry run's answer.
    pub dry_run: bool,
}

impl Report {
    fn parse(v: &Value, dry_run: bool) -> Report {
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        let steps = v["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|step| Step {
                phase: step["phase"].as_str().unwrap_or("?").to_owned(),
                ms: step["ms"].as_f64().unwrap_or(0.0),
                detail: step["detail"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        Report {
            outcome: text("outcome"),
            from: text("from"),
            to: text("to"),
            pause_ms: v["pause_ms"].as_f64(),
            held: v["held"].as_u64(),
            steps,
            error: v["error"].as_str().map(str::to_owned),
            dry_run,
        }
    }
}

/// Classifies one answer of `POST /v1/cutover`.
fn outcome(status: u16, body: &Value, dry_run: bool) -> Outcome {
    match status {
        200..=299 => {
            let report = Report::parse(body, dry_run);
            if dry_run {
                Outcome::Passed(report)
            } else if report.outcome == "switched" {
                Outcome::Switched(report)
            } else {
                Outcome::Aborted(report)
            }
        }
        404 => Outcome::Unavailable(
            "this build of switchyard has no cutover yet (POST /v1/cutover answered 404 Not \
             Found)"
                .to_owned(),
        ),
        409 if body.get("outcome").is_some() => Outcome::Aborted(Report::parse(body, dry_run)),
        _ => Outcome::Failed(format!(
            "POST /v1/cutover answered {status}: {}",
            error_message(body)
        )),
    }
}

async fn request(admin: &Admin, to: &str, dry_run: bool) -> Outcome {
    let admin = admin.clone();
    let body = json!({ "to": to, "dry_run": dry_run });
    match blocking(move || admin.request("POST", "/v1/cutover", Some(body))).await {
        Ok((status, body)) => outcome(status, &body, dry_run),
        Err(e) => Outcome::Failed(e),
    }
}

/// A dry run, then, if it passed, the cutover to `to`. Returns the dry run's answer (when it
/// did not pass) or the cutover's.
pub async fn run(admin: &Admin, to: &str) -> Outcome {
    match request(admin, to, true).await {
        Outcome::Passed(_) => request(admin, to, false).await,
        refused => refused,
    }
}

/// The phase of a cutover in progress, or how the last one ended; `None` before any (or
/// when this build has no cutover).
pub async fn phase(admin: &Admin) -> Option<String> {
    let admin = admin.clone();
    let (status, v) = blocking(move || admin.request("GET", "/v1/cutover", None))
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    if v["running"].as_bool() == Some(true) {
        return v["phase"].as_str().map(str::to_owned);
    }
    v["outcome"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let switched = json!({
            "outcome": "switched", "from": "old", "to": "new", "pause_ms": 412.5, "held": 37,
            "steps": [{"phase": "preflight", "ms": 12.1, "detail": "lag 0 B"}], "error": null
        });
        let Outcome::Switched(report) = outcome(200, &switched, false) else {
            panic!("switched");
        };
        assert_eq!(report.pause_ms, Some(412.5));
        assert_eq!(report.held, Some(37));
        assert_eq!(report.steps[0].phase, "preflight");
        assert_eq!(report.error, None);

        let aborted = json!({ "outcome": "aborted", "from": "old", "to": "new",
            "steps": [], "error": "catch-up timed out" });
        let Outcome::Aborted(report) = outcome(409, &aborted, false) else {
            panic!("aborted");
        };
        assert_eq!(report.error.as_deref(), Some("catch-up timed out"));

        let not_found = Value::String("Not Found".into());
        assert!(matches!(
            outcome(404, &not_found, true),
            Outcome::Unavailable(_)
        ));
        let bad = json!({ "error": "no cluster named \"neu\"" });
        let Outcome::Failed(text) = outcome(400, &bad, false) else {
            panic!("failed");
        };
        assert!(text.contains("neu"), "{text}");
        assert!(matches!(
            outcome(200, &json!({"outcome": "ok"}), true),
            Outcome::Passed(_)
        ));
    }
}
