//! The measured window of a run: CPU of the hub (from `/proc/<pid>`), of
//! the tool (`getrusage` and `/proc/self/task`) and of the whole machine
//! (`/proc/stat`), and the hub's memory, sampled every 100 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::procstat::{self, MachineTicks, ProcSample};
use super::report::{limit, round, CpuUse, Report, ThreadLoad};

const RSS_EVERY: Duration = Duration::from_millis(100);

pub struct Meter {
    hub_pid: Option<u32>,
    start: Instant,
    hub: Option<ProcSample>,
    tool: Option<ProcSample>,
    tool_cpu: Duration,
    machine: Option<MachineTicks>,
    rss_max: Arc<AtomicU64>,
    sampler: Option<JoinHandle<()>>,
}

/// CPU seconds of the whole machine over the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineSeconds {
    pub tasks: f64,
    pub irq: f64,
    pub steal: f64,
}

/// What the window cost.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub wall: Duration,
    pub hub_cpu_s: Option<f64>,
    pub hub_busiest: Option<(String, f64)>,
    pub hub_rss_before: Option<u64>,
    pub hub_rss_after: Option<u64>,
    pub hub_rss_max: Option<u64>,
    pub tool_cpu_s: f64,
    pub tool_busiest: Option<(String, f64)>,
    /// CPU seconds of the whole machine: processes, interrupts, steal.
    pub machine: Option<MachineSeconds>,
}

impl Meter {
    /// Starts the window now.
    pub fn start(hub_pid: Option<u32>) -> Meter {
        let hub = hub_pid.and_then(|pid| procstat::sample(pid).ok());
        let rss_max = Arc::new(AtomicU64::new(hub.as_ref().map_or(0, |h| h.status.vm_rss_kib)));
        let sampler = hub_pid.map(|pid| {
            let rss_max = rss_max.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RSS_EVERY);
                loop {
                    every.tick().await;
                    match procstat::rss_kib(pid) {
                        Some(rss) => rss_max.fetch_max(rss, Ordering::Relaxed),
                        None => break,
                    };
                }
            })
        });
        Meter {
            hub_pid,
            hub,
            tool: procstat::sample(std::process::id()).ok(),
            tool_cpu: procstat::self_cpu(),
            machine: procstat::machine(),
            rss_max,
            sampler,
            start: Instant::now(),
        }
    }

    /// Ends the window now.
    pub fn stop(self) -> Usage {
        let wall = self.start.elapsed();
        let tool_cpu = procstat::self_cpu().saturating_sub(self.tool_cpu);
        let tick = procstat::clock_ticks_per_sec() as f64;
        let secs = wall.as_secs_f64().max(1e-9);
        let cores = |ticks: u64| ticks as f64 / tick / secs;
        let hub_after = self.hub_pid.and_then(|pid| procstat::sample(pid).ok());
        if let Some(s) = &self.sampler {
            s.abort();
        }
        let busiest = |before: &Option<ProcSample>, after: &Option<ProcSample>| match (before, after) {
            (Some(b), Some(a)) => procstat::busiest_thread(&b.threads, &a.threads).map(|(n, t)| (n, cores(t))),
            _ => None,
        };
        let tool_after = procstat::sample(std::process::id()).ok();
        let machine = match (self.machine, procstat::machine()) {
            (Some(b), Some(a)) => Some(MachineSeconds {
                tasks: a.tasks.saturating_sub(b.tasks) as f64 / tick,
                irq: a.irq.saturating_sub(b.irq) as f64 / tick,
                steal: a.steal.saturating_sub(b.steal) as f64 / tick,
            }),
            _ => None,
        };
        let hub_rss_after = hub_after.as_ref().map(|h| h.status.vm_rss_kib);
        Usage {
            wall,
            hub_cpu_s: match (&self.hub, &hub_after) {
                (Some(b), Some(a)) => Some(a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / tick),
                _ => None,
            },
            hub_busiest: busiest(&self.hub, &hub_after),
            hub_rss_before: self.hub.as_ref().map(|h| h.status.vm_rss_kib),
            hub_rss_after,
            hub_rss_max: hub_rss_after.map(|after| after.max(self.rss_max.load(Ordering::Relaxed))),
            tool_cpu_s: tool_cpu.as_secs_f64(),
            tool_busiest: busiest(&self.tool, &tool_after),
            machine,
        }
    }
}

impl Usage {
    /// Writes the CPU and memory figures into `report`, per delivery when
    /// there were any, and the verdict on the limiting side.
    pub fn fill(&self, report: &mut Report, deliveries: u64, rate_met: Option<bool>) {
        let secs = self.wall.as_secs_f64().max(1e-9);
        let per = |cpu_s: f64| (deliveries > 0).then(|| round(cpu_s * 1e6 / deliveries as f64, 3));
        let load = |t: &Option<(String, f64)>| {
            t.as_ref().map(|(name, cores)| ThreadLoad {
                name: name.clone(),
                cores: round(*cores, 2),
            })
        };
        report.wall_s = round(secs, 3);
        report.deliveries_per_sec = round(deliveries as f64 / secs, 1);
        report.hub_rss_kib_before = self.hub_rss_before;
        report.hub_rss_kib_after = self.hub_rss_after;
        report.hub_rss_kib_max = self.hub_rss_max;
        report.hub_cpu_s = self.hub_cpu_s.map(|c| round(c, 3));
        report.hub_cpu_us_per_delivery = self.hub_cpu_s.and_then(per);
        report.hub_cpu_cores = self.hub_cpu_s.map(|c| round(c / secs, 3));
        report.hub_busiest_thread = load(&self.hub_busiest);
        report.tool_cpu_s = round(self.tool_cpu_s, 3);
        report.tool_cpu_us_per_delivery = per(self.tool_cpu_s);
        report.tool_cpu_cores = round(self.tool_cpu_s / secs, 3);
        report.tool_busiest_thread = load(&self.tool_busiest);
        let others = self
            .machine
            .map(|m| ((m.tasks - self.hub_cpu_s.unwrap_or(0.0) - self.tool_cpu_s) / secs).max(0.0));
        let irq = self.machine.map(|m| m.irq / secs);
        let steal = self.machine.map(|m| m.steal / secs);
        report.other_cpu_cores = others.map(|o| round(o, 2));
        report.irq_cpu_cores = irq.map(|i| round(i, 2));
        report.steal_cpu_cores = steal.map(|s| round(s, 2));
        let (verdict, detail) = limit(&CpuUse {
            rate_met,
            hub_cores: self.hub_cpu_s.map(|c| c / secs),
            hub_busiest: self.hub_busiest.as_ref().map(|t| t.1),
            tool_cores: self.tool_cpu_s / secs,
            tool_busiest: self.tool_busiest.as_ref().map_or(0.0, |t| t.1),
            // CPU the hypervisor took is CPU neither side could have.
            other_cores: others.map(|o| o + steal.unwrap_or(0.0)),
            irq_cores: irq,
            machine_cores: report.cores,
        });
        report.limit = verdict;
        report.limit_detail = detail;
    }
}
