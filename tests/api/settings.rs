//! The real binary and its settings (PROTOCOL.md §12), run as a subprocess.
//! The helpers here are also used by `shutdown.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use socket_hub::client::{Client, WAIT};
use tempfile::TempDir;

use crate::helpers::*;

/// Longest a process may take to exit, or to start serving.
const PROCESS_WAIT: Duration = Duration::from_secs(15);

/// A free port on 127.0.0.1: bound, read, released.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds port 0");
    listener.local_addr().expect("local addr").port()
}

/// The repository, where `settings/default.toml` and
/// `settings/production.toml` live.
pub fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binary, run in `cwd`, with no `HUB_ENV`, `HUB_CONFIG` nor `HUB__*`
/// inherited.
pub fn hub_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_socket-hub"));
    cmd.current_dir(cwd)
        .env_remove("HUB_ENV")
        .env_remove("HUB_CONFIG")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUB__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running hub process, killed when dropped. Its stdout and stderr go to
/// files, so that it can never block on a full pipe.
pub struct HubProcess {
    child: Child,
    logs: TempDir,
}

impl HubProcess {
    pub fn spawn(mut cmd: Command) -> Self {
        let logs = tempfile::tempdir().expect("tempdir");
        let out = File::create(logs.path().join("stdout")).expect("stdout file");
        let err = File::create(logs.path().join("stderr")).expect("stderr file");
        let child = cmd.stdout(out).stderr(err).spawn().expect("the binary starts");
        HubProcess { child, logs }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {within:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `GET /healthz` on `port` answers 200, at most
    /// [`PROCESS_WAIT`]; fails at once if the process exits.
    pub async fn wait_healthy(&mut self, port: u16) {
        let deadline = Instant::now() + PROCESS_WAIT;
        let client = awc::Client::new();
        loop {
            if let Some(status) = self.try_status() {
                panic!("the hub exited ({status}) before serving; stderr:\n{}", self.stderr());
            }
            let request = client.get(format!("http://127.0.0.1:{port}/healthz")).send();
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), request).await {
                assert_eq!(response.status().as_u16(), 200, "/healthz");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz did not answer within {PROCESS_WAIT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Serves on a free port of 127.0.0.1 from `cmd`; returns once `/healthz`
/// answers.
pub async fn serve(mut cmd: Command) -> (HubProcess, u16) {
    let port = free_port();
    cmd.env("HUB__SERVER__HOST", "127.0.0.1")
        .env("HUB__SERVER__PORT", port.to_string());
    let mut hub = HubProcess::spawn(cmd);
    hub.wait_healthy(port).await;
    (hub, port)
}

/// Runs the binary to its exit; returns the exit code, stdout and stderr.
async fn run_to_exit(cmd: Command) -> (Option<i32>, String, String) {
    let mut process = HubProcess::spawn(cmd);
    let status = process.wait_exit(PROCESS_WAIT).await;
    (status.code(), process.stdout(), process.stderr())
}

/// A temp dir without `settings/`, holding `extra.toml` with `config`.
fn dir_with_config(config: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("extra.toml");
    std::fs::write(&path, config).expect("writes the config");
    (dir, path)
}

/// Runs the binary with `--config` holding `config`, in a dir without
/// `settings/`, and asserts exit code 2 with `key` named on stderr.
async fn assert_config_refused(config: &str, key: &str) {
    let (dir, path) = dir_with_config(config);
    let mut cmd = hub_command(dir.path());
    cmd.arg("--config").arg(&path);
    let (code, _, stderr) = run_to_exit(cmd).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains(key), "stderr does not name {key}: {stderr}");
}

/// Runs the binary with the environment variable `var=value`, in a dir
/// without `settings/`, and asserts exit code 2 with each of `named` on
/// stderr.
async fn assert_env_refused(var: &str, value: &str, named: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hub_command(dir.path());
    cmd.env(var, value);
    let (code, _, stderr) = run_to_exit(cmd).await;
    assert_eq!(code, Some(2), "{var}={value}: stderr: {stderr}");
    for name in named {
        assert!(stderr.contains(name), "stderr does not name {name}: {stderr}");
    }
}

/// Identifies with `token` and returns the service name it was accepted as.
async fn accepted_as(port: u16, token: &str) -> String {
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("connects");
    let data = client.identify(token, None).await.expect("identifies");
    data["service"].as_str().expect("service").to_owned()
}

/// Asserts that `token` gets `auth_failed` then `DISCONNECT 4004`.
async fn assert_refused(port: u16, token: &str) {
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("connects");
    client
        .send_json(&json!({"op": 1, "id": "x1", "data": {"token": token}}))
        .await
        .unwrap();
    assert_error(&client.recv_frame().await.unwrap(), "auth_failed", Some("x1"));
    assert_eq!(client.recv_close(WAIT).await.unwrap(), (Some(4004), Some(4004)));
}

#[actix_web::test]
async fn an_unknown_key_in_the_config_file_exits_2_naming_the_key() {
    assert_config_refused("[limits]\nrate_per_seconds = 5\n", "rate_per_seconds").await;
    assert_config_refused("[bogus]\nx = 1\n", "bogus").await;
}

#[actix_web::test]
async fn a_host_that_is_neither_an_address_nor_a_name_exits_2() {
    assert_config_refused("[server]\nhost = \"999.1.1.1\"\n", "server.host").await;
}

#[actix_web::test]
async fn a_value_of_the_wrong_type_exits_2_naming_the_key() {
    assert_config_refused("[limits]\nrate_per_sec = \"fast\"\n", "limits.rate_per_sec").await;
}

#[actix_web::test]
async fn a_value_is_never_converted_to_the_type_of_its_key() {
    assert_config_refused("[server]\nport = true\n", "server.port").await;
    assert_config_refused("[heartbeat]\ninterval_ms = 1.5\n", "heartbeat.interval_ms").await;
    assert_env_refused(
        "HUB__LIMITS__RATE_PER_SEC",
        "yes",
        &["limits.rate_per_sec", "HUB__LIMITS__RATE_PER_SEC"],
    )
    .await;
}

#[actix_web::test]
async fn a_websocket_path_that_is_not_a_plain_path_exits_2_naming_the_key() {
    for path in ["/ws{", "/status"] {
        assert_env_refused("HUB__SERVER__WS_PATH", path, &["server.ws_path"]).await;
    }
}

#[actix_web::test]
async fn a_token_from_the_environment_is_kept_exactly_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hub_command(dir.path());
    cmd.env("HUB__ADMIN__TOKEN", "0123");
    let (_hub, port) = serve(cmd).await;
    let request = awc::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/disconnect"))
        .insert_header(("Authorization", "Bearer 0123"))
        .send_json(&json!({"session": uuid::Uuid::new_v4().to_string()}));
    let response = tokio::time::timeout(WAIT, request)
        .await
        .expect("answers in time")
        .expect("request succeeds");
    // Past the token check: the session is unknown.
    assert_eq!(response.status().as_u16(), 404);
}

#[actix_web::test]
async fn a_variable_that_is_not_utf8_exits_2_naming_it_without_showing_it() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hub_command(dir.path());
    cmd.env("HUB__ADMIN__TOKEN", OsStr::from_bytes(b"s3cr3t\xff"));
    let (code, _, stderr) = run_to_exit(cmd).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("HUB__ADMIN__TOKEN"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "the value is shown: {stderr}");
    // Variables that are not the hub's are not read: the start goes on to
    // the next complaint.
    let mut cmd = hub_command(dir.path());
    cmd.env("UNRELATED", OsStr::from_bytes(b"\xff"));
    cmd.env("HUB__SERVER__PORT", "x");
    let (code, _, stderr) = run_to_exit(cmd).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("server.port"), "{stderr}");
}

#[actix_web::test]
async fn an_empty_token_exits_2_naming_it() {
    assert_config_refused(
        "[[services]]\nname = \"orders\"\ntoken = \"\"\ngroups = [\"o\"]\n",
        "services[0].token",
    )
    .await;
}

#[actix_web::test]
async fn a_zero_rate_burst_from_the_environment_exits_2_naming_the_key() {
    assert_env_refused("HUB__LIMITS__RATE_BURST", "0", &["limits.rate_burst"]).await;
}

#[actix_web::test]
async fn a_service_without_a_token_exits_2_naming_it() {
    assert_config_refused(
        "[[services]]\nname = \"orders\"\ngroups = [\"o\"]\n",
        "services[0].token",
    )
    .await;
}

#[actix_web::test]
async fn an_invalid_group_pattern_exits_2_naming_the_key() {
    assert_config_refused(
        "[[services]]\nname = \"orders\"\ntoken = \"t\"\ngroups = [\"ok\", \"not ok\"]\n",
        "services[0].groups[1]",
    )
    .await;
}

#[actix_web::test]
async fn a_hub_env_without_its_file_exits_2_naming_hub_env() {
    assert_env_refused("HUB_ENV", "nope", &["HUB_ENV"]).await;
}

#[actix_web::test]
async fn help_lists_the_config_flag_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hub_command(dir.path());
    cmd.arg("--help");
    let (code, stdout, stderr) = run_to_exit(cmd).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stdout.contains("--config"), "{stdout}");
}

