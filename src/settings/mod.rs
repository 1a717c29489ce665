//! The settings tree and its layered loading (PROTOCOL.md §12).
//!
//! Layers, later wins: the `settings/default.toml` compiled into the binary,
//! that file on disk when present, `settings/<HUB_ENV>.toml`, the `--config`
//! file, then `HUB__<SECTION>__<KEY>` environment variables. A layer that
//! defines `[[services]]` replaces the whole list of the layers before it.
//! Every struct denies unknown keys, so a typo stops the start with the key
//! named instead of being silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod env;

use config::{Config, File, FileFormat};
use serde::Deserialize;

use crate::GroupName;

/// The commented default settings, also shipped as `settings/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../settings/default.toml");
/// The production overlay, also shipped as `settings/production.toml`.
pub const PRODUCTION_TOML: &str = include_str!("../../settings/production.toml");
/// The demo service's token: accepted only outside `HUB_ENV=production`, and
/// a warning is logged while it is active.
pub const DEMO_TOKEN: &str = "demo-token";

/// The most `limits.max_connections`, `limits.max_pending_replies` and
/// `limits.max_groups_per_session` may be.
pub const MAX_COUNT: usize = 1_000_000_000;
/// The longest duration a `*_ms` setting takes: 30 days.
pub const MAX_MS: u64 = 30 * 24 * 3600 * 1000;
/// The longest drain: an hour.
pub const MAX_DRAIN_MS: u64 = 3600 * 1000;
/// actix-server's own limit on worker threads.
pub const MAX_WORKERS: usize = 512;

/// A settings problem, naming the key at fault. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("settings: {key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl SettingsError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        SettingsError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Everything the hub reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub heartbeat: HeartbeatSettings,
    pub limits: Limits,
    pub shutdown: ShutdownSettings,
    pub status: StatusSettings,
    pub admin: AdminSettings,
    pub cluster: ClusterSettings,
    /// The services allowed to identify.
    #[serde(default)]
    pub services: Vec<ServiceSettings>,
    /// The `HUB_ENV` in force when loaded (not a key of the files).
    #[serde(skip)]
    pub env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// The WebSocket path.
    pub ws_path: String,
    /// Origins allowed to open a WebSocket; empty allows any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For`/`Forwarded` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// HTTP worker threads; 0 means one per core but one (the hub's thread).
    #[serde(default)]
    pub workers: usize,
    /// Sessions write in pieces of at most 8 KiB, one at a time, so that the
    /// HTTP layer's write buffer never grows past 8 KiB (less memory per used
    /// session, more CPU at high throughput).
    #[serde(default)]
    pub compact_write_buffers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// How often the hub sends `PING`.
    pub interval_ms: u64,
    /// Silence after which a session is closed with 4006.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Time allowed between connect and `IDENTIFY`.
    pub identify_timeout_ms: u64,
    /// WebSocket sessions at once; more are refused with HTTP 503.
    pub max_connections: usize,
    /// WebSocket upgrades per second; more are refused with HTTP 503.
    pub connect_rate_per_sec: u32,
    /// Bytes queued for one session before it is closed as a slow consumer.
    pub max_outbound_bytes: usize,
    /// Frames a session may send per second (token bucket refill).
    pub rate_per_sec: u32,
    /// Token bucket size.
    pub rate_burst: u32,
    /// How long a `REPLY` to an `EVENT` is accepted.
    pub reply_ttl_ms: u64,
    /// Pending requests remembered at once; the oldest go first.
    pub max_pending_replies: usize,
    /// Groups one `IDENTIFY` may ask for.
    pub max_groups_per_session: usize,
    /// How long a session told to close (slow consumer, kick, shutdown) may
    /// take to flush its `DISCONNECT` before its socket is reset.
    pub close_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Time over which the `DISCONNECT 1001`s are spread.
    pub drain_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSettings {
    /// Bearer token for `/status`; unset leaves it open.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for `/api/*`; unset disables the admin API.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Redis URL for cluster mode; unset runs a single node.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// This node's id; unset picks a random one.
    #[serde(default)]
    pub node_id: Option<String>,
    /// How long a silent node stays in the cluster view.
    pub node_ttl_ms: u64,
}

