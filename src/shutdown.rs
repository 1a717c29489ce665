//! The drain sequence, in one place: not ready (so load balancers stop
//! sending, and new sessions are refused with 503), then `DISCONNECT 1001` to every session spread
//! over `shutdown.drain_ms`, then stop the server within a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::ServerHandle;
use tokio::sync::Notify;

use crate::hub::messages::{Drain, DrainNext};
use crate::hub::Hub;

/// At most one slice of sessions is closed per step of the drain.
const DRAIN_STEP: Duration = Duration::from_millis(10);

/// Everything the drain needs.
pub struct Shutdown {
    ready: Arc<AtomicBool>,
    hub: Addr<Hub>,
    server: ServerHandle,
    drain: Duration,
    trigger: Arc<Notify>,
}

/// Starts the drain from outside (tests, embedding programs).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Notify>);

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.0.notify_one();
    }
}

impl Shutdown {
    pub fn new(ready: Arc<AtomicBool>, hub: Addr<Hub>, server: ServerHandle, drain: Duration) -> Self {
        Shutdown {
            ready,
            hub,
            server,
            drain,
            trigger: Arc::new(Notify::new()),
        }
    }

    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.trigger.clone())
    }

    /// Waits for SIGTERM, SIGINT or the handle, then drains.
    pub async fn wait_and_drain(self) {
        tokio::select! {
            signal = signal() => log::info!("{signal}: draining"),
            _ = self.trigger.notified() => log::info!("shutdown requested: draining"),
        }
        // Not ready: `/readyz` answers 503, and so does every WebSocket
        // upgrade (with `Retry-After`), so that clients told to reconnect
        // hear at once that this node is going, instead of waiting in the
        // listen backlog until it closes.
        self.ready.store(false, Ordering::Release);
        // Each session gets DISCONNECT 1001 within the drain time, in slices
        // paced from here: each `DrainNext` is handled in its turn even when
        // the hub is too busy to run its own timers. A session that cannot
        // take its close frame is reset after `limits.close_grace_ms`, or
        // when the server stops.
        // The hub answers in its turn, behind what its mailbox holds: if that
        // takes the whole drain time, the server stops without the slices.
        let started = tokio::time::Instant::now();
        let plan = self.hub.send(Drain {
            over: self.drain,
            step: DRAIN_STEP,
        });
        let slices = match tokio::time::timeout(self.drain, plan).await {
            Ok(Ok(slices)) => slices,
            Ok(Err(_)) => 0,
            Err(_) => {
                log::warn!("the hub did not answer the drain within {:?}; stopping", self.drain);
                0
            }
        };
        for i in 0..slices {
            tokio::time::sleep_until(started + self.drain.mul_f64(i as f64 / slices as f64)).await;
            self.hub.do_send(DrainNext);
        }
        if slices > 0 {
            tokio::time::sleep_until(started + self.drain).await;
        }
        self.server.stop(true).await;
        log::info!("stopped");
    }
}

async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
