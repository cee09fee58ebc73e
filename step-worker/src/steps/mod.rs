//! The step executors. Each one looks before it acts, so a redelivered or
//! retried step continues where an earlier attempt stopped and never makes a
//! second VM, snapshot or attachment.

mod create_vm;
mod move_volumes;
mod naming;
mod snapshot;
mod start_vm;
mod undo;
mod validation;
mod virtio;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use failover_core::ErrorCode;
use failover_core::pipeline::{StepKind, StepName};
use failover_platform::Settings;
use failover_proto::v1 as pb;

use crate::cloudstack::{CloudStackClient, CloudStackError};
use crate::linstor::{LinstorClient, LinstorError};
use crate::metrics::CallMetrics;
use crate::virt_customize::VirtCustomize;

pub use naming::{custom_id, destination_vm_name};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Succeeded {
        outputs: BTreeMap<String, String>,
        message: String,
    },
    Skipped {
        reason: String,
    },
    Failed {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
}

impl StepResult {
    pub fn kind(&self) -> &'static str {
        match self {
            StepResult::Succeeded { .. } => "succeeded",
            StepResult::Skipped { .. } => "skipped",
            StepResult::Failed { .. } => "failed",
        }
    }

    fn done(message: impl Into<String>) -> Self {
        StepResult::Succeeded {
            outputs: BTreeMap::new(),
            message: message.into(),
        }
    }

    fn fail(code: ErrorCode, message: impl Into<String>) -> Self {
        StepResult::Failed {
            code,
            message: message.into(),
            retryable: false,
        }
    }
}

/// An external call's error, as a step failure with its code.
pub trait IntoStepFailure {
    fn into_failure(self, code: ErrorCode, doing: &str) -> StepResult;
}

impl IntoStepFailure for CloudStackError {
    fn into_failure(self, code: ErrorCode, doing: &str) -> StepResult {
        StepResult::Failed {
            code,
            retryable: self.is_retryable(),
            message: format!("{doing}: {self}"),
        }
    }
}

impl IntoStepFailure for LinstorError {
    fn into_failure(self, code: ErrorCode, doing: &str) -> StepResult {
        StepResult::Failed {
            code,
            retryable: self.is_retryable(),
            message: format!("{doing}: {self}"),
        }
    }
}

/// The latest progress of a step, read by the heartbeat.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: Arc<watch::Sender<(u32, String)>>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tx: Arc::new(watch::channel((0, String::new())).0),
        }
    }

    pub fn set(&self, percent: u32, message: impl Into<String>) {
        let message = message.into();
        self.tx
            .send_modify(|p| *p = (percent.min(100).max(p.0), message));
    }

    pub fn latest(&self) -> (u32, String) {
        self.tx.borrow().clone()
    }
}

/// The step's log, kept bounded, reported with the outcome.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    inner: Arc<Mutex<String>>,
}

const LOG_LIMIT: usize = 128 * 1024;

impl LogBuffer {
    pub fn line(&self, text: impl AsRef<str>) {
        let mut log = self.inner.lock().expect("log lock");
        if log.len() >= LOG_LIMIT {
            return;
        }
        log.push_str(text.as_ref());
        log.push('\n');
        if log.len() >= LOG_LIMIT {
            log.push_str("[log truncated]\n");
        }
    }

    pub fn text(&self) -> String {
        self.inner.lock().expect("log lock").clone()
    }
}

/// One attempt of one step.
#[derive(Debug)]
pub struct StepContext {
    pub task: pb::StepTask,
    pub step: StepName,
    pub progress: Progress,
    pub log: LogBuffer,
    pub cancel: CancellationToken,
}

impl StepContext {
    pub fn new(task: pb::StepTask, step: StepName, cancel: CancellationToken) -> Self {
        StepContext {
            task,
            step,
            progress: Progress::new(),
            log: LogBuffer::default(),
            cancel,
        }
    }