/// One `[[services]]` entry. Exactly one token source must be given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub name: String,
    #[serde(default)]
    pub token: Option<String>,
    /// Hex SHA-256 of the token, so the secret itself need not be stored.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Name of an environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Path of a file holding the token (trailing newline ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Groups the service may join; `"*"` allows any.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The process's `HUB__*` variables. One that is not valid UTF-8 is an error
/// naming the variable, never showing its value (it may be a token); other
/// variables are not read.
fn hub_vars() -> Result<Vec<(String, String)>, SettingsError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.as_encoded_bytes().starts_with(b"HUB__") {
            continue;
        }
        let Some(name) = name.to_str() else {
            let shown = name.to_string_lossy().into_owned();
            return Err(SettingsError::new(shown, "the variable's name is not valid UTF-8"));
        };
        let Some(value) = value.to_str() else {
            return Err(SettingsError::new(
                name,
                "the variable's value is not valid UTF-8 (not shown)",
            ));
        };
        vars.push((name.to_owned(), value.to_owned()));
    }
    Ok(vars)
}

impl Settings {
    /// Loads every layer from the working directory and the process
    /// environment, then validates.
    pub fn load(config_file: Option<&Path>) -> Result<Self, SettingsError> {
        let env = match std::env::var("HUB_ENV") {
            Ok(env) => Some(env).filter(|e| !e.is_empty()),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => return Err(SettingsError::new("HUB_ENV", "is not valid UTF-8")),
        };
        Self::load_from(Path::new("settings"), env.as_deref(), config_file, hub_vars()?)
    }

    /// Loads with explicit inputs, for tests.
    pub fn load_from(
        dir: &Path,
        hub_env: Option<&str>,
        config_file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut layers: Vec<(String, String)> = vec![("built-in default.toml".into(), DEFAULT_TOML.into())];
        let disk_default = dir.join("default.toml");
        if disk_default.is_file() {
            layers.push(read_layer(&disk_default)?);
        }
        if let Some(env) = hub_env {
            if !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(SettingsError::new("HUB_ENV", format!("{env:?} is not a plain name")));
            }
            let path = dir.join(format!("{env}.toml"));
            if path.is_file() {
                layers.push(read_layer(&path)?);
            } else if env == "production" {
                layers.push(("built-in production.toml".into(), PRODUCTION_TOML.into()));
            } else {
                return Err(SettingsError::new(
                    "HUB_ENV",
                    format!("{} does not exist", path.display()),
                ));
            }
        }
        if let Some(path) = config_file {
            layers.push(read_layer(path)?);
        }

