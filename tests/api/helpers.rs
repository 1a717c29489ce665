//! `spawn_app()` and ready-made clients.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use socket_hub::client::{Client, WAIT};
use socket_hub::settings::{ServiceSettings, Settings};
use socket_hub::shutdown::ShutdownHandle;
use socket_hub::startup::Application;

/// The token of the test service `svc` (groups `g1`, `g2`).
pub const SVC_TOKEN: &str = "svc-token";
/// The token of the test service `any` (groups `*`).
pub const ANY_TOKEN: &str = "any-token";

pub struct TestApp {
    pub port: u16,
    /// `ws://127.0.0.1:<port>/ws`
    pub ws_url: String,
    /// `http://127.0.0.1:<port>`
    pub http_url: String,
    pub shutdown: ShutdownHandle,
    pub server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

fn service(name: &str, token: &str, groups: &[&str]) -> ServiceSettings {
    ServiceSettings {
        name: name.into(),
        token: Some(token.into()),
        token_sha256: None,
        token_env: None,
        token_file: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// The built-in defaults, on 127.0.0.1 port 0, with two test services.
/// Heartbeats are slow so that they never interleave with what a test
/// expects; tests of heartbeats set their own.
pub fn test_settings() -> Settings {
    let mut s = Settings::load_from(Path::new("/nonexistent"), None, None, Vec::new()).expect("built-in defaults load");
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    s.server.workers = 2;
    s.heartbeat.interval_ms = 60_000;
    s.heartbeat.timeout_ms = 120_000;
    s.shutdown.drain_ms = 100;
    s.limits.close_grace_ms = 200;
    s.services = vec![
        service("svc", SVC_TOKEN, &["g1", "g2"]),
        service("any", ANY_TOKEN, &["*"]),
    ];
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a hub with the test settings as changed by `change`.
pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    change(&mut settings);
    settings.validate().expect("test settings are valid");
    let app = Application::build(settings).expect("hub starts");
    let port = app.port();
    let shutdown = app.shutdown_handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        port,
        ws_url: format!("ws://127.0.0.1:{port}/ws"),
        http_url: format!("http://127.0.0.1:{port}"),
        shutdown,
        server,
    }
}

impl TestApp {
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url).await.expect("connects")
    }

    /// A client identified as `any` in `groups`, and its session id.
    pub async fn identified(&self, groups: &[&str]) -> (Client, String) {
        let mut client = self.connect().await;
        let data = client.identify(ANY_TOKEN, Some(groups)).await.expect("identifies");
        let session = data["session"].as_str().expect("session id").to_owned();
        (client, session)
    }

    /// Sends `method path` with an empty body; the status and the JSON body
    /// (or Null).
    pub async fn request(&self, method: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        let (status, _, body) = self.send(method, path, authorization.as_deref()).await;
        (status, body)
    }

    /// Sends `method path` with an empty body, and `Authorization:
    /// <authorization>` when given; the status, the headers and the JSON
    /// body (or Null).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> (u16, awc::http::header::HeaderMap, Value) {
        let (status, headers, body) = self.send_raw(method, path, authorization).await;
        (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// [`TestApp::send`], with the body as it came.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> (u16, awc::http::header::HeaderMap, bytes::Bytes) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = awc::Client::new().request(method, format!("{}{path}", self.http_url));
        if let Some(value) = authorization {
            req = req.insert_header(("Authorization", value));
        }
        let mut resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("answers in time")
            .expect("request succeeds");
        let body = resp.body().await.expect("body");
        (resp.status().as_u16(), resp.headers().clone(), body)
    }

    /// GETs a path; returns the status and the JSON body (or Null).
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        self.request("GET", path, bearer).await
    }

    /// `/metrics`, the text exposition.
    pub async fn metrics(&self) -> String {
        let request = awc::Client::new().get(format!("{}/metrics", self.http_url)).send();
        let mut resp = tokio::time::timeout(WAIT, request)
            .await
            .expect("answers in time")
            .expect("request succeeds");
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.body().await.expect("body");
        String::from_utf8(body.to_vec()).expect("UTF-8")
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Value {
        let (code, body) = self.get("/status", None).await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Waits, at most 5 s, until `/status` counts `n` connections of `kind`
    /// (`"total"` or `"identified"`): the hub forgets a session only once
    /// its socket is gone.
    pub async fn wait_connections(&self, kind: &str, n: u64) {
        let mut last = Value::Null;
        for _ in 0..250 {
            last = self.status().await["connections"][kind].clone();
            if last == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("/status connections.{kind} stayed {last}, not {n}");
    }
}

/// Asserts that nothing arrives on `client` for `wait`.
pub async fn assert_silent(client: &mut Client, wait: Duration) {
    match client.recv(wait).await {
        Err(socket_hub::client::ClientError::Timeout(_)) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// Asserts an `ERROR` reply with this code (and id, when given).
pub fn assert_error(frame: &Value, code: &str, id: Option<&str>) {
    assert_eq!(frame["op"], 5, "{frame}");
    assert_eq!(frame["event"], "ERROR", "{frame}");
    assert_eq!(frame["data"]["code"], code, "{frame}");
    assert!(frame["data"]["message"].is_string(), "{frame}");
    if let Some(id) = id {
        assert_eq!(frame["id"], id, "{frame}");
    }
}
