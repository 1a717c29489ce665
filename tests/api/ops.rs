//! Operations (PROTOCOL.md §10, §12): `/metrics` (checked by `promtool`),
//! the admin API, the Origin check, trusted proxies (observed in the log
//! lines of a `socket-hub` subprocess), a real nginx running
//! `deploy/nginx.conf` in front of the hub, and a session through the Docker
//! image (run by `tests/docker/run.sh`).
//!
//! Tests that need an external program (nginx, promtool) print why and pass
//! when it is missing, unless `SOCKET_HUB_REQUIRE_TOOLS` is set (as `.ci/run`
//! does): then they fail.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use socket_hub::client::{Client, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

const ADMIN_TOKEN: &str = "admin-secret";
const QUIET: Duration = Duration::from_millis(300);

// ---- HTTP -------------------------------------------------------------------------

struct Resp {
    status: u16,
    headers: awc::http::header::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// Sends one HTTP request (a body makes it `Content-Type: application/json`).
async fn http(method: &str, url: &str, bearer: Option<&str>, body: Option<Vec<u8>>) -> Resp {
    let auth = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(method, url, &headers, body).await
}

async fn http_with(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = awc::Client::new().request(method, url);
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let sent = match body {
        Some(body) => req.insert_header(("Content-Type", "application/json")).send_body(body),
        None => req.send(),
    };
    let mut resp = tokio::time::timeout(WAIT, sent)
        .await
        .expect("answers in time")
        .expect("request succeeds");
    let body = resp.body().limit(1 << 22).await.expect("body").to_vec();
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

async fn post(app: &TestApp, path: &str, bearer: Option<&str>, body: impl Into<Vec<u8>>) -> Resp {
    http("POST", &format!("{}{path}", app.http_url), bearer, Some(body.into())).await
}

async fn publish(app: &TestApp, frame: &Value) -> Resp {
    post(app, "/api/publish", Some(ADMIN_TOKEN), frame.to_string()).await
}

/// Asserts the status and a body that is exactly `{code, message}`.
fn assert_api_error(resp: &Resp, status: u16, code: &str) {
    let body = resp.json();
    assert_eq!(resp.status, status, "{body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["code", "message"], "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// One HTTP/1.1 exchange written by hand (for requests awc would rewrite,
/// such as a WebSocket upgrade that is refused): status and body.
async fn raw_http(addr: &str, request: &str) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("writes");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .expect("status line");
                    return (status, buf[end + 4..end + 4 + length].to_vec());
                }
            }
            let n = stream.read(&mut chunk).await.expect("reads");
            assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, exchange).await.expect("answers in time")
}

// ---- WebSocket sessions with extra handshake headers ------------------------------------

/// A protocol session over a WebSocket opened with chosen request headers
/// (`Origin`, `X-Forwarded-For`), which `Client::connect` cannot send.
struct RawSession {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawSession {
    async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")?;
        Ok(RawSession { ws })
    }

    async fn send(&mut self, frame: &Value) {
        use futures_util::SinkExt;
        self.ws.send(Message::text(frame.to_string())).await.expect("sends");
    }

    /// The next frame, answering (and hiding) the hub's heartbeat PINGs.
    async fn recv(&mut self) -> Value {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                    if frame["op"] == 3 && frame.get("source").is_none() {
                        self.send(&json!({"op": 4, "id": frame["id"]})).await;
                        continue;
                    }
                    return frame;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Identifies; returns the session id.
    async fn identify(&mut self, token: &str, groups: &[&str]) -> String {
        self.send(&json!({"op": 1, "id": "identify", "data": {"token": token, "groups": groups}}))
            .await;
        let reply = self.recv().await;
        assert_eq!(reply["event"], "IDENTIFY", "{reply}");
        reply["data"]["session"].as_str().expect("session id").to_owned()
    }
}

// ---- external programs --------------------------------------------------------------------

fn tools_required() -> bool {
    std::env::var("SOCKET_HUB_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Finds `name` on PATH or in the sbin/bin directories; when missing, fails
/// if tools are required, otherwise says why the test is skipped.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    assert!(
        !tools_required(),
        "{name} is not installed and SOCKET_HUB_REQUIRE_TOOLS is set (Debian package {package}; .ci/run installs it)"
    );
    eprintln!("skipped: {name} is not installed (Debian package {package}; .ci/run installs it)");
    None
}

/// A port that was free on every interface a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .expect("binds")
        .local_addr()
        .expect("address")
        .port()
}

/// Log lines of a child process, collected by a thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    added: Notify,
}

