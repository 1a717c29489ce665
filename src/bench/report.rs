//! What a run reports: a latency histogram, the verdict on which side
//! limited the run, and the one JSON line printed per run.

use serde::Serialize;
use serde_json::Value;

/// Values below this are counted exactly; above, in 128 sub-buckets per
/// power of two (under 0.8 % error).
const EXACT: u64 = 256;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = EXACT as usize + (64 - SUB_BITS as usize - 1) * SUB as usize;

/// A log-linear histogram of nanoseconds: fixed size, no allocation per
/// value, merged across receivers at the end of a run.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = v >> shift; // in SUB..2*SUB
    EXACT as usize + (shift as usize - 1) * SUB as usize + (top - SUB) as usize
}

/// The largest value counted in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let i = i - EXACT as usize;
    let shift = (i / SUB as usize + 1) as u32;
    let top = SUB + (i % SUB as usize) as u64;
    // The last bucket ends at u64::MAX, one past which does not fit.
    ((u128::from(top + 1) << shift) - 1).min(u128::from(u64::MAX)) as u64
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value with at least `q` (0..=1) of the values at or
    /// below it, as its bucket's upper bound (never above the maximum).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    /// p50/p99/p99.9/max in microseconds; `None` when nothing was recorded.
    pub fn summary(&self) -> Option<Latency> {
        if self.count == 0 {
            return None;
        }
        let us = |ns: u64| round(ns as f64 / 1000.0, 1);
        Some(Latency {
            count: self.count,
            p50: us(self.quantile(0.50)),
            p99: us(self.quantile(0.99)),
            p999: us(self.quantile(0.999)),
            max: us(self.max),
        })
    }
}

/// End-to-end latency, microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One thread's share of a run: its name and the cores it used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadLoad {
    pub name: String,
    pub cores: f64,
}

/// The one line printed per run. Fields that do not apply are `null`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    /// The scenario's options as given (plus defaults).
    pub params: Value,
    /// `"spawned"` or the URL given.
    pub hub: String,
    pub hub_pid: Option<u32>,
    pub cores: usize,
    /// The 1-minute load average before the run: others' work on the machine.
    pub loadavg_before: Option<f64>,
    /// Length of the measured window (sending plus draining), seconds.
    pub wall_s: f64,
    pub frames_sent: u64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    /// Expected minus received.
    pub lost: i64,
    /// Frames that arrived with a lower sequence number than one before.
    pub out_of_order: u64,
    /// `ERROR` replies, unexpected frames and closes seen by the tool.
    pub errors: u64,
    pub first_error: Option<String>,
    pub deliveries_per_sec: f64,
    pub round_trips_per_sec: Option<f64>,
    /// End-to-end: from the sender's timestamp in `data` to its arrival.
    pub latency_us: Option<Latency>,
    /// Identified sessions the tool opened (all roles, idle ones included).
    pub sessions: u64,
    pub connect_failed: u64,
    /// Connect + WebSocket upgrade + `IDENTIFY` reply, per second, while
    /// opening sessions `concurrency` at a time.
    pub connect_identify_per_sec: Option<f64>,
    pub hub_rss_kib_before: Option<u64>,
    pub hub_rss_kib_after: Option<u64>,
    /// Highest RSS sampled every 100 ms during the measured window.
    pub hub_rss_kib_max: Option<u64>,
    /// (after - before) / sessions opened, for `connections`.
    pub hub_rss_kib_per_session: Option<f64>,
    pub hub_cpu_s: Option<f64>,
    pub hub_cpu_us_per_delivery: Option<f64>,
    pub hub_cpu_us_per_session: Option<f64>,
    pub hub_cpu_cores: Option<f64>,
    pub hub_busiest_thread: Option<ThreadLoad>,
    pub tool_cpu_s: f64,
    pub tool_cpu_us_per_delivery: Option<f64>,
    pub tool_cpu_cores: f64,
    pub tool_busiest_thread: Option<ThreadLoad>,
    /// Cores other processes used (the machine's process time minus the
    /// hub and the tool).
    pub other_cpu_cores: Option<f64>,
    /// Interrupt and softirq cores, charged to no process: mostly the
    /// kernel's packet processing for this run's own loopback traffic.
    pub irq_cpu_cores: Option<f64>,
    /// Cores the hypervisor gave to other guests while this one wanted them
    /// (`steal` in `/proc/stat`): the host was busy.
    pub steal_cpu_cores: Option<f64>,
    /// Which side limited the run (see [`limit`]) and why.
    pub limit: String,
    pub limit_detail: String,
    pub error: Option<String>,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"report: {e}\"}}"))
    }
}

