//! The HTTP side: the WebSocket upgrade and the status endpoints. Every
//! answer that is not a success is 4xx/503 JSON `{code, message}`.

pub mod admin;
pub mod status;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::proxy::TrustedProxies;
use crate::session::rate_limit::TokenBucket;
use crate::session::SessionConfig;

/// What every HTTP handler shares.
pub struct AppState {
    /// Handed to each new session.
    pub session: Arc<SessionConfig>,
    pub metrics: Arc<Metrics>,
    /// False while starting or draining: `/readyz` 503 and no new sessions.
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
    pub node: Arc<str>,
    pub max_connections: usize,
    /// `limits.connect_rate_per_sec`, shared by all workers.
    pub connect_rate: Mutex<TokenBucket>,
    pub status_token: Option<String>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Origins that may open a WebSocket; empty allows any.
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: TrustedProxies,
}

/// An HTTP error answer: `{code, message}` with a status.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(skip)]
    pub retry_after: Option<u64>,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            retry_after: None,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(self)
    }
}

/// The hub's own endpoints, each with the methods it answers (its `Allow`).
pub const ENDPOINTS: [(&str, &str); 6] = [
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/status", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
    ("/api/publish", "POST"),
    ("/api/disconnect", "POST"),
];

/// Where the admin API lives, now and later: no WebSocket path under it.
pub const API_PREFIX: &str = "/api/";

/// Mounts every route. `ws_path` comes from the settings.
pub fn configure(ws_path: String) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.route(&ws_path, web::get().to(ws::upgrade))
            .route("/healthz", get_or_head().to(status::healthz))
            .route("/readyz", get_or_head().to(status::readyz))
            .route("/status", get_or_head().to(status::status))
            .route("/metrics", get_or_head().to(status::metrics))
            .route("/api/publish", web::post().to(admin::publish))
            .route("/api/disconnect", web::post().to(admin::disconnect))
            .default_service(web::to(move |req: HttpRequest| {
                let answer = not_found(&req, &ws_path);
                async move { answer }
            }));
    }
}

/// `GET`, or `HEAD` (the same answer without its body: health checkers
/// probe with either).
fn get_or_head() -> actix_web::Route {
    web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
}

/// 405 with `Allow` on a known path, 404 elsewhere.
fn not_found(req: &HttpRequest, ws_path: &str) -> HttpResponse {
    let allow = ENDPOINTS
        .iter()
        .chain([(ws_path, "GET")].iter())
        .find(|(path, _)| *path == req.path())
        .map(|(_, method)| *method);
    match allow {
        Some(allow) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here; use {allow}", req.method()),
            )
            .error_response();
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            response
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {} {}", req.method(), req.path()),
        )
        .error_response(),
    }
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
