//! The HTTP endpoints (PROTOCOL.md §10).

use serde_json::{json, Value};

use crate::helpers::*;

/// Asserts a body that is exactly `{code: <slug>, message: <text>}`.
fn assert_api_error(body: &Value, code: &str) {
    let keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, vec!["code", "message"], "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[actix_web::test]
async fn healthz_and_readyz_answer_200_while_serving() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.0, 200);
    assert_eq!(app.get("/readyz", None).await.0, 200);
}

#[actix_web::test]
async fn status_has_exactly_the_documented_shape_and_exact_counts() {
    let app = spawn_app().await;
    let mut unidentified = app.connect().await;
    // A PONG proves its session is registered before /status is asked.
    unidentified.send_json(&json!({"op": 3, "id": "up"})).await.unwrap();
    assert_eq!(unidentified.recv_frame().await.unwrap(), json!({"op": 4, "id": "up"}));
    let mut a = app.connect().await;
    let node = a.identify(ANY_TOKEN, Some(&["g1", "x"])).await.unwrap()["node"].clone();
    let mut b = app.connect().await;
    b.identify(SVC_TOKEN, Some(&["g1"])).await.unwrap();

    let status = app.status().await;
    assert_eq!(
        keys(&status),
        vec![
            "connections",
            "groups",
            "messages",
            "node",
            "services",
            "uptime_seconds",
            "version"
        ],
        "{status}"
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["node"], node);
    assert!(status["uptime_seconds"].is_u64(), "{status}");
    assert_eq!(status["connections"], json!({"total": 3, "identified": 2}));
    assert_eq!(status["groups"], json!({"g1": 2, "x": 1}));
    assert_eq!(status["services"], json!({"any": 1, "svc": 1}));
    let messages = &status["messages"];
    assert_eq!(keys(messages), vec!["delivered", "dropped", "received"], "{status}");
    for key in ["received", "delivered", "dropped"] {
        assert!(messages[key].is_u64(), "{status}");
    }

    a.send_json(&json!({"op": 0, "id": "m", "event": "E", "intent": {"target": "GROUP", "identifier": "g1"}}))
        .await
        .unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["id"], "m");
    let after = app.status().await["messages"].clone();
    let delta = |key: &str| after[key].as_u64().unwrap() - messages[key].as_u64().unwrap();
    assert_eq!(
        (delta("received"), delta("delivered"), delta("dropped")),
        (1, 1, 0),
        "before {messages}, after {after}"
    );
}

#[actix_web::test]
async fn status_with_a_token_needs_the_right_bearer_token() {
    let app = spawn_app_with(|s| s.status.token = Some("status-secret".into())).await;
    let (code, body) = app.get("/status", None).await;
    assert_eq!(code, 401, "{body}");
    assert_api_error(&body, "unauthorized");
    let (code, body) = app.get("/status", Some("wrong")).await;
    assert_eq!(code, 401, "{body}");
    assert_api_error(&body, "unauthorized");
    let (code, body) = app.get("/status", Some("status-secret")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["connections"], json!({"total": 0, "identified": 0}));
    // The probes stay open.
    assert_eq!(app.get("/healthz", None).await.0, 200);
    assert_eq!(app.get("/readyz", None).await.0, 200);
}

#[actix_web::test]
async fn an_unknown_path_is_404_json() {
    let app = spawn_app().await;
    let (code, body) = app.get("/nope", None).await;
    assert_eq!(code, 404, "{body}");
    assert_api_error(&body, "not_found");
}

/// `method path` with `Authorization: <authorization>` when given: the
/// status, the `Allow` header and the JSON body.
async fn raw_request(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Option<String>, Value) {
    let (status, headers, body) = app.send(method, path, authorization).await;
    let allow = headers.get("allow").map(|v| v.to_str().expect("ascii").to_owned());
    (status, allow, body)
}

