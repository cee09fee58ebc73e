//! The settings the rules decide with, fixed at start from the
//! configuration, and the refusals every decision may answer with.

use std::time::Duration;

use crate::job::Placement;
use crate::orchestration::{self, RetryPolicy};
use crate::pipeline::StepName;

/// What the rules are configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub retry: RetryPolicy,
    /// A claimed step's lease; workers renew it by heartbeat.
    pub lease: Duration,
    /// How long a test failover with auto-cleanup but no `test_duration` stays up.
    pub default_test_duration: Duration,
    /// Accepted, unfinished operations per VM.
    pub max_operations_per_vm: u32,
    /// Where failed-over VMs land.
    pub placement: Placement,
    /// For a NIC whose registration names no network of its own.
    pub default_test_network_id: Option<String>,
    pub default_live_network_id: Option<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            retry: RetryPolicy::default(),
            lease: Duration::from_secs(60),
            default_test_duration: Duration::from_secs(3600),
            max_operations_per_vm: 5,
            placement: Placement {
                zone_id: "zone".into(),
                template_id: "template".into(),
                appliance_vm_id: "appliance".into(),
            },
            default_test_network_id: None,
            default_live_network_id: None,
        }
    }
}

/// An event or command that must not change anything: a duplicate delivery,
/// a zombie worker's late report, an operator request that does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Rule(#[from] orchestration::Refusal),
    #[error("step {step} attempt {attempt} is leased to another worker")]
    LeasedToAnother { step: StepName, attempt: u32 },
    #[error("the lease was renewed")]
    LeaseRenewed,
}
