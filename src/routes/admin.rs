//! The admin API (§10): publish a frame as the service `http`, disconnect a
//! session. Behind `admin.token`; disabled while it is unset. Every bad
//! request is a 4xx JSON `{code, message}`.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;

use super::status::bearer_ok;
use super::{ApiError, AppState};
use crate::hub::messages::{Kick, Route};
use crate::protocol::frame::{self, Inbound};
use crate::protocol::ErrorCode;
use crate::SessionId;

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled: set admin.token",
        ));
    };
    if !bearer_ok(req, token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <admin.token>",
        ));
    }
    Ok(())
}

/// Reads the body, refusing more than `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_big",
                format!("the body is over {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn hub_gone() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the hub is stopping")
}

/// `POST /api/publish`: body an `EVENT` frame; routed as if a session of the
/// service `http` sent it (`source.session` is null).
pub async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = read_body(payload, state.session.max_frame_bytes).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_frame", "the body is not UTF-8"))?;
    let bad = |code: ErrorCode, message: String| ApiError::new(StatusCode::BAD_REQUEST, code.slug(), message);
    let ev = match frame::parse(text) {
        Ok(Inbound::Event(ev)) => ev,
        Ok(_) => {
            return Err(bad(
                ErrorCode::InvalidFrame,
                "the body must be an EVENT frame (op 0)".into(),
            ))
        }
        Err(e) => return Err(bad(e.code, e.message)),
    };
    let id: Arc<str> = match ev.id {
        Some(id) => id.into(),
        None => uuid::Uuid::new_v4().hyphenated().to_string().into(),
    };
    let source = frame::source(None, "http");
    let encoded = frame::routed_event(&id, &ev.event, ev.data, ev.intent_raw, &source);
    state.metrics.received(frame::op::EVENT);
    let routed = state
        .session
        .hub
        .send(Route {
            from: None,
            id: id.clone(),
            intent: ev.intent,
            frame: encoded,
            at: Instant::now(),
        })
        .await
        .map_err(|_| hub_gone())?;
    match routed {
        Ok(()) => Ok(HttpResponse::Accepted().json(serde_json::json!({"id": &*id}))),
        Err(code) => Err(ApiError::new(StatusCode::NOT_FOUND, code.slug(), code.message())),
    }
}

#[derive(Deserialize)]
struct DisconnectBody {
    session: String,
}

/// `POST /api/disconnect`: body `{"session": "<id>"}`; that session gets
/// `DISCONNECT` 4009.
pub async fn disconnect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = read_body(payload, 4096).await?;
    let invalid = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expected {{\"session\": \"<id>\"}}: {why}"),
        )
    };
    if !frame::is_json_object(&body) {
        return Err(invalid("not a JSON object".to_owned()));
    }
    let parsed: DisconnectBody = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "unknown_session", "no such session");
    let session = SessionId::parse(&parsed.session).ok_or_else(unknown)?;
    let found = state.session.hub.send(Kick { session }).await.map_err(|_| hub_gone())?;
    if !found {
        return Err(unknown());
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"session": session.to_string(), "code": 4009})))
}