#[actix_web::test]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app_with(|s| s.status.token = Some("st".into())).await;
    for (path, authorization, status) in [
        ("/healthz", None, 200),
        ("/readyz", None, 200),
        ("/metrics", None, 200),
        ("/status", Some("Bearer st"), 200),
        ("/status", None, 401),
    ] {
        let (code, _, body) = app.send_raw("HEAD", path, authorization).await;
        assert_eq!((code, body.len()), (status, 0), "HEAD {path}");
    }
}

#[actix_web::test]
async fn a_wrong_method_is_405_json_with_allow_never_500() {
    let app = spawn_app_with(|s| s.server.ws_path = "/socket/v1".into()).await;
    for (method, path, allow) in [
        ("POST", "/status", "GET, HEAD"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("GET", "/api/publish", "POST"),
        ("PUT", "/api/disconnect", "POST"),
        ("POST", "/socket/v1", "GET"),
    ] {
        let (code, allowed, body) = raw_request(&app, method, path, None).await;
        assert_eq!(
            (code, allowed.as_deref()),
            (405, Some(allow)),
            "{method} {path}: {body}"
        );
        assert_api_error(&body, "method_not_allowed");
    }
    let (code, allowed, body) = raw_request(&app, "POST", "/ws", None).await;
    assert_eq!((code, allowed), (404, None), "{body}");
    assert_api_error(&body, "not_found");
}

#[actix_web::test]
async fn the_bearer_scheme_is_case_insensitive_and_auth_comes_before_the_query() {
    let app = spawn_app_with(|s| s.status.token = Some("status-secret".into())).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (code, _, body) = raw_request(&app, "GET", "/status", Some(&format!("{scheme} status-secret"))).await;
        assert_eq!(code, 200, "{scheme}: {body}");
    }
    for auth in [
        None,
        Some("Basic status-secret"),
        Some("Bearer"),
        Some("Bearerstatus-secret"),
    ] {
        let (code, _, body) = raw_request(&app, "GET", "/status?sessions=x", auth).await;
        assert_eq!(code, 401, "{auth:?}: {body}");
        assert_api_error(&body, "unauthorized");
    }
    let (code, _, body) = raw_request(&app, "GET", "/status?sessions=x", Some("Bearer status-secret")).await;
    assert_eq!(code, 400, "{body}");
    assert_api_error(&body, "bad_request");
}

#[actix_web::test]
async fn a_plain_get_on_the_websocket_path_is_400_json() {
    let app = spawn_app().await;
    let (code, body) = app.get("/ws", None).await;
    assert_eq!(code, 400, "{body}");
    assert_api_error(&body, "bad_request");
}

#[actix_web::test]
async fn status_lists_sessions_with_the_client_address_a_trusted_proxy_forwarded() {
    let app = spawn_app_with(|s| s.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let mut proxied =
        socket_hub::client::Client::connect_with_headers(&app.ws_url, &[("X-Forwarded-For", "203.0.113.5")])
            .await
            .unwrap();
    let session = proxied.identify(ANY_TOKEN, Some(&["g"])).await.unwrap()["session"].clone();
    let (code, body) = app.get("/status?sessions=10", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["sessions"],
        serde_json::json!([{"session": session, "service": "any", "address": "203.0.113.5", "groups": ["g"]}])
    );
    let (code, body) = app.get("/status?sessions=many", None).await;
    assert_eq!((code, body["code"].as_str()), (400, Some("bad_request")));
    assert!(
        app.status().await.get("sessions").is_none(),
        "sessions are listed only on request"
    );
}

#[actix_web::test]
async fn forwarding_headers_from_an_untrusted_peer_do_not_change_the_listed_address() {
    let app = spawn_app().await;
    let mut c = socket_hub::client::Client::connect_with_headers(&app.ws_url, &[("X-Forwarded-For", "203.0.113.5")])
        .await
        .unwrap();
    c.identify(ANY_TOKEN, None).await.unwrap();
    let (_, body) = app.get("/status?sessions=1", None).await;
    let address = body["sessions"][0]["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
}
