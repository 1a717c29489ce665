//! `GET /ws`: the WebSocket upgrade. The connection cap and the connect rate
//! are checked here, before any session exists, and refused with 503 and
//! `Retry-After`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_http::ws::Codec;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use super::{ApiError, AppState};
use crate::conn::ConnHandle;
use crate::session::inbound::{EndOnError, Gated};
use crate::session::outbox::Body;
use crate::session::{ConnectionSlot, WsSession};

pub async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut response = match ws::handshake(&req) {
        Ok(response) => response,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("not a WebSocket upgrade: {e}"),
            ))
        }
    };
    let unavailable = |message: &str, retry_after: u64| {
        state.metrics.refused_upgrades.inc();
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(retry_after);
        e
    };
    if !state.allowed_origins.is_empty() {
        if let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| state.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if !allowed {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "this Origin may not open a WebSocket",
                ));
            }
        }
    }
    if !state.ready.load(Ordering::Acquire) {
        return Err(unavailable(
            "the hub is not accepting sessions (starting or draining)",
            1,
        ));
    }
    {
        let mut bucket = state.connect_rate.lock().unwrap_or_else(|e| e.into_inner());
        if !bucket.try_take(Instant::now()) {
            let wait = bucket.wait_time().as_secs_f64().ceil().max(1.0) as u64;
            return Err(unavailable("too many connections per second; retry later", wait));
        }
    }
    let Some(slot) = ConnectionSlot::acquire(&state.metrics, state.max_connections) else {
        return Err(unavailable("the hub is at its connection limit; retry later", 1));
    };
    let closer = req
        .conn_data::<ConnHandle>()
        .map(ConnHandle::closer)
        .unwrap_or_default();
    let peer = state.trusted_proxies.client_addr(req.peer_addr(), req.headers());
    let session = WsSession::new(state.session.clone(), slot, closer, peer);
    // The decoder reads from the socket only once it has decoded what it
    // holds, so a client that writes faster than its session handles frames
    // is slowed by TCP instead of growing the hub (`session::inbound`).
    // A payload error (the client closed its socket) ends the stream after
    // the frames it holds, its close frame among them.
    let stream = Gated::new(EndOnError::new(stream), session.handled());
    // The session's frames, and the frames the hub framed once for all
    // recipients, go out through its outbox (`session::outbox`).
    let outbox = session.outbox();
    let codec = Codec::new().max_size(state.session.max_frame_bytes);
    let context = ws::WebsocketContext::with_codec(session, stream, codec);
    Ok(response.streaming(Body::new(context, outbox)))
}