/// Rounds to `digits` decimals, so the line stays readable.
pub fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// What the run measured about CPU, for [`limit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// A fixed rate was asked for, and whether it was met.
    pub rate_met: Option<bool>,
    pub hub_cores: Option<f64>,
    pub hub_busiest: Option<f64>,
    pub tool_cores: f64,
    pub tool_busiest: f64,
    /// Other processes plus steal.
    pub other_cores: Option<f64>,
    /// Interrupts and softirqs (the run's own packet processing, mostly).
    pub irq_cores: Option<f64>,
    pub machine_cores: usize,
}

/// A thread, or a machine, this busy counts as saturated.
const SATURATED: f64 = 0.85;

/// Names the side that limited a run: `rate` (a fixed rate was met with CPU
/// to spare), `rate/hub` or `rate/tool` (the rate was met but the machine's
/// CPU was all used, by that side mostly: latency then includes queueing),
/// `hub` or `tool` (the machine's CPU was all used, by that side mostly),
/// `hub-thread` or `tool-thread` (one thread at 100 %), `others` (other
/// processes, or other guests through the hypervisor's steal, took the CPU),
/// or `latency` (nothing saturated: round trips or the in-flight window
/// bounded it). Returns the verdict and a sentence with
/// the figures.
pub fn limit(cpu: &CpuUse) -> (String, String) {
    let hub = cpu.hub_cores.unwrap_or(0.0);
    let others = cpu.other_cores.unwrap_or(0.0);
    let irq = cpu.irq_cores.unwrap_or(0.0);
    let figures = format!(
        "hub {} cores (busiest thread {}), tool {} cores (busiest thread {}), irq {}, others and steal {} of {} cores",
        fmt(cpu.hub_cores),
        fmt(cpu.hub_busiest),
        round(cpu.tool_cores, 2),
        round(cpu.tool_busiest, 2),
        fmt(cpu.irq_cores),
        fmt(cpu.other_cores),
        cpu.machine_cores
    );
    let total = hub + cpu.tool_cores + irq + others;
    let saturated = total >= SATURATED * cpu.machine_cores as f64;
    let verdict = match cpu.rate_met {
        Some(true) if !saturated => "rate",
        Some(true) if hub >= cpu.tool_cores && hub >= others => "rate/hub",
        Some(true) if cpu.tool_cores >= others => "rate/tool",
        Some(true) => "others",
        Some(false) | None => {
            if cpu.hub_busiest.unwrap_or(0.0) >= SATURATED
                && hub + cpu.tool_cores < SATURATED * cpu.machine_cores as f64
            {
                "hub-thread"
            } else if cpu.tool_busiest >= SATURATED && hub + cpu.tool_cores < SATURATED * cpu.machine_cores as f64 {
                "tool-thread"
            } else if saturated {
                if others > hub.max(cpu.tool_cores) {
                    "others"
                } else if hub >= cpu.tool_cores {
                    "hub"
                } else {
                    "tool"
                }
            } else {
                "latency"
            }
        }
    };
    (verdict.to_string(), figures)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("?".to_string(), |v| round(v, 2).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 1..=200 {
            h.record(v);
        }
        assert_eq!(
            (
                h.quantile(0.5),
                h.quantile(0.99),
                h.quantile(0.999),
                h.quantile(1.0),
                h.max()
            ),
            (100, 198, 200, 200, 200)
        );
        assert_eq!(h.count(), 200);
    }

    #[test]
    fn large_values_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000); // 1 µs .. 100 ms
        }
        for (q, exact) in [(0.5, 50_000_000f64), (0.99, 99_000_000.0), (0.999, 99_900_000.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= exact && got <= exact * 1.008, "q {q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
    }

    #[test]
    fn every_bucket_holds_its_own_upper_bound() {
        for i in 0..BUCKETS {
            assert_eq!(index(upper(i)), i, "bucket {i}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(20);
        b.record(5_000_000);
        a.merge(&b);
        assert_eq!((a.count(), a.max(), a.quantile(0.5)), (3, 5_000_000, 20));
    }

    #[test]
    fn the_summary_is_in_microseconds_and_empty_is_none() {
        assert_eq!(Histogram::default().summary(), None);
        let mut h = Histogram::default();
        for v in [140, 260] {
            h.record(v);
        }
        assert_eq!(
            h.summary(),
            Some(Latency {
                count: 2,
                p50: 0.1,
                p99: 0.3,
                p999: 0.3,
                max: 0.3,
            })
        );
    }

    #[test]
    fn the_report_is_one_json_line_with_every_field() {
        let report = Report {
            scenario: "fanout".into(),
            params: serde_json::json!({"subscribers": 100, "rate": 1000.0}),
            hub: "spawned".into(),
            hub_pid: Some(42),
            frames_sent: 10,
            deliveries_expected: 1000,
            deliveries_received: 998,
            lost: 2,
            hub_cpu_us_per_delivery: Some(4.5),
            limit: "rate".into(),
            ..Report::default()
        };
        let line = report.to_json_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["scenario"], "fanout");
        assert_eq!(v["params"]["subscribers"], 100);
        assert_eq!(v["lost"], 2);
        assert_eq!(v["hub_cpu_us_per_delivery"], 4.5);
        assert_eq!(v["latency_us"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        let keys = v.as_object().unwrap().len();
        assert_eq!(keys, 39, "every field is present, null when it does not apply");
    }

    fn cpu(hub: f64, hub_busiest: f64, tool: f64, tool_busiest: f64, others: f64) -> CpuUse {
        CpuUse {
            rate_met: None,
            hub_cores: Some(hub),
            hub_busiest: Some(hub_busiest),
            tool_cores: tool,
            tool_busiest,
            other_cores: Some(others),
            irq_cores: Some(0.0),
            machine_cores: 2,
        }
    }

    #[test]
    fn a_met_rate_is_the_limit_unless_the_cpu_was_all_used() {
        let met = |c: CpuUse| CpuUse {
            rate_met: Some(true),
            ..c
        };
        assert_eq!(limit(&met(cpu(0.5, 0.3, 0.4, 0.2, 0.0))).0, "rate");
        assert_eq!(limit(&met(cpu(1.1, 0.5, 0.8, 0.4, 0.0))).0, "rate/hub");
        assert_eq!(limit(&met(cpu(0.7, 0.4, 1.0, 0.5, 0.0))).0, "rate/tool");
    }

    #[test]
    fn a_saturated_machine_names_the_larger_side() {
        assert_eq!(limit(&cpu(0.7, 0.5, 1.2, 0.6, 0.05)).0, "tool");
        assert_eq!(limit(&cpu(1.2, 0.7, 0.7, 0.4, 0.05)).0, "hub");
        assert_eq!(limit(&cpu(0.4, 0.3, 0.3, 0.2, 1.1)).0, "others");
    }

    #[test]
    fn one_thread_at_full_use_is_named_when_cores_are_left() {
        assert_eq!(limit(&cpu(1.0, 0.95, 0.4, 0.2, 0.0)).0, "hub-thread");
        assert_eq!(limit(&cpu(0.3, 0.2, 0.95, 0.9, 0.0)).0, "tool-thread");
        assert_eq!(limit(&cpu(0.2, 0.1, 0.2, 0.1, 0.0)).0, "latency");
    }

    #[test]
    fn the_detail_gives_the_figures() {
        let (_, detail) = limit(&cpu(1.234, 0.9, 0.5, 0.25, 0.1));
        assert_eq!(
            detail,
            "hub 1.23 cores (busiest thread 0.9), tool 0.5 cores (busiest thread 0.25), irq 0, others and steal 0.1 of 2 cores"
        );
    }
}
