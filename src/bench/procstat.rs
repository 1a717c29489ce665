//! What a process costs, read from Linux's `/proc`: CPU time from
//! `/proc/<pid>/stat` (per process and per thread), resident memory from
//! `/proc/<pid>/status`, the whole machine's busy time from `/proc/stat`, and
//! the tool's own CPU time from `getrusage`.
//!
//! The parsers take the file's text so that they are tested without a
//! process; the readers around them are thin.

use std::fs;
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` the benchmark uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (field 2, without its parentheses).
    pub comm: String,
    /// User-mode CPU time in clock ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU time in clock ticks (field 15).
    pub stime: u64,
    /// Threads in the process (field 20).
    pub num_threads: u64,
}

impl Stat {
    /// User plus kernel time, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses one `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) line.
///
/// The command name may hold spaces and parentheses, so the fields are
/// counted from the *last* `)`: the first field after it is field 3.
pub fn parse_stat(line: &str) -> Result<Stat, String> {
    let open = line.find('(').ok_or("no '(' before the command name")?;
    let close = line.rfind(')').ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let comm = line[open + 1..close].to_string();
    let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let field = |n: usize| -> Result<u64, String> {
        let text = fields.get(n - 3).ok_or_else(|| format!("field {n} is missing"))?;
        text.parse().map_err(|_| format!("field {n} is not a number: {text:?}"))
    };
    Ok(Stat {
        comm,
        utime: field(14)?,
        stime: field(15)?,
        num_threads: field(20)?,
    })
}

/// The fields of `/proc/<pid>/status` the benchmark uses, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Resident set size now.
    pub vm_rss_kib: u64,
    /// Peak resident set size since the process started.
    pub vm_hwm_kib: u64,
}

/// Parses `/proc/<pid>/status`: `VmRSS:` and `VmHWM:` lines, in kB.
pub fn parse_status(text: &str) -> Result<Status, String> {
    let kib = |key: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or_else(|| format!("no {key} line"))?;
        let mut words = line[key.len()..].split_whitespace();
        let value = words.next().ok_or_else(|| format!("{key} has no value"))?;
        if words.next() != Some("kB") {
            return Err(format!("{key} is not in kB"));
        }
        value.parse().map_err(|_| format!("{key} is not a number: {value:?}"))
    };
    Ok(Status {
        vm_rss_kib: kib("VmRSS:")?,
        vm_hwm_kib: kib("VmHWM:")?,
    })
}

/// Time of the whole machine from the `cpu ` line of `/proc/stat`, in
/// clock ticks: `tasks` is what processes ran (user, nice, system), `irq`
/// the interrupt and softirq time charged to no process (with IRQ time
/// accounting, the network stack's packet processing, loopback included),
/// `steal` what the hypervisor gave other guests while this one wanted to
/// run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineTicks {
    pub tasks: u64,
    pub irq: u64,
    pub steal: u64,
    pub total: u64,
}

/// Parses the first (`cpu `) line of `/proc/stat`.
pub fn parse_machine(text: &str) -> Result<MachineTicks, String> {
    let line = text.lines().find(|l| l.starts_with("cpu ")).ok_or("no 'cpu ' line")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().map_err(|_| format!("not a number: {v:?}")))
        .collect::<Result<_, _>>()?;
    if values.len() < 4 {
        return Err("fewer than 4 values on the cpu line".into());
    }
    // user nice system idle iowait irq softirq steal (guest time is already
    // inside user and nice).
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    Ok(MachineTicks {
        tasks: at(0) + at(1) + at(2),
        irq: at(5) + at(6),
        steal: at(7),
        total: values.iter().take(8).sum(),
    })
}

/// The soft "Max open files" limit from `/proc/<pid>/limits`.
pub fn parse_nofile_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Open descriptors of a process and its limit, when readable.
pub fn fd_usage(pid: u32) -> Option<(u64, u64)> {
    let used = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let limit = parse_nofile_limit(&fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)?;
    Some((used, limit))
}

/// The 1-minute load average from `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, almost always 100).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Online CPUs.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// CPU time of one thread, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTicks {
    pub tid: u32,
    pub comm: String,
    pub ticks: u64,
}

/// One look at a process: CPU (whole and per thread) and memory.
#[derive(Debug, Clone)]
pub struct ProcSample {
    pub cpu_ticks: u64,
    pub status: Status,
    pub threads: Vec<ThreadTicks>,
}

/// Reads `/proc/<pid>/{stat,status}` and every `/proc/<pid>/task/*/stat`.
pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let read = |path: String| fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"));
    let stat = parse_stat(&read(format!("/proc/{pid}/stat"))?)?;
    let status = parse_status(&read(format!("/proc/{pid}/status"))?)?;
    let mut threads = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            // A thread may end between the listing and the read.
            if let Ok(t) = read(format!("/proc/{pid}/task/{tid}/stat")).and_then(|l| parse_stat(&l)) {
                threads.push(ThreadTicks {
                    tid,
                    comm: t.comm.clone(),
                    ticks: t.cpu_ticks(),
                });
            }
        }
    }
    Ok(ProcSample {
        cpu_ticks: stat.cpu_ticks(),
        status,
        threads,
    })
}