impl Lines {
    fn collect(self: &Arc<Self>, from: impl std::io::Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                me.lines.lock().unwrap().push(line);
                me.added.notify_waiters();
            }
        });
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line for which `matches` holds, waiting up to `within`.
    async fn wait_for(&self, what: &str, within: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                return line.clone();
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                panic!(
                    "no log line {what} within {within:?}; the log:\n{}",
                    self.all().join("\n")
                );
            }
        }
    }
}

/// The token of the service `svc` of a [`HubProcess`]; it reaches the hub
/// through `token_env`, never through a file.
const PROCESS_TOKEN: &str = "ops-process-token-7f3a";

/// The `socket-hub` binary as a subprocess on a free port, with JSON log
/// lines captured: the only place the hub shows a session's client address.
struct HubProcess {
    child: Child,
    port: u16,
    log: Arc<Lines>,
    _dir: tempfile::TempDir,
}

impl HubProcess {
    /// Starts it with `extra` appended to a config that defines the service
    /// `svc` (token from `OPS_HUB_TOKEN`, any group) and JSON logs.
    async fn start(extra: &str) -> HubProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("hub.toml");
        let text = format!(
            "{extra}\n[log]\nformat = \"json\"\n\n[[services]]\nname = \"svc\"\ntoken_env = \"OPS_HUB_TOKEN\"\ngroups = [\"*\"]\n"
        );
        std::fs::write(&config, text).expect("writes the config");
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_socket-hub"))
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env_clear()
            .env("OPS_HUB_TOKEN", PROCESS_TOKEN)
            .env("HUB__SERVER__HOST", "127.0.0.1")
            .env("HUB__SERVER__PORT", port.to_string())
            .env("HUB__SERVER__WORKERS", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts socket-hub");
        let log = Arc::new(Lines::default());
        log.collect(child.stderr.take().expect("stderr"));
        let hub = HubProcess {
            child,
            port,
            log,
            _dir: dir,
        };
        hub.log
            .wait_for("\"listening on\"", Duration::from_secs(20), |l| {
                l.contains("listening on")
            })
            .await;
        hub
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The `msg` of the JSON log line that starts with `prefix`.
    async fn wait_for_msg(&self, prefix: &str) -> String {
        let line = self
            .log
            .wait_for(&format!("starting {prefix:?}"), WAIT, |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["msg"].as_str().is_some_and(|m| m.starts_with(prefix)))
            })
            .await;
        let v: Value = serde_json::from_str(&line).expect("JSON");
        v["msg"].as_str().expect("msg").to_owned()
    }

    /// Every line is one JSON object `{ts, level, target, msg}`, and none
    /// shows the token.
    fn assert_log_is_json_without_token(&self) {
        let lines = self.log.all();
        assert!(!lines.is_empty());
        for line in &lines {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            let mut keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, vec!["level", "msg", "target", "ts"], "{line}");
            assert!(!line.contains(PROCESS_TOKEN), "the token is in the log: {line}");
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx running `deploy/nginx.conf` with only its two ports changed.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(bin: &Path, hub_port: u16) -> Nginx {
        let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
            .expect("deploy/nginx.conf");
        let port = free_port();
        for needle in ["listen 80;", "server 127.0.0.1:8080;"] {
            assert_eq!(conf.matches(needle).count(), 1, "deploy/nginx.conf has one {needle:?}");
        }
        let adapted = conf
            .replace("listen 80;", &format!("listen {port};"))
            .replace("server 127.0.0.1:8080;", &format!("server 127.0.0.1:{hub_port};"));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, adapted).expect("writes nginx.conf");
        let d = dir.path().display();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts nginx");
        let mut nginx = Nginx { child, port, dir };
        // Ready when it answers; bounded.
        for _ in 0..200 {
            if let Some(exit) = nginx.child.try_wait().expect("try_wait") {
                panic!("nginx exited ({exit}): {}", nginx.error_log());
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx does not listen on {port}: {}", nginx.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its workers too (SIGKILL would orphan them).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- /metrics -----------------------------------------------------------------------------

async fn metrics_text(base_url: &str) -> String {
    let resp = http("GET", &format!("{base_url}/metrics"), None, None).await;
    assert_eq!(resp.status, 200);
    resp.text()
}

/// The value of the sample `series` (`name{labels}` exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().expect("numeric sample"))
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[actix_web::test]
async fn metrics_pass_promtool_check_metrics() {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let app = spawn_app().await;
    // Traffic first, so that labelled series and the histogram have values.
    let (mut a, _) = app.identified(&["m"]).await;
    let (mut b, _) = app.identified(&["m"]).await;
    a.send_json(&json!({"op": 0, "id": "1", "event": "E", "intent": {"target": "GROUP", "identifier": "m"}}))
        .await
        .unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["id"], "1");
    a.send_json(&json!({"op": 0, "id": "2", "event": "E", "intent": {"target": "GROUP", "identifier": "none"}}))
        .await
        .unwrap();
    assert_error(&a.recv_frame().await.unwrap(), "unknown_target", Some("2"));

    let body = metrics_text(&app.http_url).await;
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("writes");
    let out = check.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {} ({said})\n{body}",
        out.status
    );
    assert_eq!(said.trim(), "", "promtool has remarks");
}

#[actix_web::test]
async fn metrics_counters_and_gauges_follow_the_frames_that_flow() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&["m"]).await;
    let (mut b, _) = app.identified(&["m"]).await;
    let (mut c, _) = app.identified(&["m", "other"]).await;
    let mut svc = app.connect().await;
    svc.identify(SVC_TOKEN, Some(&["g1"])).await.unwrap();

    let before = metrics_text(&app.http_url).await;
    assert_eq!(sample(&before, "socket_hub_connections"), 4.0);
    assert_eq!(sample(&before, "socket_hub_sessions_identified"), 4.0);
    assert_eq!(sample(&before, "socket_hub_service_sessions{service=\"any\"}"), 3.0);
    assert_eq!(sample(&before, "socket_hub_service_sessions{service=\"svc\"}"), 1.0);
    assert_eq!(sample(&before, "socket_hub_groups"), 3.0);
    assert_eq!(sample(&before, "socket_hub_build_info{version=\"0.1.0\"}"), 1.0);

    for i in 0..3 {
        a.send_json(
            &json!({"op": 0, "id": format!("m{i}"), "event": "E", "intent": {"target": "GROUP", "identifier": "m"}}),
        )
        .await
        .unwrap();
    }
    a.send_json(&json!({"op": 0, "id": "lost", "event": "E", "intent": {"target": "GROUP", "identifier": "nobody"}}))
        .await
        .unwrap();
    for member in [&mut b, &mut c] {
        for i in 0..3 {
            assert_eq!(member.recv_frame().await.unwrap()["id"], format!("m{i}"));
        }
    }
    assert_error(&a.recv_frame().await.unwrap(), "unknown_target", Some("lost"));

    let after = metrics_text(&app.http_url).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("socket_hub_frames_received_total{op=\"event\"}"), 4.0);
    assert_eq!(delta("socket_hub_frames_delivered_total{op=\"event\"}"), 6.0);
    assert_eq!(delta("socket_hub_frames_dropped_total{reason=\"no_recipient\"}"), 1.0);
    assert_eq!(delta("socket_hub_frames_received_total{op=\"identify\"}"), 0.0);
    assert_eq!(delta("socket_hub_routing_latency_seconds_count"), 3.0);

    c.close().await.unwrap();
    svc.close().await.unwrap();
    // The gauges follow once the hub has seen both sockets go.
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics_text(&app.http_url).await;
        if sample(&text, "socket_hub_connections") == 2.0 && sample(&text, "socket_hub_sessions_identified") == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sample(&text, "socket_hub_connections"), 2.0, "{text}");
    assert_eq!(sample(&text, "socket_hub_sessions_identified"), 2.0, "{text}");
    assert_eq!(sample(&text, "socket_hub_service_sessions{service=\"any\"}"), 2.0);
    assert_eq!(sample(&text, "socket_hub_service_sessions{service=\"svc\"}"), 0.0);
    assert_eq!(sample(&text, "socket_hub_groups"), 1.0);
}

