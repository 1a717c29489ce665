//! `GET /healthz`, `/readyz` and `/status` (§10).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::auth::secret_eq;
use crate::hub::messages::{Barrier, GetSnapshot, SessionInfo};

/// 200 while the process serves.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// 200 while sessions are accepted; 503 while starting or draining.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.ready.load(Ordering::Acquire) {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "unavailable"}))
    }
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    node: String,
    uptime_seconds: u64,
    connections: Connections,
    groups: BTreeMap<String, usize>,
    services: BTreeMap<String, usize>,
    messages: Messages,
    /// Only with `?sessions=N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<Vec<SessionInfo>>,
}

/// `/status?sessions=N` also lists up to N sessions (at most 10000).
#[derive(serde::Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    sessions: Option<usize>,
}

#[derive(Serialize)]
struct Connections {
    total: usize,
    identified: usize,
}

#[derive(Serialize)]
struct Messages {
    received: u64,
    delivered: u64,
    dropped: u64,
}

/// Checks `Authorization: Bearer <token>` in constant time.
pub fn bearer_ok(req: &HttpRequest, expected: &str) -> bool {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| secret_eq(given.trim(), expected))
}

/// Prometheus/OpenMetrics text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Let the hub catch up first, so that a session identified before the
    // scrape is counted in it; a hub that is stopping or busy past a second
    // does not hold the scrape back.
    let barrier = state.session.hub.send(Barrier).timeout(Duration::from_secs(1));
    let _ = barrier.await;
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(state.metrics.encode())
}

pub async fn status(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.status_token {
        if !bearer_ok(&req, token) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <status.token>",
            ));
        }
    }
    let query = web::Query::<StatusQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("sessions must be a number: {e}"),
        )
    })?;
    let listed = query.sessions.map(|n| n.min(10_000));
    let snapshot = state
        .session
        .hub
        .send(GetSnapshot {
            sessions: listed.unwrap_or(0),
        })
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the hub is stopping"))?;
    let (received, delivered, dropped) = state.metrics.totals();
    Ok(HttpResponse::Ok().json(Status {
        version: env!("CARGO_PKG_VERSION"),
        node: state.node.to_string(),
        uptime_seconds: state.started.elapsed().as_secs(),
        connections: Connections {
            total: snapshot.connections,
            identified: snapshot.identified,
        },
        groups: snapshot.groups.into_iter().map(|(g, n)| (g.to_string(), n)).collect(),
        services: snapshot.services.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
        messages: Messages {
            received,
            delivered,
            dropped,
        },
        sessions: listed.map(|_| snapshot.sessions),
    }))
}
