//! `Application::build` binds the listener, starts the hub on its own thread
//! and the HTTP server; `main` and the tests both use it, so a test owns a
//! real hub on port 0 and its shutdown.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::auth::Auth;
use crate::conn;
use crate::hub::{Hub, HubConfig};
use crate::metrics::Metrics;
use crate::proxy::TrustedProxies;
use crate::routes::{self, AppState};
use crate::session::rate_limit::TokenBucket;
use crate::session::SessionConfig;
use crate::settings::{Settings, SettingsError};
use crate::shutdown::{Shutdown, ShutdownHandle};

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// HTTP workers for `server.workers = 0`: one per core but one, which the
/// `Hub` actor's own thread takes; at least one. On 2 cores one worker and
/// the hub's thread spent 7 % less CPU per delivery at 1 -> 1,000 at 200
/// frames/s than two workers and the hub's thread (BENCHMARKS.md).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// A hub bound to its port, not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    shutdown: Shutdown,
    hub_arbiter: Arbiter,
    metrics: Arc<Metrics>,
}

impl Application {
    /// Resolves tokens, binds, and starts the hub and the HTTP workers.
    /// Must run inside an actix system (`#[actix_web::main]` or `::test`).
    pub fn build(settings: Settings) -> Result<Self, BuildError> {
        let auth = Arc::new(Auth::from_settings(&settings)?);
        if auth.demo_active() {
            log::warn!("the demo service's token \"demo-token\" is active: define your own [[services]] before exposing this hub");
        }
        if auth.is_empty() {
            log::warn!("no services are defined: no client can identify");
        }
        raise_fd_limit();
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr).map_err(|source| BuildError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| BuildError::Bind { addr, source })?
            .port();

        let node: Arc<str> = match &settings.cluster.node_id {
            Some(id) => id.as_str().into(),
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).into(),
        };
        let metrics = Metrics::new();
        let hub_arbiter = Arbiter::new();
        let hub_config = HubConfig::from_settings(&settings);
        let hub_metrics = metrics.clone();
        let hub = Hub::start_in_arbiter(&hub_arbiter.handle(), move |_| Hub::new(hub_config, hub_metrics));

        let ready = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(AppState {
            session: Arc::new(SessionConfig::new(
                &settings,
                hub.clone(),
                auth,
                metrics.clone(),
                node.clone(),
            )),
            metrics: metrics.clone(),
            ready: ready.clone(),
            started: Instant::now(),
            node,
            max_connections: settings.limits.max_connections,
            connect_rate: Mutex::new(TokenBucket::new(
                settings.limits.connect_rate_per_sec,
                settings.limits.connect_rate_per_sec,
                Instant::now(),
            )),
            status_token: settings.status.token.clone(),
            admin_token: settings.admin.token.clone(),
            allowed_origins: settings.server.allowed_origins.clone(),
            trusted_proxies: TrustedProxies::parse(&settings.server.trusted_proxies)?,
        });

        let ws_path = settings.server.ws_path.clone();
        let user_timeout = settings.heartbeat.timeout();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure(ws_path.clone()))
        })
        .on_connect(move |c, ext| conn::on_connect(c, ext, user_timeout))
        .disable_signals()
        .backlog(4096)
        .max_connections(settings.limits.max_connections.saturating_add(1024))
        .shutdown_timeout(1);
        let workers = match settings.server.workers {
            0 => default_workers(),
            n => n,
        };
        server = server.workers(workers);
        if settings.server.compact_write_buffers {
            // One body piece at a time, while the write buffer is empty: with
            // pieces of at most 8 KiB it never grows past 8 KiB. (Every
            // response then sends its head in a write of its own.)
            server = server.h1_write_buffer_size(1);
        }
        let server = server
            .listen(listener)
            .map_err(|source| BuildError::Bind {
                addr: format!("port {port}"),
                source,
            })?
            .run();
        let shutdown = Shutdown::new(ready.clone(), hub, server.handle(), settings.shutdown.drain());
        // Serving from here on.
        ready.store(true, std::sync::atomic::Ordering::Release);
        log::info!(
            "socket-hub {} listening on {}:{port} ({workers} HTTP workers)",
            env!("CARGO_PKG_VERSION"),
            settings.server.host
        );
        Ok(Application {
            port,
            server,
            shutdown,
            hub_arbiter,
            metrics,
        })
    }

    /// The bound port (useful with `server.port = 0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Starts the drain sequence on demand, as a signal would.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.handle()
    }

    /// Serves until SIGTERM/SIGINT (or the shutdown handle) has drained the
    /// sessions and the server has stopped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            shutdown,
            hub_arbiter,
            ..
        } = self;
        let drainer = actix_web::rt::spawn(shutdown.wait_and_drain());
        let result = server.await;
        drainer.abort();
        hub_arbiter.stop();
        result
    }
}

/// Every connection holds a file descriptor: lift the soft limit to the
/// hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::debug!("could not raise the open-file limit");
            }
        }
    }
}
