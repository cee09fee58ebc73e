//! `test-vm-startup` / `vm-startup`: start the destination VM and check it
//! runs with the expected NICs (`VM_START_FAILED`).

use failover_core::ErrorCode;

use super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use crate::cloudstack::VmState;

pub(super) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ErrorCode::VmStartFailed;
    let cs = &exec.cloudstack;
    let Some(dest) = ctx.output(outputs::DESTINATION_VM_ID).map(str::to_owned) else {
        return StepResult::fail(code, "no destination VM was recorded by the creation step");
    };
    let current = match cs.get_vm(&dest).await {
        Ok(Some(vm)) => vm,
        Ok(None) => return StepResult::fail(code, format!("destination VM {dest} does not exist")),
        Err(e) => return e.into_failure(code, "looking up the destination VM"),
    };
    let running = if current.state() == Some(&VmState::Running) {
        ctx.note(format!("VM {dest} is already running"));
        current
    } else {
        ctx.progress.set(20, format!("starting VM {dest}"));
        match cs.start_vm(&dest).await {
            Ok(vm) => vm,
            Err(e) => return e.into_failure(code, "startVirtualMachine"),
        }
    };
    if running.state() != Some(&VmState::Running) {
        return StepResult::Failed {
            code,
            message: format!(
                "VM {dest} is {} after start",
                running.state().map(|s| s.as_str()).unwrap_or("unknown")
            ),
            retryable: true,
        };
    }
    let wanted: Vec<String> = ctx
        .vm()
        .nics
        .iter()
        .filter_map(|n| ctx.task.network_mappings.get(&n.source_network).cloned())
        .collect();
    if running.nic.len() < wanted.len() {
        return StepResult::fail(
            code,
            format!(
                "VM {dest} runs with {} NIC(s), expected {}",
                running.nic.len(),
                wanted.len()
            ),
        );
    }
    for network in &wanted {
        if !running.nic.iter().any(|n| &n.network_id == network) {
            return StepResult::fail(
                code,
                format!("VM {dest} runs without a NIC on network {network}"),
            );
        }
    }
    let addresses: Vec<String> = running
        .nic
        .iter()
        .map(|n| {
            format!(
                "{}={}",
                n.network_id,
                n.ip_address.clone().unwrap_or_default()
            )
        })
        .collect();
    ctx.note(format!(
        "VM {dest} is Running with NICs {}",
        addresses.join(", ")
    ));
    StepResult::done(format!(
        "VM {} running with {} NIC(s)",
        running.name,
        running.nic.len()
    ))
}
