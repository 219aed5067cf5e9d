//! CPU time of a process, for the benchmarks' cores-used figures.

/// CPU time (user + system, all threads) of a process so far, from `/proc/<pid>/stat`. Linux
/// reports it in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 on the architectures Linux
/// runs here). `None` when the process is gone or the file unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}
