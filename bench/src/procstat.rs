//! What the measured servers cost, read from /proc: CPU time (utime + stime of the
//! process and its direct children, so nginx's workers count with their master) and
//! resident memory, current and peak.
//!
//! Peaks are per scenario: [`Meter::start`] resets the kernel's high-water mark
//! (`/proc/PID/clear_refs` with 5, Linux 4.0+), so a scenario's peak is not an earlier
//! scenario's. Nothing here samples: the kernel keeps the peak exactly.

use std::{fs, time::Instant};

/// The pids of a process and its direct children (nginx: master and workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if stat_fields(child)
                .is_some_and(|f| f.get(1).map(String::as_str) == Some(&pid.to_string()))
            {
                pids.push(child);
            }
        }
    }
    pids
}

/// The fields of /proc/PID/stat after the command name (field 3 onwards), so that a
/// command with spaces or parentheses cannot shift them.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<Vec<String>> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid).map_or(0, |f| ticks(&f))
}

fn ticks(fields: &[String]) -> u64 {
    // After the command: state is field 3, so utime (14) and stime (15) are at 11, 12.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// A `VmRSS:`/`VmHWM:` style line of /proc/PID/status, in KiB; 0 when unreadable.
fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Current resident memory of a process family, in KiB (shared pages count once per
/// process, so nginx's figure is an upper bound).
pub fn rss_kib(pid: u32) -> u64 {
    family(pid)
        .into_iter()
        .map(|p| status_kib(p, "VmRSS:"))
        .sum()
}

/// Clock ticks per second: `getconf CLK_TCK`, 100 (Linux's USER_HZ) if that fails.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU and peak memory of one process family over one scenario.
pub struct Meter {
    pid: u32,
    ticks: u64,
    rss_kib: u64,
    started: Instant,
}

/// What a [`Meter`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// CPU seconds (user + system) spent during the scenario.
    pub cpu_seconds: f64,
    /// Wall-clock seconds of the scenario.
    pub seconds: f64,
    /// Resident memory when the scenario started, KiB.
    pub start_rss_kib: u64,
    /// Peak resident memory during the scenario (sum over the family), KiB.
    pub peak_rss_kib: u64,
}

impl Meter {
    pub fn start(pid: u32) -> Self {
        let pids = family(pid);
        for p in &pids {
            // Resetting the peak needs the same user or CAP_SYS_PTRACE; if it fails the
            // peak is the process's lifetime peak, which can only overstate.
            let _ = fs::write(format!("/proc/{p}/clear_refs"), "5");
        }
        let ticks = pids.iter().map(|p| cpu_ticks(*p)).sum();
        Self {
            pid,
            ticks,
            rss_kib: pids.iter().map(|p| status_kib(*p, "VmRSS:")).sum(),
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> Usage {
        let pids = family(self.pid);
        let ticks: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
        let cpu_seconds = ticks.saturating_sub(self.ticks) as f64 / clock_ticks();
        Usage {
            cpu_seconds,
            seconds: self.started.elapsed().as_secs_f64(),
            start_rss_kib: self.rss_kib,
            peak_rss_kib: pids.iter().map(|p| status_kib(*p, "VmHWM:")).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_stat, ticks};

    #[test]
    fn a_command_with_spaces_and_parentheses_does_not_shift_the_fields() {
        // pid (comm) state ppid … utime=14 stime=15 …
        let stat = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 1 0 99 1000 200";
        let fields = parse_stat(stat).expect("parses");
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "4241", "ppid");
        assert_eq!(ticks(&fields), 1234 + 567);
    }

    #[test]
    fn a_truncated_stat_is_no_fields_or_zero_ticks() {
        assert_eq!(parse_stat("4242 nginx"), None);
        assert_eq!(ticks(&parse_stat("4242 (nginx) S 1").expect("parses")), 0);
    }
}