/// Reads only the resident set size, for frequent sampling.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text).ok().map(|s| s.vm_rss_kib)
}

pub fn machine() -> Option<MachineTicks> {
    parse_machine(&fs::read_to_string("/proc/stat").ok()?).ok()
}

pub fn loadavg() -> Option<f64> {
    parse_loadavg(&fs::read_to_string("/proc/loadavg").ok()?)
}

/// This process's user plus system CPU time (`getrusage(RUSAGE_SELF)`).
pub fn self_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes
    // into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The thread whose CPU time grew most between two samples: (name, ticks).
pub fn busiest_thread(before: &[ThreadTicks], after: &[ThreadTicks]) -> Option<(String, u64)> {
    after
        .iter()
        .map(|t| {
            let start = before.iter().find(|b| b.tid == t.tid).map_or(0, |b| b.ticks);
            (t.comm.clone(), t.ticks.saturating_sub(start))
        })
        .max_by_key(|(_, ticks)| *ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from a socket-hub process, with a command name that holds
    // a space and a parenthesis to make sure fields are counted from the end.
    const STAT: &str = "4242 (socket hub) x) S 1 4242 4242 0 -1 4194560 1520 0 0 0 \
                        731 268 0 0 20 0 5 0 123456 123456789 3000 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            Stat {
                comm: "socket hub) x".into(),
                utime: 731,
                stime: 268,
                num_threads: 5,
            }
        );
        assert_eq!(stat.cpu_ticks(), 999);
    }

    #[test]
    fn a_truncated_stat_line_is_an_error_naming_the_field() {
        assert_eq!(
            parse_stat("1 (a) S 1 2 3 4 5 6 7 8 9 10 11"),
            Err("field 15 is missing".to_string())
        );
        assert_eq!(
            parse_stat("1 (a) S 1 2 3 4 5 6 7 8 9 10 x 12 13 14 15 16 17 18"),
            Err("field 14 is not a number: \"x\"".to_string())
        );
        assert_eq!(
            parse_stat("no parentheses"),
            Err("no '(' before the command name".to_string())
        );
    }

    #[test]
    fn stat_of_this_process_parses() {
        let text = fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&text).unwrap();
        assert!(stat.num_threads >= 1);
    }

    const STATUS: &str = "Name:\tsocket-hub\nUmask:\t0022\nState:\tS (sleeping)\n\
                          VmPeak:\t  712340 kB\nVmSize:\t  712340 kB\nVmHWM:\t   70312 kB\n\
                          VmRSS:\t   61234 kB\nRssAnon:\t   55000 kB\nThreads:\t5\n";

    #[test]
    fn status_gives_rss_and_peak_in_kib() {
        assert_eq!(
            parse_status(STATUS),
            Ok(Status {
                vm_rss_kib: 61234,
                vm_hwm_kib: 70312,
            })
        );
    }

    #[test]
    fn status_without_rss_is_an_error() {
        assert_eq!(
            parse_status("Name:\tx\nVmHWM:\t 1 kB\n"),
            Err("no VmRSS: line".to_string())
        );
        assert_eq!(
            parse_status("VmRSS:\t 12 MB\nVmHWM:\t 1 kB\n"),
            Err("VmRSS: is not in kB".to_string())
        );
    }

    #[test]
    fn machine_time_splits_into_tasks_irq_and_steal() {
        let text = "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(
            parse_machine(text),
            Ok(MachineTicks {
                tasks: 100 + 5 + 50,
                irq: 3 + 2,
                steal: 7,
                total: 1187,
            })
        );
    }

    #[test]
    fn the_open_file_limit_is_the_soft_one() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95000                95000                processes \n\
                    Max open files            20000                40000                files     \n";
        assert_eq!(parse_nofile_limit(text), Some(20000));
        assert_eq!(parse_nofile_limit("Limit Soft Hard\n"), None);
    }

    #[test]
    fn loadavg_is_the_first_number() {
        assert_eq!(parse_loadavg("1.74 1.09 0.70 3/812 12345\n"), Some(1.74));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn the_busiest_thread_is_the_one_that_grew_most() {
        let t = |tid, comm: &str, ticks| ThreadTicks {
            tid,
            comm: comm.into(),
            ticks,
        };
        let before = [t(1, "main", 500), t(2, "actix-rt|system", 10)];
        // Thread 1 has more time in total, thread 2 grew more; thread 3 is new.
        let after = [t(1, "main", 520), t(2, "actix-rt|system", 90), t(3, "worker", 40)];
        assert_eq!(busiest_thread(&before, &after), Some(("actix-rt|system".into(), 80)));
    }
}
