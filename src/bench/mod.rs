//! `socket-hub-bench`: measures a hub over real sockets with the real
//! protocol, using the same [`crate::client`] as the tests.
//!
//! - [`cli`]: the command line, one subcommand per scenario.
//! - [`hub`]: starts the release `socket-hub` next to the tool on a free port
//!   with benchmark settings (or the tool is pointed at one with `--url`).
//! - [`sessions`]: opens identified sessions many at a time; holds idle ones.
//! - [`flow`]: `fanout` and `direct`, senders streaming stamped frames.
//! - [`reqreply`]: request/reply round trips.
//! - [`connections`]: connect rate and memory per session.
//! - [`meter`], [`procstat`]: CPU and memory of the hub, the tool and the
//!   machine over the measured window, from `/proc`.
//! - [`payload`]: the stamped `data` and its fast reading.
//! - [`report`]: latency histogram, the limiting side, the JSON line.
//!
//! Every run is bounded: each phase has its own time limit and the whole
//! run a hard deadline (`--deadline`), after which a line with `error` is
//! printed anyway.

pub mod cli;
pub mod connections;
pub mod flow;
pub mod hub;
pub mod meter;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod reqreply;
pub mod sessions;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;

use cli::{Cli, Scenario};
use hub::HubProcess;
use report::Report;

/// The open-file limit the tool asks for (for itself and the hub it starts).
const NOFILE: u64 = 1 << 18;

/// What every scenario needs to reach the hub.
pub struct Ctx {
    /// `ws://host:port/ws`
    pub url: String,
    /// The hub's process, when known, for `/proc`.
    pub pid: Option<u32>,
    pub token: String,
    pub concurrency: usize,
    /// Unique to this run: group names use it, so that runs against a shared
    /// hub do not meet.
    pub run_id: String,
}

/// Parses the command line, runs the scenario, prints its line. Exit code
/// 0 when the run completed without error, 1 otherwise, 2 for bad flags.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("socket-hub-bench: {e}");
        return ExitCode::from(2);
    }
    let nofile = hub::raise_nofile(NOFILE);
    // One descriptor per session in the hub, and one in this tool.
    let wanted = (cli.others + cli.sessions()) as u64 + 256;
    if nofile < wanted {
        eprintln!("socket-hub-bench: warning: open files are limited to {nofile}; this run wants {wanted}");
    }
    let (name, params) = cli.params();
    let mut report = Report {
        scenario: name.into(),
        params,
        cores: procstat::cpu_count(),
        ..Report::default()
    };
    let mut started = None;
    let target = match &cli.url {
        Some(url) => Ok((url.clone(), cli.pid)),
        None => cli
            .hub_bin
            .clone()
            .map(Ok)
            .unwrap_or_else(hub::default_binary)
            .and_then(|bin| HubProcess::start(&bin, &cli.hub_env))
            .map(|h| {
                let target = (h.url(), Some(h.pid()));
                started = Some(h);
                target
            }),
    };
    let (url, pid) = match target {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(e);
            println!("{}", report.to_json_line());
            return ExitCode::FAILURE;
        }
    };
    report.hub = if started.is_some() {
        "spawned".into()
    } else {
        url.clone()
    };
    report.hub_pid = pid;
    let ctx = Ctx {
        url,
        pid,
        token: cli.token.clone(),
        concurrency: cli.concurrency,
        run_id: format!("{}-{}", std::process::id(), payload::now_ns()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.unwrap_or_else(procstat::cpu_count))
        .thread_name("bench")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("socket-hub-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Duration::from_secs_f64(cli.deadline_seconds());
    let fallback = report.clone();
    let report = runtime.block_on(async {
        match tokio::time::timeout(deadline, run(&cli, &ctx, report)).await {
            Ok(report) => report,
            Err(_) => Report {
                error: Some(format!("the run passed its deadline of {deadline:?}")),
                ..fallback
            },
        }
    });
    println!("{}", report.to_json_line());
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(started); // stops the hub
    if report.error.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(cli: &Cli, ctx: &Ctx, mut report: Report) -> Report {
    report.loadavg_before = procstat::loadavg();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut held = Vec::new();
    if cli.others > 0 {
        let others = sessions::open(ctx, None, cli.others).await;
        report.sessions = others.sessions.len() as u64;
        report.connect_failed = others.failed;
        report.connect_identify_per_sec = others.rate().map(f64::round);
        if let Err(e) = others.check(cli.others) {
            report.error = Some(format!("--others: {e}"));
        }
        held = sessions::hold(others.sessions.into_iter().map(|(c, _)| c).collect(), &stop_rx);
    }
    let report = match &cli.scenario {
        _ if report.error.is_some() => report,
        Scenario::Fanout(a) => flow::fanout(ctx, a, report).await,
        Scenario::Direct(a) => flow::direct(ctx, a, report).await,
        Scenario::Reqreply(a) => reqreply::reqreply(ctx, a, report).await,
        Scenario::Connections(a) => connections::connections(ctx, a, report).await,
    };
    let _ = stop_tx.send(true);
    sessions::release(held, Duration::from_secs(10)).await;
    report
}
