//! `connections`: opens N identified sessions `--concurrency` at a time,
//! holds them for `--hold` seconds (answering heartbeats), and reports the
//! connect + identify rate, the CPU both sides spent opening them (the
//! window is the opening alone), and the hub's RSS per session after the
//! hold.

use std::time::Duration;

use tokio::sync::watch;

use super::cli::ConnectionsArgs;
use super::meter::Meter;
use super::report::{round, Report};
use super::Ctx;
use super::{procstat, sessions};

pub async fn connections(ctx: &Ctx, args: &ConnectionsArgs, mut report: Report) -> Report {
    // CPU is measured over the opening only (what limits the rate); memory
    // again after the hold, once the hub has settled.
    let meter = Meter::start(ctx.pid);
    let opened = sessions::open(ctx, None, args.sessions).await;
    let usage = meter.stop();
    let n = opened.sessions.len() as u64;
    report.sessions += n;
    report.connect_failed += opened.failed;
    report.connect_identify_per_sec = opened.rate().map(f64::round);
    if let Err(e) = opened.check(args.sessions) {
        report.error = Some(e);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let held = sessions::hold(opened.sessions.into_iter().map(|(c, _)| c).collect(), &stop_rx);
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let rss_after = ctx.pid.and_then(procstat::rss_kib);
    usage.fill(&mut report, 0, None);
    report.deliveries_per_sec = 0.0;
    report.hub_rss_kib_after = rss_after;
    report.hub_rss_kib_max = report.hub_rss_kib_max.max(rss_after);
    if let (Some(before), Some(after), true) = (usage.hub_rss_before, rss_after, n > 0) {
        report.hub_rss_kib_per_session = Some(round((after as f64 - before as f64) / n as f64, 2));
    }
    if let (Some(cpu), true) = (usage.hub_cpu_s, n > 0) {
        report.hub_cpu_us_per_session = Some(round(cpu * 1e6 / n as f64, 2));
    }
    let _ = stop_tx.send(true);
    sessions::release(held, Duration::from_secs(10)).await;
    report
}
