//! `test-vm-shutdown` / `compensation-vm-shutdown`: the destination VM
//! stops. A graceful stop gets `worker.vm_stop_deadline`; after that (or
//! when it fails) the VM is powered off (`forced=true`). A VM that is
//! stopped, destroyed or gone needs nothing.

use super::super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use super::{retryable, settled_vm, state_of};
use crate::cloudstack::VmState;

pub(in crate::steps) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ctx.step.error_code();
    let cs = &exec.cloudstack;
    let deadline = exec.vm_stop_deadline;
    let Some(dest) = ctx.output(outputs::DESTINATION_VM_ID).map(str::to_owned) else {
        return StepResult::done("no destination VM was created; nothing to stop");
    };
    ctx.progress.set(10, format!("looking up VM {dest}"));
    // A VM in the middle of a start or stop is given the stop deadline to
    // finish it first: CloudStack refuses a stop meanwhile.
    let vm = match settled_vm(cs, &dest, deadline).await {
        Ok(Some(vm)) => vm,
        Ok(None) => {
            return StepResult::done(format!("VM {dest} does not exist; nothing to stop"));
        }
        Err(e) => return e.into_failure(code, &format!("looking up VM {dest}")),
    };
    match vm.state() {
        Some(VmState::Stopped) => {
            return StepResult::done(format!("VM {} ({dest}) is already stopped", vm.name));
        }
        Some(VmState::Destroyed | VmState::Expunging) => {
            return StepResult::done(format!(
                "VM {} ({dest}) is {}; nothing to stop",
                vm.name,
                state_of(&vm)
            ));
        }
        Some(VmState::Error) => {
            return StepResult::done(format!(
                "VM {} ({dest}) is in state Error and does not run; nothing to stop",
                vm.name
            ));
        }
        Some(state) if state.is_transitional() => {
            return retryable(
                code,
                format!(
                    "VM {dest} is still {state} after {}",
                    humantime::format_duration(deadline)
                ),
            );
        }
        _ => {}
    }

    ctx.progress.set(20, format!("stopping VM {dest}"));
    ctx.note(format!(
        "VM {} ({dest}) is {}; stopping it (graceful, at most {})",
        vm.name,
        state_of(&vm),
        humantime::format_duration(deadline)
    ));
    match tokio::time::timeout(deadline, cs.stop_vm(&dest, false)).await {
        Ok(Ok(now)) if now.state() == Some(&VmState::Stopped) => {
            return verified(exec, ctx, &dest, "stopped").await;
        }
        Ok(Ok(now)) => ctx.note(format!(
            "VM {dest} is {} after the graceful stop; powering it off",
            state_of(&now)
        )),
        Ok(Err(e)) => ctx.note(format!("graceful stop failed ({e}); powering it off")),
        Err(_) => ctx.note(format!(
            "VM {dest} did not stop within {}; powering it off",
            humantime::format_duration(deadline)
        )),
    }

    ctx.progress.set(60, format!("powering off VM {dest}"));
    match cs.stop_vm(&dest, true).await {
        Ok(now) if now.state() == Some(&VmState::Stopped) => {
            verified(exec, ctx, &dest, "powered off").await
        }
        Ok(now) => retryable(
            code,
            format!("VM {dest} is {} after a forced stop", state_of(&now)),
        ),
        Err(forced) => {
            // The graceful stop may still have been under way and refused
            // the forced one: look again before giving up.
            match settled_vm(cs, &dest, deadline).await {
                Ok(Some(now)) if now.state() == Some(&VmState::Stopped) => {
                    ctx.note(format!(
                        "the forced stop failed ({forced}) but VM {dest} is stopped"
                    ));
                    verified(exec, ctx, &dest, "stopped").await
                }
                Ok(None) => StepResult::done(format!("VM {dest} no longer exists")),
                Ok(Some(now)) if now.state().is_some_and(|s| s.is_transitional()) => retryable(
                    code,
                    format!(
                        "VM {dest} is still {} and refused a forced stop: {forced}",
                        state_of(&now)
                    ),
                ),
                Ok(Some(_)) | Err(_) => {
                    forced.into_failure(code, &format!("forced stop of VM {dest}"))
                }
            }
        }
    }
}

/// Reads the VM once more and succeeds only when it is `Stopped`.
async fn verified(exec: &Executors, ctx: &StepContext, dest: &str, how: &str) -> StepResult {
    let code = ctx.step.error_code();
    ctx.progress
        .set(90, format!("checking that VM {dest} is stopped"));
    match exec.cloudstack.get_vm(dest).await {
        Ok(Some(vm)) if vm.state() == Some(&VmState::Stopped) => {
            ctx.note(format!("VM {} ({dest}) is Stopped", vm.name));
            StepResult::done(format!("VM {} ({dest}) {how}", vm.name))
        }
        Ok(Some(vm)) => retryable(
            code,
            format!("VM {dest} is {} after the stop", state_of(&vm)),
        ),
        Ok(None) => StepResult::done(format!("VM {dest} no longer exists")),
        Err(e) => e.into_failure(code, &format!("looking up VM {dest}")),
    }
}
