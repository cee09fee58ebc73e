//! Deterministic names derived from the job, so a retried step finds what an
//! earlier attempt made.

use uuid::Uuid;

/// The namespace of destination VM ids (`customid`).
const VM_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b1e_5a0d_4c57_9a1f_3e9b_2d4c_8a10);

/// The CloudStack `customid` (the new VM's UUID) of a job's destination VM.
/// A `customid` can never be used again once a VM had it, so a deploy that
/// left a broken VM moves on to the next `generation`; every attempt walks
/// the same sequence from 0 and so finds the VM an earlier attempt made.
pub fn custom_id(job_id: &str, generation: u32) -> Uuid {
    if generation == 0 {
        Uuid::new_v5(&VM_NAMESPACE, job_id.as_bytes())
    } else {
        Uuid::new_v5(&VM_NAMESPACE, format!("{job_id}#{generation}").as_bytes())
    }
}

/// A CloudStack host name for the destination VM: letters, digits and `-`,
/// starting with a letter, at most 63 characters. A test VM gets the job's
/// timestamp so it never clashes with the production VM or another test.
pub fn destination_vm_name(vm_name: &str, job_id: &str, test: bool) -> String {
    let mut base: String = vm_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let mut base = base.trim_matches('-').to_owned();
    if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
        base = format!("vm-{base}");
    }
    let suffix = if test {
        let stamp = job_id.rsplit('-').next().unwrap_or_default();
        format!("-test-{stamp}")
    } else {
        String::new()
    };
    base.truncate(63 - suffix.len());
    let base = base.trim_end_matches('-');
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ids_are_stable_per_job() {
        assert_eq!(custom_id("job-1", 0), custom_id("job-1", 0));
        assert_ne!(custom_id("job-1", 0), custom_id("job-2", 0));
        assert_ne!(custom_id("job-1", 0), custom_id("job-1", 1));
    }

    #[test]
    fn names_are_valid_host_names() {
        let job = "enhanced-test-failover-420570c7-f61f-a930-77c5-1e876786cb3c-1756882765";
        assert_eq!(
            destination_vm_name("pgtest1", job, true),
            "pgtest1-test-1756882765"
        );
        assert_eq!(destination_vm_name("PG Test_1", job, false), "pg-test-1");
        assert_eq!(
            destination_vm_name("1st server", job, false),
            "vm-1st-server"
        );
        let long = destination_vm_name(&"x".repeat(100), job, true);
        assert!(long.len() <= 63 && long.ends_with("-1756882765"));
    }
}