// ---- admin API ----------------------------------------------------------------------------

async fn admin_app() -> TestApp {
    spawn_app_with(|s| {
        s.admin.token = Some(ADMIN_TOKEN.into());
        s.limits.max_frame_bytes = 1024;
    })
    .await
}

#[actix_web::test]
async fn the_admin_api_is_403_admin_disabled_while_admin_token_is_unset() {
    let app = spawn_app().await;
    let (_a, a_id) = app.identified(&["g"]).await;
    let frame = json!({"op": 0, "event": "E", "intent": {"target": "GROUP", "identifier": "g"}});
    for bearer in [None, Some(ADMIN_TOKEN), Some("")] {
        let resp = post(&app, "/api/publish", bearer, frame.to_string()).await;
        assert_api_error(&resp, 403, "admin_disabled");
        let resp = post(&app, "/api/disconnect", bearer, json!({"session": a_id}).to_string()).await;
        assert_api_error(&resp, 403, "admin_disabled");
    }
    assert_eq!(app.status().await["connections"]["identified"], 1);
}

#[actix_web::test]
async fn the_admin_api_needs_the_admin_bearer_token() {
    let app = admin_app().await;
    let (mut a, a_id) = app.identified(&["g"]).await;
    let frame = json!({"op": 0, "event": "E", "intent": {"target": "GROUP", "identifier": "g"}}).to_string();
    let kick = json!({"session": a_id}).to_string();
    for bearer in [None, Some("admin-secreT"), Some("admin-secret-and-more"), Some("")] {
        for (path, body) in [("/api/publish", &frame), ("/api/disconnect", &kick)] {
            let resp = post(&app, path, bearer, body.clone()).await;
            assert_api_error(&resp, 401, "unauthorized");
            assert_eq!(resp.headers.get("www-authenticate").unwrap(), "Bearer", "{path}");
        }
    }
    // The right secret in another scheme is not a bearer token.
    for header in [
        format!("Basic {ADMIN_TOKEN}"),
        format!("bearer{ADMIN_TOKEN}"),
        ADMIN_TOKEN.to_owned(),
    ] {
        let url = format!("{}/api/publish", app.http_url);
        let resp = http_with("POST", &url, &[("Authorization", &header)], Some(frame.clone().into())).await;
        assert_api_error(&resp, 401, "unauthorized");
    }
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn publish_routes_an_event_to_a_group_as_the_service_http() {
    let app = admin_app().await;
    let (mut a, _) = app.identified(&["news"]).await;
    let (mut b, _) = app.identified(&["news", "x"]).await;
    let (mut outsider, _) = app.identified(&["x"]).await;
    // A forged source is replaced; data goes through verbatim, even an
    // integer beyond 64 bits.
    let body = r#"{"op":0,"id":"p1","event":"NEWS","data":{"n":1,"big":18446744073709551616},"intent":{"target":"GROUP","identifier":"news"},"source":{"session":"forged","service":"forged"}}"#;
    let resp = post(&app, "/api/publish", Some(ADMIN_TOKEN), body).await;
    assert_eq!((resp.status, resp.json()), (202, json!({"id": "p1"})));
    for member in [&mut a, &mut b] {
        let text = member.recv_text(WAIT).await.unwrap();
        assert!(text.contains(r#""data":{"n":1,"big":18446744073709551616}"#), "{text}");
        let mut got: Value = serde_json::from_str(&text).unwrap();
        got.as_object_mut().unwrap().remove("data");
        assert_eq!(
            got,
            json!({"id": "p1", "op": 0, "event": "NEWS", "intent": {"target": "GROUP", "identifier": "news"}, "source": {"session": null, "service": "http"}})
        );
    }
    assert_silent(&mut outsider, QUIET).await;
}

#[actix_web::test]
async fn publish_without_an_id_gets_one_and_global_and_direct_reach_their_sessions() {
    let app = admin_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let mut unidentified = app.connect().await;

    let resp = publish(&app, &json!({"op": 0, "event": "ALL", "data": [1, 2]})).await;
    assert_eq!(resp.status, 202);
    let id = resp.json()["id"].as_str().expect("an id").to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.recv_frame().await.unwrap(),
            json!({"id": id, "op": 0, "event": "ALL", "data": [1, 2], "source": {"session": null, "service": "http"}})
        );
    }

    let direct = json!({"target": "DIRECT", "identifier": a_id});
    let resp = publish(&app, &json!({"op": 0, "id": "d", "event": "ONE", "intent": direct})).await;
    assert_eq!((resp.status, resp.json()), (202, json!({"id": "d"})));
    assert_eq!(
        a.recv_frame().await.unwrap(),
        json!({"id": "d", "op": 0, "event": "ONE", "intent": direct, "source": {"session": null, "service": "http"}})
    );
    assert_silent(&mut b, QUIET).await;
    assert_silent(&mut unidentified, Duration::from_millis(50)).await;
}

#[actix_web::test]
async fn publish_with_no_recipient_is_404_unknown_target() {
    let app = admin_app().await;
    let (mut a, _) = app.identified(&["g"]).await;
    for intent in [
        json!({"target": "GROUP", "identifier": "empty"}),
        json!({"target": "DIRECT", "identifier": uuid::Uuid::new_v4().to_string()}),
        json!({"target": "DIRECT", "identifier": "not-a-session"}),
    ] {
        let resp = publish(&app, &json!({"op": 0, "id": "x", "event": "E", "intent": intent})).await;
        assert_api_error(&resp, 404, "unknown_target");
    }
    assert_silent(&mut a, QUIET).await;
    assert_eq!(app.status().await["connections"]["identified"], 1);
}

#[actix_web::test]
async fn publish_global_with_nobody_identified_is_accepted_like_a_sessions_global() {
    let app = admin_app().await;
    let mut unidentified = app.connect().await;
    let resp = publish(&app, &json!({"op": 0, "id": "g", "event": "E"})).await;
    assert_eq!((resp.status, resp.json()), (202, json!({"id": "g"})));
    assert_silent(&mut unidentified, QUIET).await;
}

#[actix_web::test]
async fn publish_bad_bodies_are_400_json_never_500() {
    let app = admin_app().await;
    let (mut a, _) = app.identified(&["g"]).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "invalid_frame"),
        (b"".to_vec(), "invalid_frame"),
        (b"[1, 2]".to_vec(), "invalid_frame"),
        (vec![b'{', 0xff, 0xfe, b'}'], "invalid_frame"),
        (br#"{"event": "E"}"#.to_vec(), "invalid_frame"),
        (br#"{"op": 0}"#.to_vec(), "invalid_frame"),
        (br#"{"op": 0, "event": 5}"#.to_vec(), "invalid_frame"),
        (br#"{"op": 3, "id": "p"}"#.to_vec(), "invalid_frame"),
        (br#"{"op": 1, "data": {"token": "x"}}"#.to_vec(), "invalid_frame"),
        (br#"{"op": 5, "id": "r", "event": "E"}"#.to_vec(), "invalid_frame"),
        (br#"{"op": 9, "event": "E"}"#.to_vec(), "unknown_op"),
        (br#"[0, "x", "EV"]"#.to_vec(), "invalid_frame"),
        (
            br#"[0, "x", "EV", null, {"target": "GROUP", "identifier": "g"}]"#.to_vec(),
            "invalid_frame",
        ),
        (
            br#"{"op": 0, "event": "E", "intent": {"target": "SOMEWHERE"}}"#.to_vec(),
            "invalid_intent",
        ),
        (
            br#"{"op": 0, "event": "E", "intent": {"target": "GROUP"}}"#.to_vec(),
            "invalid_intent",
        ),
    ];
    for (body, code) in cases {
        let resp = post(&app, "/api/publish", Some(ADMIN_TOKEN), body.clone()).await;
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&body));
        assert_api_error(&resp, 400, code);
    }
    // Wrong method.
    let resp = http("GET", &format!("{}/api/publish", app.http_url), Some(ADMIN_TOKEN), None).await;
    assert_api_error(&resp, 405, "method_not_allowed");
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn publish_above_max_frame_bytes_is_413_too_big() {
    let app = admin_app().await;
    let (mut a, _) = app.identified(&["g"]).await;
    let frame = |size: usize| {
        json!({"op": 0, "id": "big", "event": "E", "data": "x".repeat(size), "intent": {"target": "GROUP", "identifier": "g"}})
            .to_string()
    };
    let at_limit = frame(1024 - frame(0).len());
    assert_eq!(at_limit.len(), 1024);
    let resp = post(&app, "/api/publish", Some(ADMIN_TOKEN), at_limit).await;
    assert_eq!(resp.status, 202);
    assert_eq!(a.recv_frame().await.unwrap()["id"], "big");

    let resp = post(&app, "/api/publish", Some(ADMIN_TOKEN), frame(1025 - frame(0).len())).await;
    assert_api_error(&resp, 413, "too_big");
    let resp = post(&app, "/api/publish", Some(ADMIN_TOKEN), frame(200_000)).await;
    assert_api_error(&resp, 413, "too_big");
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn disconnect_sends_the_session_disconnect_4009_then_close_4009() {
    let app = admin_app().await;
    let (mut a, a_id) = app.identified(&["g"]).await;
    let (mut b, _) = app.identified(&["g"]).await;
    let before = metrics_text(&app.http_url).await;

    let resp = post(
        &app,
        "/api/disconnect",
        Some(ADMIN_TOKEN),
        json!({"session": a_id}).to_string(),
    )
    .await;
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"session": a_id, "code": 4009}))
    );
    assert_eq!(a.recv_close(WAIT).await.unwrap(), (Some(4009), Some(4009)));

    // b is untouched and a is gone from routing at once.
    let (mut c, _) = app.identified(&["g"]).await;
    c.send_json(&json!({"op": 0, "id": "after", "event": "E", "intent": {"target": "GROUP", "identifier": "g"}}))
        .await
        .unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["id"], "after");
    let resp = post(
        &app,
        "/api/disconnect",
        Some(ADMIN_TOKEN),
        json!({"session": a_id}).to_string(),
    )
    .await;
    assert_api_error(&resp, 404, "unknown_session");

    let after = metrics_text(&app.http_url).await;
    let series = "socket_hub_disconnects_total{code=\"4009\",reason=\"kicked\"}";
    assert_eq!(sample(&after, series) - sample(&before, series), 1.0);
}

#[actix_web::test]
async fn disconnect_of_an_unknown_session_is_404_unknown_session() {
    let app = admin_app().await;
    let (mut a, _) = app.identified(&["g"]).await;
    for session in [
        uuid::Uuid::new_v4().to_string(),
        "not-a-session".to_owned(),
        String::new(),
    ] {
        let resp = post(
            &app,
            "/api/disconnect",
            Some(ADMIN_TOKEN),
            json!({"session": session}).to_string(),
        )
        .await;
        assert_api_error(&resp, 404, "unknown_session");
    }
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn disconnect_bad_bodies_are_400_invalid_body_and_huge_ones_413() {
    let app = admin_app().await;
    let (mut a, a_id) = app.identified(&["g"]).await;
    let cases: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        br#"{"session": 5}"#.to_vec(),
        br#"{"session": null}"#.to_vec(),
        br#"{"id": "x"}"#.to_vec(),
        format!("\"{a_id}\"").into_bytes(),
        format!("[\"{a_id}\"]").into_bytes(),
    ];
    for body in cases {
        let resp = post(&app, "/api/disconnect", Some(ADMIN_TOKEN), body.clone()).await;
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&body));
        assert_api_error(&resp, 400, "invalid_body");
    }
    let huge = json!({"session": a_id, "pad": "x".repeat(10_000)}).to_string();
    assert_api_error(
        &post(&app, "/api/disconnect", Some(ADMIN_TOKEN), huge).await,
        413,
        "too_big",
    );
    assert_silent(&mut a, QUIET).await;
    assert_eq!(app.status().await["connections"]["identified"], 1);
}