        // `[[services]]` is replaced, not merged: only the last layer that
        // defines it counts.
        let mut services = toml::Value::Array(Vec::new());
        let mut builder = Config::builder();
        for (name, text) in &layers {
            let mut table: toml::Table = text.parse().map_err(|e| syntax_error(name, text, &e))?;
            if let Some(list) = table.remove("services") {
                services = list;
            }
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        // The files, merged; every value keeps the type its file gave it.
        let mut tree: toml::Table = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(config_error)?;
        let from_env = env::apply(&mut tree, vars)?;
        tree.insert("services".into(), services);
        // Types are strict: a string where a number belongs, a number where a
        // string belongs or a fraction where an integer belongs is an error,
        // not converted.
        let mut settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
            let key = match e.path().to_string() {
                root if root == "." => "settings".to_owned(),
                key => key,
            };
            let mut message = if env::is_secret(&key) {
                "must be text in quotes (the value is not shown)".to_owned()
            } else {
                e.into_inner().message().to_owned()
            };
            if let Some(var) = from_env.get(&key) {
                message = format!("{var}: {message}");
            }
            SettingsError::new(key, message)
        })?;
        settings.env = hub_env.map(str::to_owned);
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = [
            ("heartbeat.interval_ms", self.heartbeat.interval_ms),
            ("heartbeat.timeout_ms", self.heartbeat.timeout_ms),
            ("limits.max_frame_bytes", self.limits.max_frame_bytes as u64),
            ("limits.identify_timeout_ms", self.limits.identify_timeout_ms),
            ("limits.max_connections", self.limits.max_connections as u64),
            (
                "limits.connect_rate_per_sec",
                u64::from(self.limits.connect_rate_per_sec),
            ),
            ("limits.max_outbound_bytes", self.limits.max_outbound_bytes as u64),
            ("limits.rate_per_sec", u64::from(self.limits.rate_per_sec)),
            ("limits.rate_burst", u64::from(self.limits.rate_burst)),
            ("limits.reply_ttl_ms", self.limits.reply_ttl_ms),
            ("limits.max_pending_replies", self.limits.max_pending_replies as u64),
            (
                "limits.max_groups_per_session",
                self.limits.max_groups_per_session as u64,
            ),
            ("limits.close_grace_ms", self.limits.close_grace_ms),
            ("cluster.node_ttl_ms", self.cluster.node_ttl_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(SettingsError::new(key, "must be greater than 0"));
            }
        }
        // Counts that size tables and gauges: far above any real hub, and
        // far below where arithmetic on them could overflow.
        let bounded = [
            ("limits.max_connections", self.limits.max_connections),
            ("limits.max_pending_replies", self.limits.max_pending_replies),
            ("limits.max_groups_per_session", self.limits.max_groups_per_session),
        ];
        for (key, value) in bounded {
            if value > MAX_COUNT {
                return Err(SettingsError::new(key, format!("must be at most {MAX_COUNT}")));
            }
        }
        // Durations: beyond these a timer's deadline could overflow, and a
        // drain this long would keep the process from exiting after SIGTERM.
        let durations = [
            ("heartbeat.interval_ms", self.heartbeat.interval_ms, MAX_MS),
            ("heartbeat.timeout_ms", self.heartbeat.timeout_ms, MAX_MS),
            ("limits.identify_timeout_ms", self.limits.identify_timeout_ms, MAX_MS),
            ("limits.reply_ttl_ms", self.limits.reply_ttl_ms, MAX_MS),
            ("limits.close_grace_ms", self.limits.close_grace_ms, MAX_MS),
            ("cluster.node_ttl_ms", self.cluster.node_ttl_ms, MAX_MS),
            ("shutdown.drain_ms", self.shutdown.drain_ms, MAX_DRAIN_MS),
        ];
        for (key, value, max) in durations {
            if value > max {
                return Err(SettingsError::new(key, format!("must be at most {max}")));
            }
        }
        if self.server.workers > MAX_WORKERS {
            return Err(SettingsError::new(
                "server.workers",
                format!("must be at most {MAX_WORKERS} (0: one per core but one)"),
            ));
        }
        if self.heartbeat.timeout_ms <= self.heartbeat.interval_ms {
            return Err(SettingsError::new(
                "heartbeat.timeout_ms",
                format!(
                    "must be greater than heartbeat.interval_ms ({}): a client that answers every PING would be closed before it got one",
                    self.heartbeat.interval_ms
                ),
            ));
        }
        check_ws_path(&self.server.ws_path).map_err(|e| SettingsError::new("server.ws_path", e))?;
        check_host(&self.server.host).map_err(|e| SettingsError::new("server.host", e))?;
        for (key, token) in [("status.token", &self.status.token), ("admin.token", &self.admin.token)] {
            if token.as_deref().is_some_and(blank) {
                return Err(SettingsError::new(key, "must not be empty (leave it unset instead)"));
            }
            if token.as_deref().is_some_and(|t| t.trim() != t) {
                return Err(SettingsError::new(
                    key,
                    "must not begin or end with whitespace: HTTP drops it from the Authorization header, so no request could match",
                ));
            }
        }
        crate::proxy::TrustedProxies::parse(&self.server.trusted_proxies)?;
        for (i, origin) in self.server.allowed_origins.iter().enumerate() {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(SettingsError::new(
                    format!("server.allowed_origins[{i}]"),
                    format!("{origin:?} must be scheme://host[:port], e.g. https://app.example.com"),
                ));
            }
        }
        if self.cluster.redis_url.is_some() {
            return Err(SettingsError::new(
                "cluster.redis_url",
                "cluster mode is not available in this version",
            ));
        }
        if let Some(node) = &self.cluster.node_id {
            if node.is_empty() || node.len() > 64 {
                return Err(SettingsError::new("cluster.node_id", "must be 1 to 64 characters"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, service) in self.services.iter().enumerate() {
            let key = |field: &str| format!("services[{i}].{field}");
            if service.name.is_empty() || service.name.len() > 128 {
                return Err(SettingsError::new(key("name"), "must be 1 to 128 characters"));
            }
            if service.name == "http" {
                return Err(SettingsError::new(
                    key("name"),
                    "\"http\" is reserved for the admin API",
                ));
            }
            if !names.insert(service.name.as_str()) {
                return Err(SettingsError::new(
                    key("name"),
                    format!("{:?} is defined twice", service.name),
                ));
            }
            let sources = [
                service.token.is_some(),
                service.token_sha256.is_some(),
                service.token_env.is_some(),
                service.token_file.is_some(),
            ];
            if service.token.as_deref().is_some_and(blank) {
                return Err(SettingsError::new(key("token"), "must not be empty"));
            }
            match sources.iter().filter(|s| **s).count() {
                0 => {
                    return Err(SettingsError::new(
                        key("token"),
                        "one of token, token_sha256, token_env, token_file is required",
                    ))
                }
                1 => {}
                _ => {
                    return Err(SettingsError::new(
                        key("token"),
                        "give only one of token, token_sha256, token_env, token_file",
                    ))
                }
            }
            for (j, group) in service.groups.iter().enumerate() {
                if group != "*" {
                    GroupName::parse(group).map_err(|e| SettingsError::new(format!("services[{i}].groups[{j}]"), e))?;
                }
            }
        }
        Ok(())
    }

    /// True outside `HUB_ENV=production`: the only place the demo token works.
    pub fn demo_token_allowed(&self) -> bool {
        self.env.as_deref() != Some("production")
    }
}

/// A WebSocket path is a plain path: `/`, then letters, digits and `/_.~-`,
/// with no empty, `.` or `..` segment (clients remove those before sending),
/// and none of the hub's own endpoints, nor a parent of one.
/// An IP address, or a host name to resolve (labels of letters, digits,
/// `-` and `_`, as container names have; a final dot allowed). Digits and
/// dots that are no IPv4 address (`999.1.1.1`) are a typo, not a name.
fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if name.len() <= 253 && !numeric && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is neither an IP address nor a host name (e.g. 0.0.0.0, ::, localhost)"
        ))
    }
}

