//! The benchmark's command line: global options (which hub, idle sessions,
//! deadline) and one subcommand per scenario.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Measures a socket-hub over real sockets with its own protocol: starts the
/// release `socket-hub` next to this binary (or uses --url), runs one
/// scenario, and prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "socket-hub-bench", version)]
pub struct Cli {
    /// Benchmark the hub at this ws:// URL instead of starting one.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// With --url: the hub's process id, so that its CPU and memory can be
    /// read from /proc.
    #[arg(long, global = true)]
    pub pid: Option<u32>,
    /// The socket-hub binary to start (default: the one next to this binary).
    #[arg(long, global = true, value_name = "PATH")]
    pub hub_bin: Option<PathBuf>,
    /// One more setting for the started hub, as an environment variable
    /// (e.g. HUB__SERVER__WORKERS=1 or RUST_LOG=info); repeatable.
    #[arg(long = "hub-env", global = true, value_name = "KEY=VALUE", value_parser = key_value)]
    pub hub_env: Vec<(String, String)>,
    /// The service token to identify with.
    #[arg(long, global = true, default_value = "demo-token")]
    pub token: String,
    /// Idle identified sessions to open first and hold during the run.
    #[arg(long, global = true, default_value_t = 0)]
    pub others: usize,
    /// Sessions opened at once while setting up.
    #[arg(long, global = true, default_value_t = 64)]
    pub concurrency: usize,
    /// Worker threads of the tool (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Hard limit on the whole run, setup included, in seconds (default: the
    /// scenario's duration plus drain plus 120).
    #[arg(long, global = true)]
    pub deadline: Option<f64>,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// 1 publisher -> N subscribers of one group.
    Fanout(FanoutArgs),
    /// P pairs: each sender sends DIRECT frames to its receiver.
    Direct(DirectArgs),
    /// Round trips: an EVENT to a responder (DIRECT or its own GROUP), which
    /// answers with op 5 REPLY.
    Reqreply(ReqReplyArgs),
    /// Open N identified sessions and hold them: connect rate and memory.
    Connections(ConnectionsArgs),
}

/// How a sender sends, shared by `fanout` and `direct`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Traffic {
    /// Frames per second per sender; omit to send as fast as --window allows.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes of `data` in each frame (at least the timestamp, ~30 bytes).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop each sender after this many frames (or --duration, if sooner).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Frames a sender may have in flight: sent and not yet received by all
    /// of its receivers. Bounds what the hub can queue.
    #[arg(long, default_value_t = 256)]
    pub window: u64,
    /// Seconds to wait after the last send for frames still on their way.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    /// Subscribers of the group.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct DirectArgs {
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReqTarget {
    /// The request is a DIRECT EVENT to the responder's session.
    Direct,
    /// The request goes to a group whose only member is the responder.
    Group,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ReqReplyArgs {
    /// Requester/responder pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Requests each requester keeps outstanding.
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    #[arg(long, value_enum, default_value_t = ReqTarget::Direct)]
    pub target: ReqTarget,
    /// Bytes of `data` in each request (echoed in the reply).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of requesting.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop each requester after this many requests (or --duration).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Seconds to wait for outstanding replies at the end.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ConnectionsArgs {
    /// Identified sessions to open and hold.
    #[arg(long, default_value_t = 5000)]
    pub sessions: usize,
    /// Seconds to hold them before reading the hub's memory.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Largest `--size`: the hub's default `limits.max_frame_bytes` (65536)
/// less room for the rest of the frame.
pub const MAX_SIZE: usize = 60_000;
/// Longest `--duration`, `--drain` or `--hold`, seconds.
pub const MAX_SECONDS: f64 = 3600.0;

fn seconds(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 && v <= MAX_SECONDS {
        Ok(())
    } else {
        Err(format!(
            "--{name} must be more than 0 and at most {MAX_SECONDS} seconds, got {v}"
        ))
    }
}

fn at_least_one(name: &str, v: u64) -> Result<(), String> {
    if v >= 1 {
        Ok(())
    } else {
        Err(format!("--{name} must be at least 1"))
    }
}

impl Traffic {
    fn validate(&self) -> Result<(), String> {
        seconds("duration", self.duration)?;
        seconds("drain", self.drain)?;
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("--rate must be more than 0, got {rate}"));
            }
        }
        if self.size > MAX_SIZE {
            return Err(format!("--size must be at most {MAX_SIZE}"));
        }
        at_least_one("window", self.window)?;
        at_least_one("frames", self.frames.unwrap_or(1))
    }
}