// ---- Origin -------------------------------------------------------------------------------

fn upgrade_request(port: u16, origin: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
    )
}

#[actix_web::test]
async fn with_allowed_origins_only_listed_origins_and_clients_without_origin_may_connect() {
    let app = spawn_app_with(|s| {
        s.server.allowed_origins = vec!["https://app.example.com".into(), "http://localhost:3000".into()];
    })
    .await;
    let mut kept = Vec::new();
    for origin in ["https://app.example.com", "http://localhost:3000"] {
        let mut listed = RawSession::connect(&app.ws_url, &[("Origin", origin)])
            .await
            .expect("listed origin");
        listed.identify(ANY_TOKEN, &["o"]).await;
        kept.push(listed);
    }
    let mut service = app.connect().await; // no Origin header
    service.identify(SVC_TOKEN, Some(&["g1"])).await.unwrap();

    for origin in [
        "https://evil.example.com",
        "https://app.example.com:8443",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        match RawSession::connect(&app.ws_url, &[("Origin", origin)]).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403, "{origin}"),
            Err(e) => panic!("{origin}: {e}"),
            Ok(_) => panic!("{origin} was let in"),
        }
        let (status, body) = raw_http(&format!("127.0.0.1:{}", app.port), &upgrade_request(app.port, origin)).await;
        let body: Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(status, 403);
        assert_eq!(body["code"], "forbidden_origin", "{body}");
        assert!(body["message"].is_string());
    }
    let status = app.status().await;
    assert_eq!(status["connections"], json!({"total": 3, "identified": 3}));
}

