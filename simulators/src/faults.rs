//! Fault injection shared by the simulators. A fault rule matches an
//! operation (a CloudStack command such as `deployVirtualMachine`, or a
//! LINSTOR operation such as `snapshot-create`; `*` matches all) and adds
//! latency, fails a share of the calls, hangs them, or (CloudStack) lets the
//! async job they start fail. Rules are set and cleared through each
//! simulator's admin API.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One rule, as posted to `/sim/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The operation it applies to, or `*` for every operation.
    pub operation: String,
    /// Latency added before the call is handled.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of calls (0.0 to 1.0) answered with an error instead.
    #[serde(default)]
    pub failure_rate: f64,
    /// HTTP status of an injected failure (default: 530 for CloudStack,
    /// 500 for LINSTOR, chosen by the simulator when absent).
    #[serde(default)]
    pub failure_status: Option<u16>,
    /// The call never answers (until the client gives up).
    #[serde(default)]
    pub hang: bool,
    /// CloudStack only: the async job the call starts ends with jobstatus 2.
    #[serde(default)]
    pub fail_async_job: bool,
    /// How many matching calls the rule affects before it retires itself;
    /// absent means until cleared.
    #[serde(default)]
    pub remaining: Option<u32>,
}

/// What to do with one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultDecision {
    pub latency: Duration,
    pub fail: Option<Option<u16>>,
    pub hang: bool,
    pub fail_async_job: bool,
}

impl FaultDecision {
    /// Waits the injected latency, then forever if the call hangs.
    pub async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultRuleError {
    #[error("operation must not be empty")]
    EmptyOperation,
    #[error("failure_rate must be between 0 and 1, got {0}")]
    BadRate(f64),
    #[error("failure_status must be between 400 and 599, got {0}")]
    BadStatus(u16),
}

impl FaultRule {
    pub fn validate(&self) -> Result<(), FaultRuleError> {
        if self.operation.trim().is_empty() {
            return Err(FaultRuleError::EmptyOperation);
        }
        if !(0.0..=1.0).contains(&self.failure_rate) || self.failure_rate.is_nan() {
            return Err(FaultRuleError::BadRate(self.failure_rate));
        }
        if let Some(status) = self.failure_status
            && !(400..=599).contains(&status)
        {
            return Err(FaultRuleError::BadStatus(status));
        }
        Ok(())
    }

    fn matches(&self, operation: &str) -> bool {
        self.operation == "*" || self.operation.eq_ignore_ascii_case(operation)
    }
}

/// The active rules of one simulator.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    pub fn add(&self, rule: FaultRule) -> Result<(), FaultRuleError> {
        rule.validate()?;
        self.rules.lock().expect("fault rules lock").push(rule);
        Ok(())
    }

    pub fn clear(&self) {
        self.rules.lock().expect("fault rules lock").clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().expect("fault rules lock").clone()
    }

    /// Decides the fate of one call of `operation`, consuming one use of
    /// every rule that matches.
    pub fn decide(&self, operation: &str) -> FaultDecision {
        let mut rules = self.rules.lock().expect("fault rules lock");
        let mut decision = FaultDecision::default();
        for rule in rules.iter_mut().filter(|r| r.matches(operation)) {
            decision.latency += Duration::from_millis(rule.latency_ms);
            decision.hang |= rule.hang;
            decision.fail_async_job |= rule.fail_async_job;
            if decision.fail.is_none()
                && rule.failure_rate > 0.0
                && fastrand::f64() < rule.failure_rate
            {
                decision.fail = Some(rule.failure_status);
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        rules.retain(|r| r.remaining != Some(0));
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: &str) -> FaultRule {
        FaultRule {
            operation: op.into(),
            latency_ms: 0,
            failure_rate: 0.0,
            failure_status: None,
            hang: false,
            fail_async_job: false,
            remaining: None,
        }
    }

    #[test]
    fn matching_is_by_operation_or_wildcard() {
        let faults = Faults::default();
        faults
            .add(FaultRule {
                latency_ms: 5,
                ..rule("deployVirtualMachine")
            })
            .unwrap();
        faults
            .add(FaultRule {
                latency_ms: 7,
                ..rule("*")
            })
            .unwrap();
        assert_eq!(
            faults.decide("deployvirtualmachine").latency,
            Duration::from_millis(12)
        );
        assert_eq!(faults.decide("listZones").latency, Duration::from_millis(7));
    }

    #[test]
    fn certain_failure_and_remaining_uses() {
        let faults = Faults::default();
        faults
            .add(FaultRule {
                failure_rate: 1.0,
                failure_status: Some(503),
                remaining: Some(2),
                ..rule("op")
            })
            .unwrap();
        assert_eq!(faults.decide("op").fail, Some(Some(503)));
        assert_eq!(faults.decide("op").fail, Some(Some(503)));
        assert_eq!(faults.decide("op").fail, None);
        assert!(faults.list().is_empty());
    }

    #[test]
    fn invalid_rules_are_refused() {
        let faults = Faults::default();
        assert_eq!(
            faults.add(FaultRule {
                failure_rate: 1.5,
                ..rule("op")
            }),
            Err(FaultRuleError::BadRate(1.5))
        );
        assert_eq!(faults.add(rule(" ")), Err(FaultRuleError::EmptyOperation));
        assert_eq!(
            faults.add(FaultRule {
                failure_status: Some(200),
                ..rule("op")
            }),
            Err(FaultRuleError::BadStatus(200))
        );
    }
}
