//! The hub as its own process (the built `socket-hub` binary), for tests
//! that read its resident memory from `/proc/<pid>/status` without the
//! test's own buffers mixing in.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket_hub::client::WAIT;

/// The token of the one service in the hub's config (`groups = ["*"]`).
pub const TOKEN: &str = "flood-token";

/// The `socket-hub` binary, killed when dropped; its log is printed if the
/// test fails.
pub struct HubProcess {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl HubProcess {
    pub fn start(extra_env: &[(&str, &str)]) -> HubProcess {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binds a free port");
            listener.local_addr().expect("has an address").port()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("hub.toml");
        std::fs::write(
            &config,
            format!("[[services]]\nname = \"flood\"\ntoken = \"{TOKEN}\"\ngroups = [\"*\"]\n"),
        )
        .expect("writes the config");
        let log = std::fs::File::create(dir.path().join("hub.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_socket-hub"));
        cmd.arg("--config")
            .arg(&config)
            // No settings/default.toml or settings/<HUB_ENV>.toml on disk here.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HUB") {
                cmd.env_remove(key);
            }
        }
        let port_s = port.to_string();
        let base = [
            ("RUST_LOG", "info"),
            ("HUB__SERVER__HOST", "127.0.0.1"),
            ("HUB__SERVER__PORT", port_s.as_str()),
            ("HUB__SERVER__WORKERS", "2"),
            // No heartbeat PINGs in the middle of a test.
            ("HUB__HEARTBEAT__INTERVAL_MS", "60000"),
            ("HUB__HEARTBEAT__TIMEOUT_MS", "120000"),
            // Clients are limited by TCP only.
            ("HUB__LIMITS__RATE_PER_SEC", "100000000"),
            ("HUB__LIMITS__RATE_BURST", "100000000"),
            ("HUB__LIMITS__CLOSE_GRACE_MS", "100"),
        ];
        for (key, value) in base.iter().chain(extra_env) {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("socket-hub starts");
        HubProcess { child, port, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("socket-hub exited early ({status}):\n{}", self.log());
            }
            let answer = awc::Client::new()
                .get(self.http_url("/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().as_u16() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "socket-hub not ready in 15 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        serde_json::from_slice(&self.get("/status").await).expect("/status is JSON")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await).expect("/metrics is text")
    }

    /// The body of `GET path`, which must answer 200 in time.
    async fn get(&self, path: &str) -> Vec<u8> {
        let mut resp = tokio::time::timeout(WAIT, awc::Client::new().get(self.http_url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("{path} answers in time"))
            .unwrap_or_else(|e| panic!("{path} request fails: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.body().await.expect("the body").to_vec()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- socket-hub log (last 40 lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
/// `None` once the process has exited.
pub fn try_proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
}

pub fn proc_kib(pid: u32, field: &str) -> u64 {
    try_proc_kib(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status: has socket-hub exited?"))
}