#[actix_web::test]
async fn without_allowed_origins_any_origin_may_connect() {
    let app = spawn_app().await;
    let mut s = RawSession::connect(&app.ws_url, &[("Origin", "https://anything.example")])
        .await
        .expect("any origin");
    s.identify(ANY_TOKEN, &[]).await;
}

// ---- trusted proxies, seen in the hub's log lines -------------------------------------------

#[actix_web::test]
async fn forwarding_headers_from_a_trusted_proxy_name_the_client_in_the_log() {
    let hub = HubProcess::start("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]").await;
    // The nearest untrusted hop is the client; an earlier (spoofable) one is not.
    let mut a = RawSession::connect(
        &hub.ws_url(),
        &[("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3")],
    )
    .await
    .unwrap();
    let a_id = a.identify(PROCESS_TOKEN, &["g"]).await;
    let mut b = RawSession::connect(
        &hub.ws_url(),
        &[("Forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
    )
    .await
    .unwrap();
    let b_id = b.identify(PROCESS_TOKEN, &["g"]).await;
    // No header: the proxy itself.
    let mut c = Client::connect(&hub.ws_url()).await.unwrap();
    let c_id = c.identify(PROCESS_TOKEN, Some(&["g"])).await.unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(
        hub.wait_for_msg(&format!("connect: session {a_id} ")).await,
        format!("connect: session {a_id} peer 203.0.113.9")
    );
    assert_eq!(
        hub.wait_for_msg(&format!("identify: session {a_id} ")).await,
        format!("identify: session {a_id} service svc peer 203.0.113.9 groups [g]")
    );
    assert_eq!(
        hub.wait_for_msg(&format!("identify: session {b_id} ")).await,
        format!("identify: session {b_id} service svc peer 2001:db8::7 groups [g]")
    );
    let c_line = hub.wait_for_msg(&format!("identify: session {c_id} ")).await;
    assert!(
        c_line.starts_with(&format!("identify: session {c_id} service svc peer 127.0.0.1:")),
        "{c_line}"
    );

    c.close().await.unwrap();
    let line = hub.wait_for_msg(&format!("disconnect: session {c_id} ")).await;
    assert!(
        line.starts_with(&format!("disconnect: session {c_id} service svc peer 127.0.0.1:")) && line.contains(" code "),
        "{line}"
    );
    drop(a);
    assert_eq!(
        hub.wait_for_msg(&format!("disconnect: session {a_id} ")).await,
        format!("disconnect: session {a_id} service svc peer 203.0.113.9 code 1006 connection_lost")
    );
    hub.assert_log_is_json_without_token();
}

#[actix_web::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let hub = HubProcess::start("").await;
    let mut a = RawSession::connect(
        &hub.ws_url(),
        &[("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.10")],
    )
    .await
    .unwrap();
    let a_id = a.identify(PROCESS_TOKEN, &["g"]).await;
    let line = hub.wait_for_msg(&format!("identify: session {a_id} ")).await;
    let peer = line
        .strip_prefix(&format!("identify: session {a_id} service svc peer "))
        .and_then(|rest| rest.strip_suffix(" groups [g]"))
        .unwrap_or_else(|| panic!("{line}"));
    let peer: std::net::SocketAddr = peer.parse().unwrap_or_else(|_| panic!("{line}"));
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
    hub.assert_log_is_json_without_token();
}

// ---- nginx --------------------------------------------------------------------------------

/// The seconds of `directive` inside `location = /ws { ... }`.
fn ws_location_seconds(conf: &str, directive: &str) -> u64 {
    let block = conf
        .split("location = /ws {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("a location = /ws block");
    let value = block
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(directive))
        .unwrap_or_else(|| panic!("{directive} in location = /ws"));
    let value = value.trim().trim_end_matches(';');
    value.strip_suffix('s').unwrap_or(value).parse().expect("seconds")
}

#[test]
fn the_nginx_config_keeps_websockets_open_longer_than_the_heartbeat_timeout() {
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
    let defaults =
        socket_hub::settings::Settings::load_from(Path::new("/nonexistent"), None, None, Vec::new()).unwrap();
    let timeout = defaults.heartbeat.timeout_ms / 1000;
    assert_eq!(timeout, 45);
    assert!(ws_location_seconds(&conf, "proxy_read_timeout") > timeout);
    assert!(ws_location_seconds(&conf, "proxy_send_timeout") > timeout);
    assert!(conf.contains("proxy_buffering off;"));
}

#[actix_web::test]
async fn through_nginx_sessions_identify_route_and_the_hub_sees_the_forwarded_client() {
    let Some(bin) = tool("nginx", "nginx-light") else {
        return;
    };
    let hub = HubProcess::start("[server]\ntrusted_proxies = [\"127.0.0.1\"]").await;
    let nginx = Nginx::start(&bin, hub.port).await;

    // a says where it comes from; nginx appends its own peer (127.0.0.1).
    let mut a = RawSession::connect(&nginx.ws_url(), &[("X-Forwarded-For", "203.0.113.9")])
        .await
        .unwrap_or_else(|e| panic!("upgrade through nginx: {e}\n{}", nginx.error_log()));
    let a_id = a.identify(PROCESS_TOKEN, &["room"]).await;
    let mut b = Client::connect(&nginx.ws_url()).await.unwrap();
    let b_id = b.identify(PROCESS_TOKEN, Some(&["room"])).await.unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned();

    // Routing both ways through the proxy.
    let intent = json!({"target": "GROUP", "identifier": "room"});
    b.send_json(&json!({"op": 0, "id": "via-nginx", "event": "E", "data": {"n": 1}, "intent": intent}))
        .await
        .unwrap();
    assert_eq!(
        a.recv().await,
        json!({"id": "via-nginx", "op": 0, "event": "E", "data": {"n": 1}, "intent": intent, "source": {"session": b_id, "service": "svc"}})
    );
    let direct = json!({"target": "DIRECT", "identifier": b_id});
    a.send(&json!({"op": 0, "id": "back", "event": "E", "intent": direct}))
        .await;
    assert_eq!(
        b.recv_frame().await.unwrap(),
        json!({"id": "back", "op": 0, "event": "E", "intent": direct, "source": {"session": a_id, "service": "svc"}})
    );
    // PING/PONG through the proxy.
    a.send(&json!({"op": 3, "id": "p"})).await;
    assert_eq!(a.recv().await, json!({"op": 4, "id": "p"}));

    // The hub saw the client nginx forwarded: a's own claim, b's address as
    // nginx saw it (no port: it came from the header, not the socket).
    assert_eq!(
        hub.wait_for_msg(&format!("identify: session {a_id} ")).await,
        format!("identify: session {a_id} service svc peer 203.0.113.9 groups [room]")
    );
    assert_eq!(
        hub.wait_for_msg(&format!("identify: session {b_id} ")).await,
        format!("identify: session {b_id} service svc peer 127.0.0.1 groups [room]")
    );

    // HTTP endpoints through the proxy.
    let status = http("GET", &format!("{}/status", nginx.http_url()), None, None).await;
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["connections"], json!({"total": 2, "identified": 2}));
    assert_eq!(status["groups"], json!({"room": 2}));
    assert_eq!(status["services"], json!({"svc": 2}));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http("GET", &format!("{}{path}", nginx.http_url()), None, None)
                .await
                .status,
            200,
            "{path}"
        );
    }
    let metrics = http("GET", &format!("{}/metrics", nginx.http_url()), None, None).await;
    assert_eq!(metrics.status, 200);
    assert_eq!(sample(&metrics.text(), "socket_hub_sessions_identified"), 2.0);
    // The admin API stays disabled (no admin.token) even from an allowed address.
    let resp = http(
        "POST",
        &format!("{}/api/publish", nginx.http_url()),
        None,
        Some(b"{}".to_vec()),
    )
    .await;
    assert_api_error(&resp, 403, "admin_disabled");
    assert_eq!(
        http("GET", &format!("{}/nope", nginx.http_url()), None, None)
            .await
            .status,
        404
    );

    hub.assert_log_is_json_without_token();
}

