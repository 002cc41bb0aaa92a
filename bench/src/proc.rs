//! What /proc says about a process.

use std::collections::BTreeMap;

/// User plus system CPU time of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command may contain spaces: fields count from after its `)`.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

/// CPU time of each thread of a process, in nanoseconds, as the scheduler
/// counts it: precise where `cpu_seconds`'s 10 ms ticks are too coarse for
/// a short measurement.
pub(crate) fn thread_cpu_nanos(pid: u32) -> BTreeMap<u32, u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            // The first field of schedstat is the time spent on a CPU.
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((tid, schedstat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Seconds of CPU the threads used between two [`thread_cpu_nanos`]
/// samples; a thread that ended in between loses its share (the servers
/// keep theirs).
pub(crate) fn cpu_seconds_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> f64 {
    let nanos: u64 = after.iter().map(|(tid, &now)| now.saturating_sub(before.get(tid).copied().unwrap_or(0))).sum();
    nanos as f64 / 1e9
}

/// Resident memory of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn clock_ticks_per_second() -> f64 {
    // Linux's USER_HZ is 100 on every architecture webmesh targets.
    100.0
}

/// Pins process `pid` (0: this one) to one core with `taskset`.
pub(crate) fn pin(pid: u32, core: usize) {
    let pid = if pid == 0 { std::process::id() } else { pid };
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warning: could not pin {pid} to core {core} (is taskset installed?)");
    }
}