#[actix_web::test]
async fn hub_config_names_the_config_file_for_the_server_and_for_healthcheck() {
    let port = free_port();
    let (dir, path) = dir_with_config(&format!("[server]\nhost = \"127.0.0.1\"\nport = {port}\n"));
    let mut cmd = hub_command(dir.path());
    cmd.env("HUB_CONFIG", &path);
    let mut hub = HubProcess::spawn(cmd);
    hub.wait_healthy(port).await;

    let mut check = hub_command(dir.path());
    check.env("HUB_CONFIG", &path).arg("healthcheck");
    let (code, _, stderr) = run_to_exit(check).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");

    // `--config` wins over HUB_CONFIG; here it names a port nobody serves.
    let idle = free_port();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, format!("[server]\nport = {idle}\n")).unwrap();
    let mut check = hub_command(dir.path());
    check
        .env("HUB_CONFIG", &path)
        .arg("--config")
        .arg(&other)
        .arg("healthcheck");
    let (code, _, stderr) = run_to_exit(check).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{idle}/healthz")), "{stderr}");
    assert!(hub.try_status().is_none(), "still serving");
}

#[actix_web::test]
async fn an_environment_variable_overrides_the_port() {
    let dir = tempfile::tempdir().unwrap();
    // `serve` passes HUB__SERVER__PORT and waits for /healthz on that port.
    let (mut hub, port) = serve(hub_command(dir.path())).await;
    let (code, body) = http_get(port, "/readyz").await;
    assert_eq!((code, body), (200, json!({"status": "ready"})));
    assert!(hub.try_status().is_none(), "still serving");
}