impl Cli {
    /// Checks what clap's types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.pid.is_some() && self.url.is_none() {
            return Err("--pid goes with --url (a started hub's pid is known)".into());
        }
        if let Some(url) = &self.url {
            if !url.starts_with("ws://") {
                return Err(format!("--url must be a ws:// URL, got {url:?}"));
            }
        }
        at_least_one("concurrency", self.concurrency as u64)?;
        at_least_one("threads", self.threads.unwrap_or(1) as u64)?;
        if let Some(d) = self.deadline {
            seconds("deadline", d)?;
        }
        match &self.scenario {
            Scenario::Fanout(a) => {
                at_least_one("subscribers", a.subscribers as u64)?;
                a.traffic.validate()
            }
            Scenario::Direct(a) => {
                at_least_one("pairs", a.pairs as u64)?;
                a.traffic.validate()
            }
            Scenario::Reqreply(a) => {
                at_least_one("pairs", a.pairs as u64)?;
                at_least_one("inflight", a.inflight as u64)?;
                at_least_one("frames", a.frames.unwrap_or(1))?;
                seconds("duration", a.duration)?;
                seconds("drain", a.drain)?;
                if a.size > MAX_SIZE {
                    return Err(format!("--size must be at most {MAX_SIZE}"));
                }
                Ok(())
            }
            Scenario::Connections(a) => {
                at_least_one("sessions", a.sessions as u64)?;
                seconds("hold", a.hold)
            }
        }
    }

    /// The scenario's name and its options as JSON, for the report.
    pub fn params(&self) -> (&'static str, serde_json::Value) {
        let (name, mut params) = match &self.scenario {
            Scenario::Fanout(a) => ("fanout", serde_json::to_value(a)),
            Scenario::Direct(a) => ("direct", serde_json::to_value(a)),
            Scenario::Reqreply(a) => ("reqreply", serde_json::to_value(a)),
            Scenario::Connections(a) => ("connections", serde_json::to_value(a)),
        };
        if let Ok(serde_json::Value::Object(map)) = &mut params {
            map.insert("others".into(), self.others.into());
            map.insert("concurrency".into(), self.concurrency.into());
        }
        (name, params.unwrap_or_default())
    }

    /// Seconds the scenario itself is meant to take.
    pub fn planned_seconds(&self) -> f64 {
        match &self.scenario {
            Scenario::Fanout(FanoutArgs { traffic: t, .. }) | Scenario::Direct(DirectArgs { traffic: t, .. }) => {
                t.duration + t.drain
            }
            Scenario::Reqreply(a) => a.duration + a.drain,
            Scenario::Connections(a) => a.hold,
        }
    }

    /// Sessions the scenario opens, `--others` aside.
    pub fn sessions(&self) -> usize {
        match &self.scenario {
            Scenario::Fanout(a) => a.subscribers + 1,
            Scenario::Direct(a) => 2 * a.pairs,
            Scenario::Reqreply(a) => 2 * a.pairs,
            Scenario::Connections(a) => a.sessions,
        }
    }

    /// The hard deadline for the whole run, setup included.
    pub fn deadline_seconds(&self) -> f64 {
        self.deadline.unwrap_or(self.planned_seconds() + 120.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(args: &str) -> String {
        parse(args).expect_err("refused")
    }

    fn parse(args: &str) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(args.split_whitespace()).map_err(|e| e.kind().to_string())?;
        cli.validate()?;
        Ok(cli)
    }

    #[test]
    fn fanout_takes_its_options_and_defaults() {
        let cli = parse("socket-hub-bench fanout --subscribers 1000 --rate 200 --duration 5").unwrap();
        let Scenario::Fanout(a) = &cli.scenario else {
            panic!("not fanout: {:?}", cli.scenario)
        };
        assert_eq!(a.subscribers, 1000);
        assert_eq!(a.traffic.rate, Some(200.0));
        assert_eq!(
            (
                a.traffic.size,
                a.traffic.duration,
                a.traffic.frames,
                a.traffic.window,
                a.traffic.drain
            ),
            (100, 5.0, None, 256, 5.0)
        );
        assert_eq!(
            (cli.url.as_deref(), cli.others, cli.token.as_str()),
            (None, 0, "demo-token")
        );
        assert_eq!(cli.deadline_seconds(), 130.0);
    }

    #[test]
    fn no_rate_means_as_fast_as_the_window_allows() {
        let cli = parse("socket-hub-bench fanout --window 64 --frames 1000").unwrap();
        let Scenario::Fanout(a) = &cli.scenario else { panic!() };
        assert_eq!(
            (a.traffic.rate, a.traffic.window, a.traffic.frames),
            (None, 64, Some(1000))
        );
    }

    #[test]
    fn global_options_go_before_or_after_the_scenario() {
        let cli = parse(
            "socket-hub-bench --others 10000 direct --pairs 2 --hub-env HUB__SERVER__WORKERS=1 --hub-env RUST_LOG=a=b",
        )
        .unwrap();
        assert_eq!(cli.others, 10000);
        assert_eq!(
            cli.hub_env,
            vec![
                ("HUB__SERVER__WORKERS".to_string(), "1".to_string()),
                ("RUST_LOG".to_string(), "a=b".to_string())
            ]
        );
        let (name, params) = cli.params();
        assert_eq!(name, "direct");
        assert_eq!(
            params,
            serde_json::json!({"pairs": 2, "rate": null, "size": 100, "duration": 10.0, "frames": null,
                               "window": 256, "drain": 5.0, "others": 10000, "concurrency": 64})
        );
    }

    #[test]
    fn reqreply_and_connections_parse() {
        let cli = parse("socket-hub-bench reqreply --target group --inflight 4").unwrap();
        let Scenario::Reqreply(a) = &cli.scenario else { panic!() };
        assert_eq!((a.pairs, a.inflight, a.target), (1, 4, ReqTarget::Group));
        let cli = parse("socket-hub-bench connections --sessions 5000 --url ws://127.0.0.1:9/ws --pid 7").unwrap();
        let Scenario::Connections(a) = &cli.scenario else {
            panic!()
        };
        assert_eq!((a.sessions, a.hold, cli.pid), (5000, 2.0, Some(7)));
        assert_eq!(cli.url.as_deref(), Some("ws://127.0.0.1:9/ws"));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert_eq!(
            err("socket-hub-bench fanout --duration 0"),
            "--duration must be more than 0 and at most 3600 seconds, got 0"
        );
        assert_eq!(
            err("socket-hub-bench fanout --rate=-5"),
            "--rate must be more than 0, got -5"
        );
        assert_eq!(
            err("socket-hub-bench fanout --subscribers 0"),
            "--subscribers must be at least 1"
        );
        assert_eq!(
            err("socket-hub-bench --pid 7 connections"),
            "--pid goes with --url (a started hub's pid is known)"
        );
        assert_eq!(
            err("socket-hub-bench direct --url http://x"),
            "--url must be a ws:// URL, got \"http://x\""
        );
        assert_eq!(
            err("socket-hub-bench fanout --size 70000"),
            "--size must be at most 60000"
        );
        assert_eq!(
            err("socket-hub-bench fanout --hub-env NOEQUALS"),
            "invalid value for one of the arguments"
        );
        assert_eq!(err("socket-hub-bench teleport"), "unrecognized subcommand");
    }
}
