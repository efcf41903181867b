//! Memory and CPU time of a process, read from `/proc` (procfs).

use anyhow::Context;
use procfs::process::Process;
use serde::{Deserialize, Serialize};

use crate::clock::NANOS_PER_SEC;

/// Bytes in the kibibytes `/proc/<pid>/status` counts in.
const KIB: u64 = 1024;

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Resident memory now (VmRSS).
    pub rss_bytes: u64,
    /// The most resident memory so far (VmHWM, the high-water mark).
    pub hwm_bytes: u64,
    /// CPU time used so far, user and system.
    pub cpu_ns: u64,
}

/// Reads process `pid`, or this process for `None`.
pub fn sample(pid: Option<u32>) -> anyhow::Result<ProcSample> {
    let process = match pid {
        Some(pid) => Process::new(i32::try_from(pid).context("pid out of range")?),
        None => Process::myself(),
    }
    .context("cannot open /proc for the process")?;
    let status = process.status().context("cannot read /proc/<pid>/status")?;
    let stat = process.stat().context("cannot read /proc/<pid>/stat")?;
    let ticks = procfs::ticks_per_second().max(1);
    Ok(ProcSample {
        rss_bytes: status.vmrss.unwrap_or(0) * KIB,
        hwm_bytes: status.vmhwm.unwrap_or(0) * KIB,
        cpu_ns: (stat.utime + stat.stime) * (NANOS_PER_SEC / ticks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = sample(None).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(me.hwm_bytes >= me.rss_bytes);
        let by_pid = sample(Some(std::process::id())).unwrap();
        assert!(by_pid.rss_bytes > 0);
    }
}
