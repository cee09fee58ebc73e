//! `virtio-injection`: VirtIO drivers into a Windows guest's boot disk with
//! virt-customize (`VIRTIO_FAILED`). Linux guests have them already: skipped.

use failover_core::ErrorCode;

use super::{Executors, StepContext, StepResult};

pub(super) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let vm = ctx.vm();
    if vm.os_family != "windows" {
        return StepResult::Skipped {
            reason: format!(
                "{} guest: VirtIO drivers are injected into Windows guests only",
                vm.os_family
            ),
        };
    }
    let Some(boot) = vm.disks.iter().find(|d| d.boot) else {
        return StepResult::fail(ErrorCode::VirtioFailed, "the VM has no boot disk");
    };
    ctx.note(format!(
        "injecting VirtIO drivers into {} ({})",
        boot.device_path, boot.disk_id
    ));
    let mut percent = 5;
    ctx.progress.set(percent, "starting virt-customize");
    let result = exec
        .virt_customize
        .inject_virtio(boot.device_path.as_ref(), ctx.cancel.clone(), |line| {
            ctx.log.line(&line.text);
            if let Some(progress) = line.progress() {
                percent = (percent + 10).min(95);
                ctx.progress.set(percent, progress.message.to_owned());
            }
        })
        .await;
    match result {
        Ok(report) => {
            for warning in &report.warnings {
                ctx.note(format!("warning: {warning}"));
            }
            StepResult::done(format!(
                "drivers injected into {} in {:.1}s",
                boot.device_path,
                report.duration.as_secs_f64()
            ))
        }
        Err(e) => StepResult::Failed {
            code: ErrorCode::VirtioFailed,
            retryable: e.is_retryable(),
            message: e.to_string(),
        },
    }
}
