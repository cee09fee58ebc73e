//! VirtIO driver injection with libguestfs' `virt-customize` (WIRE.md,
//! "virt-customize").
//!
//! [`VirtCustomize::inject_virtio`] runs
//! `virt-customize --format raw -a DEVICE --no-network --inject-virtio-win PATH`
//! on a disk the host sees as a block device. The guest must be shut down;
//! the disk changes in place.
//!
//! - The process runs in its own process group with stdin closed and
//!   `LC_ALL=C` (the outcome is read from its English messages). Its stdout
//!   and stderr are streamed line by line to the caller as they arrive
//!   ([`OutputLine`], with [`OutputLine::progress`] for the
//!   `[  12.3] Setting a random seed` lines) and kept, bounded, as the
//!   step's log ([`StepLog`]).
//! - On the deadline or on cancel the whole group gets SIGTERM, then
//!   SIGKILL after a grace period; the leader is reaped and any member left
//!   behind is killed, so nothing keeps the disk open afterwards. Dropping
//!   the future mid-run kills the whole group with SIGKILL (a backstop; the
//!   cancel token is the way to stop a run). A token already cancelled
//!   starts nothing.
//! - **Only call it for Windows guests.** virt-customize exits 0 even when
//!   it injected nothing; the warnings in
//!   [`NO_DRIVER_WARNINGS`](outcome::NO_DRIVER_WARNINGS), including the one
//!   it prints for a non-Windows guest, are turned into
//!   [`InjectionError::DriversNotInjected`].
//!
//! ```no_run
//! # async fn demo(settings: &failover_platform::config::VirtCustomizeSettings) {
//! use step_worker::virt_customize::VirtCustomize;
//! use tokio_util::sync::CancellationToken;
//!
//! let (progress_tx, _progress_rx) = tokio::sync::watch::channel(String::new());
//! let result = VirtCustomize::new(settings)
//!     .inject_virtio("/dev/drbd1001".as_ref(), CancellationToken::new(), |line| {
//!         if let Some(progress) = line.progress() {
//!             // The heartbeat task reads the latest message from the watch.
//!             let _ = progress_tx.send(progress.message.to_owned());
//!         }
//!     })
//!     .await;
//! # let _ = result;
//! # }
//! ```

mod outcome;
mod output;
mod process_group;
mod run;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use failover_platform::config::VirtCustomizeSettings;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::CallMetrics;

pub use outcome::{InjectionError, InjectionReport, NO_DRIVER_WARNINGS};
pub use output::{OutputLine, Progress, StepLog, Stream, parse_progress};

/// Time between SIGTERM and SIGKILL when stopping the process group.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// Size of the output kept as the step's log.
pub const DEFAULT_LOG_LIMIT_BYTES: usize = 256 * 1024;

/// Runs virt-customize to inject VirtIO drivers into Windows disks.
#[derive(Debug, Clone)]
pub struct VirtCustomize {
    command: PathBuf,
    virtio_win_path: PathBuf,
    deadline: Duration,
    kill_grace: Duration,
    log_limit_bytes: usize,
    calls: CallMetrics,
}

impl VirtCustomize {
    pub fn new(settings: &VirtCustomizeSettings) -> Self {
        Self {
            command: settings.command.clone(),
            virtio_win_path: settings.virtio_win_path.clone(),
            deadline: settings.deadline,
            kill_grace: DEFAULT_KILL_GRACE,
            log_limit_bytes: DEFAULT_LOG_LIMIT_BYTES,
            calls: CallMetrics::default(),
        }
    }

    /// Records every run's duration and failure into `calls`.
    pub fn with_call_metrics(mut self, calls: CallMetrics) -> Self {
        self.calls = calls;
        self
    }

    /// Overrides the deadline of the settings.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the time between SIGTERM and SIGKILL ([`DEFAULT_KILL_GRACE`]).
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Sets how much output the log keeps ([`DEFAULT_LOG_LIMIT_BYTES`]).
    pub fn with_log_limit_bytes(mut self, limit: usize) -> Self {
        self.log_limit_bytes = limit;
        self
    }

    pub fn command(&self) -> &Path {
        &self.command
    }

    pub fn virtio_win_path(&self) -> &Path {
        &self.virtio_win_path
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The arguments passed to the program for `device` (`--format` must
    /// come before `-a`).
    pub fn arguments(&self, device: &Path) -> Vec<OsString> {
        vec![
            "--format".into(),
            "raw".into(),
            "-a".into(),
            device.into(),
            "--no-network".into(),
            "--inject-virtio-win".into(),
            self.virtio_win_path.clone().into(),
        ]
    }

    /// Injects the VirtIO drivers into the Windows disk `device`, calling
    /// `on_line` for every output line as it arrives (in arrival order
    /// across stdout and stderr). Stops the process group when `cancel` is
    /// cancelled or the deadline passes. See the module documentation for
    /// how the outcome is classified.
    pub async fn inject_virtio(
        &self,
        device: &Path,
        cancel: CancellationToken,
        mut on_line: impl FnMut(&OutputLine) + Send,
    ) -> Result<InjectionReport, InjectionError> {
        let span = tracing::info_span!(
            "virt_customize",
            otel.name = "virt-customize inject-virtio-win",
            otel.status_code = tracing::field::Empty,
            device = %device.display(),
            command = %self.command.display(),
        );
        let started = std::time::Instant::now();
        let result = run::inject(self, device, cancel, &mut on_line)
            .instrument(span.clone())
            .await;
        self.calls.observe(
            "virt-customize",
            "inject-virtio-win",
            started.elapsed(),
            result.is_err().then_some("failed"),
        );
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}