fn check_ws_path(path: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/_.~-".contains(c);
    let dots = path.split('/').any(|segment| segment == "." || segment == "..");
    if !path.starts_with('/') || path.len() > 256 || !path.chars().all(plain) || path.contains("//") || dots {
        return Err(format!(
            "{path:?} must be a plain path such as /ws: a leading /, then letters, digits and /_.~- (at most 256)"
        ));
    }
    let taken = crate::routes::ENDPOINTS.iter().any(|(endpoint, _)| {
        *endpoint == path || endpoint.strip_prefix(path).is_some_and(|rest| rest.starts_with('/'))
    }) || path.starts_with(crate::routes::API_PREFIX);
    if taken {
        return Err(format!("{path:?} is one of the hub's own endpoints"));
    }
    Ok(())
}

/// True for a token that is empty or only whitespace: never a valid one.
pub fn blank(token: &str) -> bool {
    token.trim().is_empty()
}

/// A layer that is not valid TOML: where and why, without the line itself
/// (it may hold a token).
fn syntax_error(name: &str, text: &str, e: &toml::de::Error) -> SettingsError {
    let at = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    SettingsError::new(name, format!("not valid TOML{at}: {}", e.message().trim_end()))
}

fn read_layer(path: &Path) -> Result<(String, String), SettingsError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::new(name.clone(), e.to_string()))?;
    Ok((name, text))
}