#[actix_web::test]
async fn a_config_file_with_services_replaces_the_demo_service() {
    let (dir, path) = dir_with_config("");
    let token_file = dir.path().join("file-token");
    std::fs::write(&token_file, "from-a-file\n").unwrap();
    let config = format!(
        "[[services]]\nname = \"orders\"\ntoken = \"orders-token\"\ngroups = [\"o\"]\n\n\
         [[services]]\nname = \"from-env\"\ntoken_env = \"SOCKET_HUB_TEST_TOKEN\"\ngroups = [\"*\"]\n\n\
         [[services]]\nname = \"from-file\"\ntoken_file = {:?}\ngroups = [\"*\"]\n",
        token_file.display().to_string()
    );
    std::fs::write(&path, config).unwrap();
    let mut cmd = hub_command(dir.path());
    cmd.arg("--config")
        .arg(&path)
        .env("SOCKET_HUB_TEST_TOKEN", "from-the-env");
    let (_hub, port) = serve(cmd).await;
    assert_refused(port, "demo-token").await;
    assert_eq!(accepted_as(port, "orders-token").await, "orders");
    assert_eq!(accepted_as(port, "from-the-env").await, "from-env");
    assert_eq!(accepted_as(port, "from-a-file").await, "from-file");
    assert_refused(port, "from-a-file\n").await;
}

#[actix_web::test]
async fn production_never_accepts_the_demo_token() {
    // From the repository, with settings/production.toml on disk.
    let mut cmd = hub_command(repo_dir());
    cmd.env("HUB_ENV", "production");
    let (_hub, port) = serve(cmd).await;
    assert_refused(port, "demo-token").await;

    // Anywhere (production is built in), even with the demo token configured
    // again.
    let (dir, path) = dir_with_config(
        "[[services]]\nname = \"demo\"\ntoken = \"demo-token\"\ngroups = [\"*\"]\n\n\
         [[services]]\nname = \"ops\"\ntoken = \"ops-token\"\ngroups = [\"*\"]\n",
    );
    let mut cmd = hub_command(dir.path());
    cmd.env("HUB_ENV", "production").arg("--config").arg(&path);
    let (_hub, port) = serve(cmd).await;
    assert_refused(port, "demo-token").await;
    assert_eq!(accepted_as(port, "ops-token").await, "ops");
}

/// GETs a path of the hub on `port`; the status and the JSON body (or Null).
pub async fn http_get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let request = awc::Client::new().get(format!("http://127.0.0.1:{port}{path}")).send();
    let mut response = tokio::time::timeout(WAIT, request)
        .await
        .expect("answers in time")
        .expect("request succeeds");
    let body = response.body().await.expect("body");
    (
        response.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}
