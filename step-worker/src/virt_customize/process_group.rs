//! Signalling and sweeping the process group virt-customize runs in (it
//! starts a qemu appliance and helpers; stopping only the leader would
//! leave them running with the disk open).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long to keep killing members that outlive the leader.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(2);
const SWEEP_INTERVAL: Duration = Duration::from_millis(20);

/// Sends `signal` to every process of the group; a group that is already
/// gone is not an error.
pub(super) fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, %errno, "cannot signal the process group");
        }
    }
}

/// Kills the whole group with SIGKILL when dropped while armed: the
/// backstop for a run whose future is dropped before it reaped the group
/// (`kill_on_drop` alone would kill only the leader).
#[derive(Debug)]
pub(super) struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    pub(super) fn new(pgid: Pid) -> Self {
        Self { pgid, armed: true }
    }

    /// The group has been reaped and swept: its id may be reused.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(
                pgid = self.pgid.as_raw(),
                "virt-customize run abandoned; killing its process group"
            );
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Kills whatever is left of the group once its leader has been reaped,
/// and waits until nothing is. Returns false if members survived.
pub(super) async fn sweep(pgid: Pid) -> bool {
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        let alive = live_members(pgid).await;
        if alive.is_empty() {
            return true;
        }
        if !warned {
            warned = true;
            tracing::warn!(
                pgid = pgid.as_raw(),
                pids = ?alive,
                "processes of the virt-customize group outlived it; killing them"
            );
        }
        if started.elapsed() >= SWEEP_TIMEOUT {
            tracing::error!(
                pgid = pgid.as_raw(),
                pids = ?alive,
                "processes of the virt-customize group survived SIGKILL"
            );
            return false;
        }
        signal_group(pgid, Signal::SIGKILL);
        tokio::time::sleep(SWEEP_INTERVAL).await;
    }
}

/// The live (not zombie) members of the group. Zombies count as gone: an
/// orphan is reaped by init, or by nobody when init does not reap (as in
/// some containers), and either way it holds nothing open.
async fn live_members(pgid: Pid) -> Vec<i32> {
    let scan = tokio::task::spawn_blocking(move || scan_proc(pgid)).await;
    match scan {
        Ok(Some(members)) => members,
        // No /proc: fall back to asking the kernel whether the group exists.
        Ok(None) | Err(_) => match killpg(pgid, None) {
            Ok(()) => vec![pgid.as_raw()],
            Err(_) => Vec::new(),
        },
    }
}

/// Scans `/proc/<pid>/stat` for processes of the group; `None` when `/proc`
/// cannot be read.
fn scan_proc(pgid: Pid) -> Option<Vec<i32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let members = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            matches!(parse_stat(&stat), Some((state, pgrp)) if pgrp == pgid.as_raw() && !matches!(state, 'Z' | 'X' | 'x'))
        })
        .collect();
    Some(members)
}

/// The state and process group of a `/proc/<pid>/stat` line
/// (`pid (comm) state ppid pgrp ...`; comm may contain spaces and parens).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_state_and_group() {
        let stat = "4242 (sleep (x) y) S 4241 4200 4200 0 -1 4194560 96 0 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 4200)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