/// Turns config's error into one that names the key.
pub(crate) fn config_error(e: config::ConfigError) -> SettingsError {
    let text = e.to_string();
    // config reports "... for key `limits.rate_per_sec`" or "missing field `x`".
    let key = text
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
        .unwrap_or_else(|| "settings".to_owned());
    // For an unknown key, name the key itself, not only its section.
    let key = match text
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
    {
        Some(field) if key == "settings" => field.to_owned(),
        Some(field) => format!("{key}.{field}"),
        None => key,
    };
    SettingsError::new(key, text)
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

impl HeartbeatSettings {
    pub fn interval(&self) -> Duration {
        ms(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        ms(self.timeout_ms)
    }
}

impl Limits {
    pub fn identify_timeout(&self) -> Duration {
        ms(self.identify_timeout_ms)
    }
    pub fn reply_ttl(&self) -> Duration {
        ms(self.reply_ttl_ms)
    }
    pub fn close_grace(&self) -> Duration {
        ms(self.close_grace_ms)
    }
}

impl ShutdownSettings {
    pub fn drain(&self) -> Duration {
        ms(self.drain_ms)
    }
}

impl ClusterSettings {
    pub fn node_ttl(&self) -> Duration {
        ms(self.node_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        files: &[(&str, &str)],
        hub_env: Option<&str>,
        config: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let config_path = config.map(|text| {
            let p = dir.path().join("extra.toml");
            std::fs::write(&p, text).expect("write");
            p
        });
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(dir.path(), hub_env, config_path.as_deref(), vars)
    }

    #[test]
    fn defaults_match_the_protocol() {
        let s = load(&[], None, None, &[]).expect("defaults load");
        assert_eq!(
            (s.server.host.as_str(), s.server.port, s.server.ws_path.as_str()),
            ("0.0.0.0", 8080, "/ws")
        );
        assert_eq!((s.heartbeat.interval_ms, s.heartbeat.timeout_ms), (15000, 45000));
        let l = &s.limits;
        assert_eq!(
            (
                l.max_frame_bytes,
                l.identify_timeout_ms,
                l.max_connections,
                l.connect_rate_per_sec,
                l.max_outbound_bytes
            ),
            (65536, 10000, 100000, 1000, 1048576)
        );
        assert_eq!(
            (l.rate_per_sec, l.rate_burst, l.reply_ttl_ms, l.max_pending_replies),
            (1000, 2000, 30000, 100000)
        );
        assert_eq!((s.shutdown.drain_ms, s.cluster.node_ttl_ms), (2000, 10000));
        assert_eq!(s.log.format, LogFormat::Text);
        assert!(s.status.token.is_none() && s.admin.token.is_none() && s.cluster.redis_url.is_none());
        assert_eq!(s.services.len(), 1);
        assert_eq!(
            (s.services[0].name.as_str(), s.services[0].token.as_deref()),
            ("demo", Some(DEMO_TOKEN))
        );
        assert_eq!(s.services[0].groups, vec!["*"]);
    }

    #[test]
    fn later_layers_win_and_env_vars_win_last() {
        let s = load(
            &[("staging.toml", "[server]\nport = 7000\n[limits]\nrate_burst = 5\n")],
            Some("staging"),
            Some("[server]\nport = 7100\n"),
            &[
                ("HUB__LIMITS__RATE_PER_SEC", "7"),
                ("HUB__SERVER__ALLOWED_ORIGINS", "https://a,https://b"),
            ],
        )
        .expect("loads");
        assert_eq!(
            (s.server.port, s.limits.rate_burst, s.limits.rate_per_sec),
            (7100, 5, 7)
        );
        assert_eq!(s.server.allowed_origins, vec!["https://a", "https://b"]);
    }

    #[test]
    fn environment_values_are_read_as_the_type_of_their_key() {
        let s = load(
            &[],
            None,
            None,
            &[
                ("HUB__ADMIN__TOKEN", "0123"),
                ("HUB__STATUS__TOKEN", "true"),
                ("HUB__SERVER__PORT", " 9000 "),
                ("HUB__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
                ("HUB__SERVER__ALLOWED_ORIGINS", ""),
                ("HUB__CLUSTER__NODE_ID", "1e3"),
                ("HUB__SERVER__COMPACT_WRITE_BUFFERS", "true"),
            ],
        )
        .expect("loads");
        assert_eq!(
            (s.admin.token.as_deref(), s.status.token.as_deref(), s.server.port),
            (Some("0123"), Some("true"), 9000)
        );
        assert_eq!(s.server.trusted_proxies, vec!["10.0.0.0/8", "127.0.0.1"]);
        assert!(s.server.allowed_origins.is_empty());
        assert_eq!(s.cluster.node_id.as_deref(), Some("1e3"));
        assert!(s.server.compact_write_buffers);
    }

    #[test]
    fn values_are_never_converted_between_types() {
        for (config, key) in [
            ("[server]\nport = true\n", "server.port"),
            ("[server]\nport = \"8080\"\n", "server.port"),
            ("[server]\nport = 70000\n", "server.port"),
            ("[limits]\nrate_per_sec = \"yes\"\n", "limits.rate_per_sec"),
            ("[heartbeat]\ninterval_ms = 1.5\n", "heartbeat.interval_ms"),
            ("[admin]\ntoken = 123\n", "admin.token"),
            ("[server]\nallowed_origins = \"https://a\"\n", "server.allowed_origins"),
        ] {
            let e = load(&[], None, Some(config), &[]).expect_err(config);
            assert_eq!(e.key, key, "{config}: {e}");
        }
        for (var, value, key) in [
            ("HUB__SERVER__PORT", "abc", "server.port"),
            ("HUB__LIMITS__RATE_PER_SEC", "1e3", "limits.rate_per_sec"),
            ("HUB__LIMITS__RATE_PER_SEC", "yes", "limits.rate_per_sec"),
            ("HUB__HEARTBEAT__INTERVAL_MS", "1.5", "heartbeat.interval_ms"),
            (
                "HUB__SERVER__COMPACT_WRITE_BUFFERS",
                "yes",
                "server.compact_write_buffers",
            ),
            ("HUB__LIMITS__BOGUS", "1", "limits.bogus"),
            ("HUB__SERVER", "x", "server"),
            ("HUB__SERVICES", "x", "services"),
        ] {
            let e = load(&[], None, None, &[(var, value)]).expect_err(var);
            assert_eq!(e.key, key, "{var}={value}: {e}");
            assert!(e.message.contains(var), "{e}");
        }
        let e = load(&[], None, None, &[("HUB__SERVER__PORT", "70000")]).expect_err("too big");
        assert_eq!(e.key, "server.port");
        assert!(e.message.starts_with("HUB__SERVER__PORT: "), "{e}");
    }

    #[test]
    fn the_host_is_an_ip_address_or_a_host_name() {
        for host in [
            "0.0.0.0",
            "127.0.0.1",
            "::",
            "::1",
            "localhost",
            "hub-1.internal",
            "hub_1",
            "hub.example.com.",
            "10.0.0.1",
        ] {
            assert_eq!(check_host(host), Ok(()), "{host}");
        }
        for host in [
            "",
            ".",
            "999.1.1.1",
            "1.2.3",
            "a b",
            "-hub",
            "hub-",
            "hub..x",
            "[::1]",
            "http://x",
            "h\u{e9}",
        ] {
            assert!(check_host(host).is_err(), "{host:?}");
        }
        let e = load(&[], None, Some("[server]\nhost = \"999.1.1.1\"\n"), &[]).expect_err("bad host");
        assert_eq!(e.key, "server.host", "{e}");
    }

    #[test]
    fn the_heartbeat_timeout_must_exceed_the_interval() {
        for config in [
            "[heartbeat]\ninterval_ms = 2000\ntimeout_ms = 1500\n",
            "[heartbeat]\ninterval_ms = 2000\ntimeout_ms = 2000\n",
            "[heartbeat]\ninterval_ms = 60000\n",
        ] {
            let e = load(&[], None, Some(config), &[]).expect_err(config);
            assert_eq!(e.key, "heartbeat.timeout_ms", "{config}: {e}");
        }
        let e = load(&[], None, None, &[("HUB__HEARTBEAT__TIMEOUT_MS", "15000")])
            .expect_err("equal to the default interval");
        assert_eq!(e.key, "heartbeat.timeout_ms", "{e}");
        let s = load(
            &[],
            None,
            Some("[heartbeat]\ninterval_ms = 2000\ntimeout_ms = 2001\n"),
            &[],
        )
        .expect("just above");
        assert_eq!((s.heartbeat.interval_ms, s.heartbeat.timeout_ms), (2000, 2001));
    }

    #[test]
    fn a_token_never_shows_in_a_settings_error() {
        for config in [
            "[admin]\ntoken = 918273\n",
            "[status]\ntoken = 918273.5\n",
            "[[services]]\nname = \"x\"\ntoken = 918273\n",
            "[[services]]\nname = \"x\"\ntoken = \"918273\n",
            "[admin]\ntoken = \"918273\"\n[admin]\n",
        ] {
            let e = load(&[], None, Some(config), &[]).expect_err(config);
            assert!(!e.to_string().contains("918273"), "{config}: {e}");
        }
        let e = load(&[], None, Some("[admin]\ntoken = 918273\n"), &[]).expect_err("number");
        assert_eq!(e.key, "admin.token");
        let e = load(&[], None, Some("[server]\nport = 1\nport = 2\n"), &[]).expect_err("twice");
        assert!(e.message.contains("line 3"), "{e}");
        for token in [" ", ""] {
            let e = load(&[], None, None, &[("HUB__ADMIN__TOKEN", token)]).expect_err("blank");
            assert_eq!(e.key, "admin.token");
        }
    }

    #[test]
    fn durations_workers_and_bearer_tokens_have_bounds() {
        let refused = [
            ("HUB__SHUTDOWN__DRAIN_MS", "3600001", "shutdown.drain_ms"),
            ("HUB__SHUTDOWN__DRAIN_MS", "9223372036854775807", "shutdown.drain_ms"),
            ("HUB__LIMITS__REPLY_TTL_MS", "2592000001", "limits.reply_ttl_ms"),
            ("HUB__LIMITS__CLOSE_GRACE_MS", "2592000001", "limits.close_grace_ms"),
            ("HUB__HEARTBEAT__TIMEOUT_MS", "2592000001", "heartbeat.timeout_ms"),
            ("HUB__SERVER__WORKERS", "513", "server.workers"),
            ("HUB__ADMIN__TOKEN", " s3cr3t", "admin.token"),
            ("HUB__STATUS__TOKEN", "s3cr3t ", "status.token"),
        ];
        for (var, value, key) in refused {
            let e = load(&[], None, None, &[(var, value)]).expect_err(value);
            assert_eq!(e.key, key, "{var}={value}: {e}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
        let s = load(
            &[],
            None,
            None,
            &[("HUB__SHUTDOWN__DRAIN_MS", "3600000"), ("HUB__SERVER__WORKERS", "512")],
        )
        .expect("at the bounds");
        assert_eq!((s.shutdown.drain_ms, s.server.workers), (3_600_000, 512));
    }

    #[test]
    fn a_variable_is_typed_by_its_key_not_by_a_file_that_gave_it_a_wrong_type() {
        let config = "[heartbeat]\ninterval_ms = 1.5\n[server]\nport = \"8080\"\n";
        let s = load(
            &[],
            None,
            Some(config),
            &[("HUB__HEARTBEAT__INTERVAL_MS", "1000"), ("HUB__SERVER__PORT", "9412")],
        )
        .expect("the variables override the file's values");
        assert_eq!((s.heartbeat.interval_ms, s.server.port), (1000, 9412));
        let e = load(&[], None, Some(config), &[("HUB__SERVER__PORT", "9412")]).expect_err("the file's value");
        assert_eq!(e.key, "heartbeat.interval_ms", "{e}");
        assert!(!e.message.contains("HUB__"), "the variable is not blamed: {e}");
        // A key without a built-in default (a token) is text.
        let s = load(&[], None, Some("[admin]\ntoken = 5\n"), &[("HUB__ADMIN__TOKEN", "abc")])
            .expect("the variable overrides the file's number");
        assert_eq!(s.admin.token.as_deref(), Some("abc"));
    }

    #[test]
    fn the_websocket_path_is_a_plain_path_that_is_not_an_endpoint_of_the_hub() {
        for path in [
            "/ws{", "/ws/{id}", "ws", "/a//b", "/status", "/metrics", "/api", "/api/x", "/w s", "",
        ] {
            let e = load(&[], None, None, &[("HUB__SERVER__WS_PATH", path)]).expect_err(path);
            assert_eq!(e.key, "server.ws_path", "{path}: {e}");
        }
        for path in ["/", "/socket/v1", "/ws-2.x_~", "/statuses", "/apis"] {
            let s = load(&[], None, None, &[("HUB__SERVER__WS_PATH", path)]).expect(path);
            assert_eq!(s.server.ws_path, path);
        }
    }

    #[test]
    fn an_empty_token_is_no_token() {
        let e = load(&[], None, Some("[[services]]\nname = \"x\"\ntoken = \"\"\n"), &[]).expect_err("empty");
        assert_eq!(e.key, "services[0].token");
        let e = load(&[], None, Some("[[services]]\nname = \"x\"\ntoken = \" \"\n"), &[]).expect_err("blank");
        assert_eq!(e.key, "services[0].token");
    }

    #[test]
    fn a_layer_with_services_replaces_the_whole_list() {
        let s = load(
            &[],
            None,
            Some("[[services]]\nname = \"orders\"\ntoken_sha256 = \"ab\"\ngroups = [\"o\"]\n"),
            &[],
        )
        .expect("loads");
        assert_eq!(
            s.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["orders"]
        );
    }

    #[test]
    fn production_defines_no_services_and_refuses_the_demo_token() {
        let s = load(&[], Some("production"), None, &[]).expect("loads");
        assert!(!s.demo_token_allowed());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load(&[], None, Some("[limits]\nrate_per_sec = \"fast\"\n"), &[]).expect_err("bad type");
        assert_eq!(e.key, "limits.rate_per_sec", "{e}");
        let e = load(&[], None, Some("[limits]\nrate_per_seconds = 5\n"), &[]).expect_err("unknown key");
        assert_eq!(e.key, "limits.rate_per_seconds", "{e}");
        let e = load(&[], None, Some("[bogus]\nx = 1\n"), &[]).expect_err("unknown section");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = load(&[], None, None, &[("HUB__LIMITS__RATE_BURST", "0")]).expect_err("zero");
        assert_eq!(e.key, "limits.rate_burst");
        for key in ["max_connections", "max_pending_replies"] {
            let config = format!("[limits]\n{key} = {}\n", MAX_COUNT + 1);
            let e = load(&[], None, Some(&config), &[]).expect_err("too large");
            assert_eq!(
                (e.key.as_str(), e.message.as_str()),
                (&*format!("limits.{key}"), "must be at most 1000000000")
            );
            let config = format!("[limits]\n{key} = {MAX_COUNT}\n");
            load(&[], None, Some(&config), &[]).expect("the bound itself loads");
        }
        let e = load(&[], None, Some("[[services]]\nname = \"x\"\ngroups = []\n"), &[]).expect_err("no token");
        assert_eq!(e.key, "services[0].token");
        let e = load(
            &[],
            None,
            Some("[[services]]\nname = \"x\"\ntoken = \"t\"\ngroups = [\"a b\"]\n"),
            &[],
        )
        .expect_err("bad group");
        assert_eq!(e.key, "services[0].groups[0]");
        let e = load(
            &[],
            None,
            Some("[[services]]\nname = \"x\"\ntoken = \"t\"\nbogus = 1\n"),
            &[],
        )
        .expect_err("unknown service key");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = load(&[], Some("nope"), None, &[]).expect_err("missing env file");
        assert_eq!(e.key, "HUB_ENV");
    }
}
