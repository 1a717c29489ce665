//! Opening many identified sessions at once, and holding idle ones open.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{procstat, Ctx};
use crate::client::{Client, Received};

/// Opening stops after this many failures: the hub is refusing, and more
/// attempts would only take the run's time.
const MAX_FAILURES: u64 = 100;

/// Sessions opened by [`open`], in no particular order.
pub struct Opened {
    /// Each client with its session id.
    pub sessions: Vec<(Client, String)>,
    pub failed: u64,
    pub first_error: Option<String>,
    /// From the first connect to the last `IDENTIFY` reply.
    pub elapsed: Duration,
}

impl Opened {
    /// Connect + identify per second.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (!self.sessions.is_empty() && secs > 0.0).then(|| self.sessions.len() as f64 / secs)
    }

    /// An error when not all `n` opened.
    pub fn check(&self, n: usize) -> Result<(), String> {
        if self.sessions.len() == n {
            return Ok(());
        }
        Err(format!(
            "opened {} of {n} sessions; first error: {}",
            self.sessions.len(),
            self.first_error.as_deref().unwrap_or("-")
        ))
    }
}

/// Opens `n` identified sessions, `ctx.concurrency` at a time, each in
/// `groups` (`None`: the service's configured groups).
pub async fn open(ctx: &Ctx, groups: Option<Vec<String>>, n: usize) -> Opened {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let groups = Arc::new(groups);
    let start = Instant::now();
    let workers: Vec<JoinHandle<Vec<(Client, String)>>> = (0..ctx.concurrency.min(n))
        .map(|_| {
            let (next, failed, first_error, groups) =
                (next.clone(), failed.clone(), first_error.clone(), groups.clone());
            let (url, token, pid) = (ctx.url.clone(), ctx.token.clone(), ctx.pid);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n && failed.load(Ordering::Relaxed) < MAX_FAILURES {
                    let names: Option<Vec<&str>> =
                        groups.as_ref().as_ref().map(|g| g.iter().map(String::as_str).collect());
                    match Client::connect_identified(&url, &token, names.as_deref()).await {
                        Ok(opened) => mine.push(opened),
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            if first.is_none() {
                                // A hub out of descriptors accepts nothing
                                // more, and connects time out: say so.
                                let fds = pid.and_then(procstat::fd_usage).map_or(String::new(), |(used, limit)| {
                                    format!(" (the hub has {used} of {limit} open files)")
                                });
                                *first = Some(format!("{e}{fds}"));
                            }
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(n);
    for worker in workers {
        if let Ok(mine) = worker.await {
            sessions.extend(mine);
        }
    }
    let elapsed = start.elapsed();
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    Opened {
        sessions,
        failed: failed.load(Ordering::Relaxed),
        first_error,
        elapsed,
    }
}

/// Keeps each client open, answering heartbeats, until `stop` turns true;
/// the socket closes when its task ends.
pub fn hold(clients: Vec<Client>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    clients
        .into_iter()
        .map(|mut client| {
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        got = client.recv(Duration::from_secs(24 * 3600)) => match got {
                            Ok(Received::Frame(_)) => continue,
                            _ => break,
                        },
                    }
                }
            })
        })
        .collect()
}

/// Waits for held sessions' tasks to end, at most `wait` in all.
pub async fn release(tasks: Vec<JoinHandle<()>>, wait: Duration) {
    let _ = tokio::time::timeout(wait, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
}
