//! Per-VM safety: operations on one VM run one after another in arrival
//! order. A job holds its VM while it is unfinished, while a test failover
//! is up (until its cleanup finishes), and when it ended with state left
//! behind; the oldest holder runs, later ones wait as `pending`. When the
//! VM is released, the next waiting job starts.

use crate::JobStatus;
use crate::effects::Effects;
use crate::pipeline::JobType;

/// A job that holds a VM, as the gateway reads it (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub job_id: String,
    pub job_type: JobType,
    pub status: JobStatus,
    /// Whether its first step was dispatched.
    pub started: bool,
}

/// The job to start now that `effects` are written, if any: the oldest
/// holder left, when it has not started yet.
pub fn next_to_start(holders: &[Holder], effects: &Effects) -> Option<String> {
    holders
        .iter()
        .filter(|h| !effects.released_jobs.contains(&h.job_id))
        .map(|h| match effects.job(&h.job_id) {
            // What this decision writes wins over what was read.
            Some(job) => (job.job_id.as_str(), job.holds_vm, job.status, h.started),
            None => (h.job_id.as_str(), true, h.status, h.started),
        })
        .find(|(_, holds, ..)| *holds)
        .filter(|(_, _, status, started)| *status == JobStatus::Pending && !started)
        .map(|(id, ..)| id.to_owned())
}

/// The job that keeps a VM from being removed from the inventory: any
/// holder (an unfinished job, a test failover that is up, a job that left
/// state behind).
pub fn blocks_removal(holders: &[Holder]) -> Option<&Holder> {
    holders.first()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str, status: JobStatus, started: bool) -> Holder {
        Holder {
            job_id: id.into(),
            job_type: JobType::Test,
            status,
            started,
        }
    }

    #[test]
    fn the_oldest_waiting_job_starts_once_the_vm_is_free() {
        let holders = [
            holder("a", JobStatus::Completed, true),
            holder("b", JobStatus::Pending, false),
            holder("c", JobStatus::Pending, false),
        ];
        assert_eq!(next_to_start(&holders, &Effects::default()), None);
        let released = Effects {
            released_jobs: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(next_to_start(&holders, &released).as_deref(), Some("b"));
    }

    #[test]
    fn a_job_that_already_started_is_not_started_again() {
        let holders = [holder("b", JobStatus::Pending, true)];
        assert_eq!(next_to_start(&holders, &Effects::default()), None);
        assert_eq!(next_to_start(&[], &Effects::default()), None);
    }
}