// ---- Docker -------------------------------------------------------------------------------

/// Run by `tests/docker/run.sh` against the image it started, with a mounted
/// `--config` defining the service `orders` (groups `docker`) whose token
/// comes from an env var; without `SOCKET_HUB_DOCKER_URL` there is nothing
/// to test here.
#[actix_web::test]
async fn through_the_docker_image_a_session_identifies_routes_and_reads_status() {
    let Ok(base) = std::env::var("SOCKET_HUB_DOCKER_URL") else {
        eprintln!("skipped: SOCKET_HUB_DOCKER_URL is unset (tests/docker/run.sh runs this test against the image)");
        return;
    };
    let token = std::env::var("SOCKET_HUB_DOCKER_TOKEN").expect("SOCKET_HUB_DOCKER_TOKEN");
    let ws_url = format!("{}/ws", base.replacen("http://", "ws://", 1));

    let mut a = Client::connect(&ws_url).await.unwrap();
    let a_data = a.identify(&token, Some(&["docker"])).await.unwrap();
    assert_eq!(
        (a_data["service"].as_str(), a_data["groups"].clone()),
        (Some("orders"), json!(["docker"]))
    );
    let a_id = a_data["session"].as_str().unwrap().to_owned();
    let mut b = Client::connect(&ws_url).await.unwrap();
    b.identify(&token, Some(&["docker"])).await.unwrap();

    let intent = json!({"target": "GROUP", "identifier": "docker"});
    a.send_json(&json!({"op": 0, "id": "in-docker", "event": "E", "data": {"n": 1}, "intent": intent}))
        .await
        .unwrap();
    assert_eq!(
        b.recv_frame().await.unwrap(),
        json!({"id": "in-docker", "op": 0, "event": "E", "data": {"n": 1}, "intent": intent, "source": {"session": a_id, "service": "orders"}})
    );
    assert_silent(&mut a, QUIET).await;

    let status = http("GET", &format!("{base}/status"), None, None).await;
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["connections"], json!({"total": 2, "identified": 2}), "{status}");
    assert_eq!(status["groups"], json!({"docker": 2}));
    assert_eq!(status["services"], json!({"orders": 2}));

    // HUB_ENV=production: the demo token is refused.
    let mut demo = Client::connect(&ws_url).await.unwrap();
    demo.send_json(&json!({"op": 1, "id": "d", "data": {"token": "demo-token"}}))
        .await
        .unwrap();
    assert_error(&demo.recv_frame().await.unwrap(), "auth_failed", Some("d"));
    assert_eq!(demo.recv_close(WAIT).await.unwrap(), (Some(4004), Some(4004)));
}
