//! The admin HTTP listener (axum): Prometheus metrics, health, and status. Requests that
//! change state require the bearer token; one error type maps to every error response.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;
use crate::topology::TopologyHandle;

pub struct AdminState {
    pub metrics: PrometheusHandle,
    pub topology: Arc<TopologyHandle>,
    pub active: String,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Checks `Authorization: Bearer <token>` for calls that change state.
pub fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
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
                    "role": i.role.as_str(),
                    "in_flight": i.load.in_flight(),
                    "down": i.load.is_down(std::time::Instant::now()),
                    "state": i.load.status().as_str(),
                })
            };
            let readers: Vec<_> = c.readers.iter().map(|r| instance(r)).collect();
            (
                name.clone(),
                json!({ "writer": instance(&c.writer), "readers": readers }),
            )
        })
        .collect();
    Json(json!({ "active": state.active, "clusters": clusters }))
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
        Arc::new(AdminState {
            metrics: crate::metrics::install(),
            topology: Arc::new(TopologyHandle::new(topology)),
            active: "old".into(),
            token: token.map(str::to_owned),
        })
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