    pub fn vm(&self) -> pb::VmSpec {
        self.task.vm.clone().unwrap_or_default()
    }

    pub fn placement(&self) -> pb::Placement {
        self.task.placement.clone().unwrap_or_default()
    }

    pub fn output(&self, key: &str) -> Option<&str> {
        self.task.outputs.get(key).map(String::as_str)
    }

    /// Logs a line both to the step log and to the process log.
    pub fn note(&self, text: impl AsRef<str>) {
        tracing::info!(job_id = %self.task.job_id, step = %self.step, "{}", text.as_ref());
        self.log.line(text);
    }
}

/// Output keys shared between steps.
pub mod outputs {
    pub const DESTINATION_VM_ID: &str = "destination_vm_id";
    pub const DESTINATION_VM_NAME: &str = "destination_vm_name";
    pub const TEMPLATE_ROOT_VOLUME_ID: &str = "template_root_volume_id";
    pub const SERVICE_OFFERING_ID: &str = "service_offering_id";
    /// `snapshot:<disk_id>` = `<resource>/<snapshot>`.
    pub fn snapshot(disk_id: &str) -> String {
        format!("snapshot:{disk_id}")
    }
    /// `appliance_device:<disk_id>` = the device id the disk's volume had on
    /// the appliance VM before the failover moved it (recorded by the
    /// creation step), where the undo puts it back.
    pub fn appliance_device(disk_id: &str) -> String {
        format!("appliance_device:{disk_id}")
    }
}

/// The clients every step uses.
#[derive(Debug)]
pub struct Executors {
    pub cloudstack: CloudStackClient,
    pub linstor: LinstorClient,
    pub virt_customize: VirtCustomize,
    /// How long an undo waits for a graceful VM stop before forcing it.
    pub vm_stop_deadline: Duration,
}

impl Executors {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Self::with_call_metrics(settings, CallMetrics::default())
    }

    /// Clients that record their calls into `calls`.
    pub fn with_call_metrics(settings: &Settings, calls: CallMetrics) -> anyhow::Result<Self> {
        Ok(Executors {
            cloudstack: CloudStackClient::new(&settings.cloudstack)?
                .with_call_metrics(calls.clone()),
            linstor: LinstorClient::new(&settings.linstor)?.with_call_metrics(calls.clone()),
            virt_customize: VirtCustomize::new(&settings.virt_customize).with_call_metrics(calls),
            vm_stop_deadline: settings.worker.vm_stop_deadline,
        })
    }

    /// Runs the step of `ctx`, unless it is cancelled first.
    pub async fn execute(&self, ctx: &StepContext) -> StepResult {
        let work = async {
            match ctx.step.kind() {
                StepKind::Validate => validation::run(self, ctx).await,
                StepKind::Snapshot => snapshot::run(self, ctx).await,
                StepKind::InjectVirtio => virtio::run(self, ctx).await,
                StepKind::CreateVm => create_vm::run(self, ctx).await,
                StepKind::MoveVolumes => move_volumes::run(self, ctx).await,
                StepKind::StartVm => start_vm::run(self, ctx).await,
                StepKind::StopVm => undo::stop_vm::run(self, ctx).await,
                StepKind::DetachVolumes => undo::detach::run(self, ctx).await,
                StepKind::RollbackSnapshots => undo::rollback::run(self, ctx).await,
                StepKind::ReattachVolumes => undo::reattach::run(self, ctx).await,
                StepKind::DestroyVm => undo::destroy_vm::run(self, ctx).await,
                StepKind::DeleteSnapshots => undo::delete_snapshots::run(self, ctx).await,
            }
        };
        tokio::select! {
            result = work => result,
            () = ctx.cancel.cancelled() => StepResult::Failed {
                code: ctx.step.error_code(),
                message: "the step was stopped before it finished".into(),
                retryable: true,
            },
        }
    }
}
