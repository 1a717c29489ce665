//! Starting and stopping the hub under test: the release `socket-hub`
//! binary next to the tool, on a free port, with benchmark settings given as
//! `HUB__*` environment variables (PROTOCOL.md §12).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings for a benchmark: rate limits out of the way, heartbeats far
/// apart, quiet logs (a log line per connect costs the hub CPU), a quick
/// drain at the end. `--hub-env` entries come after these and win.
pub const BENCH_ENV: &[(&str, &str)] = &[
    ("HUB__SERVER__HOST", "127.0.0.1"),
    ("HUB__LIMITS__RATE_PER_SEC", "100000000"),
    ("HUB__LIMITS__RATE_BURST", "100000000"),
    ("HUB__LIMITS__CONNECT_RATE_PER_SEC", "10000000"),
    ("HUB__LIMITS__MAX_CONNECTIONS", "1000000"),
    ("HUB__LIMITS__IDENTIFY_TIMEOUT_MS", "600000"),
    ("HUB__HEARTBEAT__INTERVAL_MS", "3600000"),
    ("HUB__HEARTBEAT__TIMEOUT_MS", "7200000"),
    ("HUB__SHUTDOWN__DRAIN_MS", "100"),
    ("RUST_LOG", "warn"),
];

/// How long the hub may take to answer `/readyz` after it is started.
const START_WAIT: Duration = Duration::from_secs(15);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A hub process the tool started; stopped when dropped.
pub struct HubProcess {
    child: Child,
    pub port: u16,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// `socket-hub` in the directory of the running binary.
pub fn default_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let path = exe.with_file_name("socket-hub");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release` first, or pass --hub-bin or --url",
            path.display()
        ))
    }
}

/// Raises this process's open-file limit to `want` if allowed (root), else
/// to its hard limit; the hub started from here inherits it. The hub holds
/// one descriptor per connection and the tool another, both in this limit's
/// range. Returns the limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return 0;
    }
    if now.rlim_cur >= want {
        return now.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(now.rlim_max),
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let soft = libc::rlimit {
        rlim_cur: now.rlim_max,
        rlim_max: now.rlim_max,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        now.rlim_max
    } else {
        now.rlim_cur
    }
}

/// A port that was free a moment ago (bind port 0, read it, let it go).
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl HubProcess {
    /// Starts `bin` on a free port and waits until `/readyz` answers 200.
    pub fn start(bin: &Path, extra_env: &[(String, String)]) -> Result<Self, String> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("socket-hub-bench-{}.log", std::process::id()));
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.env_remove("HUB_ENV")
            .envs(BENCH_ENV.iter().copied())
            .env("HUB__SERVER__PORT", port.to_string())
            .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut hub = HubProcess { child, port, log };
        hub.wait_ready()?;
        Ok(hub)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < START_WAIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the hub exited at start ({status}); its log: {}",
                    self.log.display()
                ));
            }
            if http_get_status(self.port, "/readyz") == Some(200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "the hub did not become ready within {START_WAIT:?}; its log: {}",
            self.log.display()
        ))
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_WAIT`].
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < STOP_WAIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` on 127.0.0.1:port with a one-second budget; the status code.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let budget = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), budget).ok()?;
    stream.set_read_timeout(Some(budget)).ok()?;
    stream.set_write_timeout(Some(budget)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    parse_status_line(std::str::from_utf8(&head[..n]).ok()?)
}

/// The code of an HTTP status line (`HTTP/1.1 200 OK`).
fn parse_status_line(text: &str) -> Option<u16> {
    let mut words = text.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_gives_its_code() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(""), None);
    }

    #[test]
    fn the_bench_settings_name_real_keys() {
        // Every HUB__ key the tool sets must load, or the hub would exit 2.
        let vars = BENCH_ENV
            .iter()
            .filter(|(k, _)| k.starts_with("HUB__"))
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = crate::settings::Settings::load_from(Path::new("/nonexistent"), None, None, vars)
            .expect("bench settings load");
        assert_eq!(
            (
                s.limits.rate_per_sec,
                s.limits.connect_rate_per_sec,
                s.heartbeat.interval_ms
            ),
            (100_000_000, 10_000_000, 3_600_000)
        );
    }
}
