//! The admin HTTP listener (axum): Prometheus metrics, liveness and readiness, status, and
//! the calls that change state. Those require the bearer token, checked before anything
//! else of the request is read; one error type maps to every error response.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::cutover::driver::{StepOutcome, StepRequest};
use crate::cutover::{
    ControlError, Controller, Phase, Routing, RoutingError, RoutingState, StartError, StepError,
};
use crate::lifecycle::Lifecycle;
use crate::reload::{ReloadError, ReloadHandle};
use crate::shutdown::Shutdown;
use crate::topology::TopologyHandle;

pub struct AdminState {
    pub metrics: PrometheusHandle,
    pub topology: Arc<TopologyHandle>,
    pub routing: Arc<Routing>,
    pub cutover: Arc<Controller>,
    pub token: Option<String>,
    pub lifecycle: Arc<Lifecycle>,
    /// `None` when this proxy cannot reload (`POST /v1/reload` then answers 409).
    pub reload: Option<ReloadHandle>,
    /// The sessions' context, for its backend connection pools in `/status`.
    pub sessions: Option<Arc<crate::session::Context>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no admin token is configured: state-changing calls are disabled")]
    NoToken,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Cutover(#[from] StartError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoToken => StatusCode::FORBIDDEN,
            ApiError::Control(ControlError::Routing(RoutingError::UnknownCluster(_))) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Control(ControlError::Routing(_)) => StatusCode::CONFLICT,
            ApiError::Control(ControlError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Cutover(StartError::UnknownCluster(_)) => StatusCode::NOT_FOUND,
            ApiError::Cutover(_) | ApiError::Step(_) | ApiError::Reload(_) => StatusCode::CONFLICT,
        };
        let message = crate::error::chain(&self);
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// Checks `Authorization: Bearer <token>` for calls that change state.
pub fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::NoToken);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Compares two secrets in time that depends on neither's content nor length: both are
/// hashed to 32 bytes first, and the digests compared without an early exit.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token check of every state-changing route, run before the route's extractors read
/// the body: an unauthenticated caller learns nothing about request formats.
async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    // Calls that change state: each behind the token check.
    let guarded = Router::new()
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/clusters/{name}/read-only", post(read_only))
        .route("/v1/cutover", post(cutover))
        .route("/v1/cutover/step", post(cutover_step))
        .route("/v1/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/v1/cutover", get(cutover_progress))
        .route("/v1/fleet", get(fleet))
        .merge(guarded)
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let routing = state.routing.load();
    crate::metrics::routing_state(
        &routing.active,
        routing.modes.iter().map(|(c, m)| (c.as_str(), m.as_str())),
    );
    crate::metrics::draining(state.lifecycle.is_draining());
    if let Some(ctx) = &state.sessions {
        ctx.postgres_pools.publish();
        ctx.mysql_pools.publish();
    }
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Body of `POST /v1/pause` and `/v1/resume`; the active cluster when no cluster is named.
#[derive(Debug, Default, Deserialize)]
struct ClusterBody {
    cluster: Option<String>,
}

/// Body of `POST /v1/clusters/{name}/read-only`.
#[derive(Debug, Deserialize)]
struct ReadOnlyBody {
    enabled: bool,
}

fn routing_json(state: &RoutingState) -> serde_json::Value {
    json!({
        "active": state.active,
        "generation": state.generation,
        "modes": state.modes.iter().map(|(k, v)| (k.clone(), json!(v.as_str()))).collect::<serde_json::Map<_, _>>(),
    })
}

fn cluster_or_active(state: &AdminState, body: Option<Json<ClusterBody>>) -> String {
    body.and_then(|Json(b)| b.cluster)
        .unwrap_or_else(|| state.routing.load().active.clone())
}

async fn pause(
    State(state): State<Arc<AdminState>>,
    body: Option<Json<ClusterBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    change_cluster(&state, body, Routing::pause)
}

async fn resume(
    State(state): State<Arc<AdminState>>,
    body: Option<Json<ClusterBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    change_cluster(&state, body, Routing::resume)
}

/// Applies `change` to the named cluster (the active one by default).
fn change_cluster(
    state: &AdminState,
    body: Option<Json<ClusterBody>>,
    change: fn(&Routing, &str) -> Result<Arc<RoutingState>, ControlError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = cluster_or_active(state, body);
    let next = change(&state.routing, &cluster)?;
    Ok(Json(routing_json(&next)))
}

async fn read_only(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Json(body): Json<ReadOnlyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let next = state.routing.set_read_only(&name, body.enabled)?;
    Ok(Json(routing_json(&next)))
}

/// Body of `POST /v1/cutover`.
#[derive(Debug, Deserialize)]
struct CutoverBody {
    to: String,
    #[serde(default)]
    dry_run: bool,
}

/// Runs a whole cutover of this proxy and answers with its report: 200 when it switched
/// (or a dry run passed), 409 when it aborted or failed.
async fn cutover(
    State(state): State<Arc<AdminState>>,
    Json(body): Json<CutoverBody>,
) -> Result<Response, ApiError> {
    let report = state.cutover.cutover(&body.to, body.dry_run).await?;
    let status = match report.outcome {
        Phase::Switched | Phase::DryRun => StatusCode::OK,
        _ => StatusCode::CONFLICT,
    };
    Ok((status, Json(report)).into_response())
}

/// The cutover in progress (or the last one), and the timing settings a coordinating CLI
/// uses.
async fn cutover_progress(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    Json(json!({
        "progress": state.cutover.progress(),
        "settings": state.cutover.settings(),
        "active": state.routing.load().active,
    }))
}

/// One step of a cutover that `switchyard cutover` coordinates over several proxies.
async fn cutover_step(
    State(state): State<Arc<AdminState>>,
    Json(request): Json<StepRequest>,
) -> Result<Json<StepOutcome>, ApiError> {
    state
        .cutover
        .step(request)
        .await
        .map(Json)
        .map_err(ApiError::Step)
}

/// The fleet as this proxy sees it (members, liveness, what each serves); an empty list
/// without `[fleet]`.
async fn fleet(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    match state.cutover.fleet() {
        Some(f) => Json(json!(f.view())),
        None => Json(json!({ "self": null, "members": [] })),
    }
}

/// Liveness: the process runs and answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness, for load balancers: 200 while this proxy should get new clients; 503 with
/// the reason while it drains, does not listen, or cannot reach the active cluster's
/// writer (the config is loaded before this listener opens, and a failed reload keeps the
/// running config).
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let routing = state.routing.load();
    let active = routing.active.as_str();
    let writer = state
        .topology
        .cluster(active)
        .map(|c| Arc::clone(&c.writer));
    let reason = if state.lifecycle.is_draining() {
        Some("shutting down: draining sessions".to_owned())
    } else if !state.lifecycle.is_listening() {
        Some("not listening for clients".to_owned())
    } else {
        match &writer {
            None => Some(format!("active cluster {active:?} is not in the topology")),
            Some(w) if !w.load.status().is_usable() => Some(format!(
                "the writer of the active cluster {active:?} ({}) is unreachable: {}",
                w.addr,
                w.load
                    .problem()
                    .unwrap_or_else(|| w.load.status().as_str().to_owned())
            )),
            Some(_) => None,
        }
    };
    let body = json!({
        "ready": reason.is_none(),
        "reason": reason,
        "active": active,
        "sessions": state.lifecycle.open_sessions(),
    });
    let status = match reason {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(body)).into_response()
}

/// Re-reads the config file and applies it (see [`crate::reload`]): 200 with what was
/// applied, 409 with every reason when it was refused (nothing changed then).
async fn reload(State(state): State<Arc<AdminState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let handle = state.reload.as_ref().ok_or(ReloadError::NoFile)?;
    let reloaded = handle.reload().await?;
    Ok(Json(json!({ "reloaded": reloaded })))
}

async fn status(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    let topology = state.topology.load();
    let clusters: serde_json::Map<_, _> = topology
        .clusters
        .iter()
        .map(|(name, c)| {
            let instance = |i: &crate::topology::Instance| {
                json!({
                    "addr": i.addr,
                    "tls_name": i.tls_name,
                    "role": i.role.as_str(),
                    "in_flight": i.load.in_flight(),
                    "down": i.load.is_down(std::time::Instant::now()),
                    "state": i.load.status().as_str(),
                    "lag_seconds": i.load.lag().map(|l| l.as_secs_f64()),
                    "weight": i.weight(),
                    "problem": i.load.problem(),
                })
            };
            let readers: Vec<_> = c.readers.iter().map(|r| instance(r)).collect();
            (
                name.clone(),
                json!({ "writer": instance(&c.writer), "readers": readers }),
            )
        })
        .collect();
    let routing = state.routing.load();
    let pools = state.sessions.as_ref().map(|ctx| ctx.pool_status());
    let pins = state.sessions.as_ref().map(|ctx| ctx.pin_status());
    Json(json!({
        "active": routing.active,
        "routing": routing_json(&routing),
        "clusters": clusters,
        "pools": pools.unwrap_or_default(),
        "pinned_sessions": pins.unwrap_or_default(),
    }))
}

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(token: Option<&str>) -> Arc<AdminState> {
        let topology = crate::topology::Topology {
            clusters: Default::default(),
        };
        let modes = [("old".to_owned(), crate::cutover::Mode::ReadWrite)]
            .into_iter()
            .collect();
        let routing = Routing::open(
            RoutingState::new("old".into(), modes),
            None,
            std::time::Duration::from_secs(5),
            None,
        )
        .unwrap();
        let config = crate::config::validate(
            toml::from_str(
                r#"
                [server]
                protocol = "postgres"
                listen = "127.0.0.1:0"
                [[users]]
                name = "app"
                password = "x"
                [clusters.old]
                writer = "127.0.0.1:1"
                [routing]
                active = "old"
                "#,
            )
            .unwrap(),
            &|_| None,
        )
        .unwrap();
        let topology = Arc::new(TopologyHandle::new(topology));
        let routing = Arc::new(routing);
        let cutover = Arc::new(Controller::new(
            Arc::new(config),
            Arc::clone(&topology),
            Arc::clone(&routing),
        ));
        Arc::new(AdminState {
            metrics: crate::metrics::install(),
            topology,
            routing,
            cutover,
            token: token.map(str::to_owned),
            lifecycle: Arc::default(),
            reload: None,
            sessions: None,
        })
    }

    async fn post(
        app: &Router,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn state_changes_need_the_token_and_report_errors_as_json() {
        let s = state(Some("secret"));
        let app = router(Arc::clone(&s));
        let (status, body) = post(&app, "/v1/pause", None, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"error\""), "{body}");
        let (status, _) = post(&app, "/v1/pause", Some("secret"), "{}").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s.routing.load().mode("old"), crate::cutover::Mode::Paused);
        let (status, body) = post(&app, "/v1/pause", Some("secret"), "{}").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _) = post(&app, "/v1/resume", Some("secret"), r#"{"cluster":"old"}"#).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = post(
            &app,
            "/v1/clusters/old/read-only",
            Some("secret"),
            r#"{"enabled":true}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("read_only"), "{body}");
        let (status, _) = post(
            &app,
            "/v1/clusters/nope/read-only",
            Some("secret"),
            r#"{"enabled":true}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = post(&router(state(None)), "/v1/pause", None, "{}").await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "no token configured: no state changes"
        );
    }

    #[tokio::test]
    async fn health_and_metrics_answer() {
        let app = router(state(None));
        let res = app
            .clone()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app
            .oneshot(Request::get("/status").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_token_is_checked_before_the_body_is_read() {
        let app = router(state(Some("secret")));
        for path in [
            "/v1/pause",
            "/v1/resume",
            "/v1/clusters/old/read-only",
            "/v1/cutover",
            "/v1/cutover/step",
            "/v1/reload",
        ] {
            for body in ["{not json", "", r#"{"unexpected": 1}"#] {
                let (status, answer) = post(&app, path, None, body).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{path} {body:?}: {answer}"
                );
                let (status, answer) = post(&app, path, Some("wrong"), body).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{path} {body:?}: {answer}"
                );
            }
        }
        // With the token, the same malformed body reaches the route and is refused there.
        let (status, _) = post(&app, "/v1/cutover", Some("secret"), "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = post(&app, "/v1/reload", Some("secret"), "").await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "no config file to reload: {body}"
        );
    }

    #[tokio::test]
    async fn readiness_follows_the_listener_and_the_drain() {
        let s = state(None);
        let app = router(Arc::clone(&s));
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                let res = app
                    .oneshot(Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = res.status();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        let (status, body) = get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not listening"), "{body}");
        s.lifecycle.set_listening(true);
        // The test topology has no cluster "old": not ready, with that reason.
        let (status, body) = get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not in the topology"), "{body}");
        s.lifecycle.drain();
        let (status, body) = get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("shutting down"), "{body}");
        let (status, _) = get("/healthz").await;
        assert_eq!(status, StatusCode::OK, "alive while draining");
    }

    #[test]
    fn secrets_compare_by_content_whatever_their_length() {
        assert!(same_secret(b"secret", b"secret"));
        assert!(!same_secret(b"secret", b"secreT"));
        assert!(!same_secret(b"secret", b"secret-and-more"));
        assert!(!same_secret(b"", b"x"));
    }

    #[test]
    fn bearer_token_is_checked() {
        let s = state(Some("secret"));
        let mut h = HeaderMap::new();
        assert!(authorize(&s, &h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(authorize(&s, &h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(authorize(&s, &h).is_ok());
    }
}
