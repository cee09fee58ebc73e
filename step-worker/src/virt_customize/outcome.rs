//! The outcome of a run: the report of a successful injection, the error
//! of a failed one, and the reading of the output that tells them apart.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::output::{LogBuffer, OutputLine, StepLog, Stream, tool_message};

/// Warnings with which virt-customize exits 0 although it injected nothing
/// usable (WIRE.md). For a Windows guest they are failures.
pub const NO_DRIVER_WARNINGS: [&str; 3] = [
    "virtio drivers were not found for this Windows version",
    "there are no virtio drivers available for this version of Windows",
    "--inject-virtio-win ignored for non-Windows guest",
];

const MAX_WARNINGS: usize = 64;
const MAX_ERROR_LINES: usize = 32;
const STDERR_TAIL_LINES: usize = 8;

/// A successful injection.
#[derive(Debug, Clone)]
pub struct InjectionReport {
    /// Everything the tool printed (bounded, see [`StepLog`]).
    pub log: StepLog,
    pub duration: Duration,
    /// The messages of the other `virt-customize: warning:` lines, e.g.
    /// `random seed could not be set for this type of guest`.
    pub warnings: Vec<String>,
}

/// Why an injection did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InjectionError {
    /// virt-customize exited 0 but printed one of [`NO_DRIVER_WARNINGS`].
    #[error("virt-customize injected no virtio drivers: {warning}")]
    DriversNotInjected { warning: String, log: StepLog },
    /// virt-customize exited non-zero (or was killed by someone else).
    #[error("virt-customize failed ({}): {}", describe_exit(*.exit_code, *.signal), summary(.stderr))]
    Failed {
        exit_code: Option<i32>,
        signal: Option<i32>,
        /// The `virt-customize: error: ...` lines, or the last lines of
        /// stderr when there is none (argument errors have no such prefix).
        stderr: Vec<String>,
        log: StepLog,
    },
    /// The deadline passed; the process group was killed.
    #[error("virt-customize did not finish within {}", humantime::format_duration(*.after))]
    TimedOut { after: Duration, log: StepLog },
    /// The caller cancelled; the process group was killed.
    #[error("virt-customize was cancelled")]
    Cancelled { log: StepLog },
    /// The program could not be started (not installed, not executable...).
    #[error("cannot run {}: {source}", .command.display())]
    Spawn {
        command: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Waiting for the process failed; the process group was killed.
    #[error("cannot wait for virt-customize: {source}")]
    Wait {
        #[source]
        source: io::Error,
    },
}

impl InjectionError {
    /// A stable code for the step's failure record and metrics.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::DriversNotInjected { .. } => "VIRTIO_DRIVERS_NOT_INJECTED",
            Self::Failed { .. } => "VIRT_CUSTOMIZE_FAILED",
            Self::TimedOut { .. } => "VIRT_CUSTOMIZE_TIMED_OUT",
            Self::Cancelled { .. } => "CANCELLED",
            Self::Spawn { .. } => "VIRT_CUSTOMIZE_NOT_RUNNABLE",
            Self::Wait { .. } => "VIRT_CUSTOMIZE_WAIT_FAILED",
        }
    }

    /// Whether running the same injection again may succeed. A timeout may
    /// be a slow host; a spawn failure other than a missing or forbidden
    /// program may be a transient resource shortage. Missing drivers and
    /// tool errors repeat identically, and a cancel is deliberate.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::TimedOut { .. } | Self::Wait { .. } => true,
            Self::Spawn { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            Self::DriversNotInjected { .. } | Self::Failed { .. } | Self::Cancelled { .. } => false,
        }
    }

    /// The tool's output, when it ran.
    pub fn log(&self) -> Option<&StepLog> {
        match self {
            Self::DriversNotInjected { log, .. }
            | Self::Failed { log, .. }
            | Self::TimedOut { log, .. }
            | Self::Cancelled { log } => Some(log),
            Self::Spawn { .. } | Self::Wait { .. } => None,
        }
    }
}

fn describe_exit(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown exit status".to_owned(),
    }
}

fn summary(stderr: &[String]) -> &str {
    stderr.first().map_or("no error message", String::as_str)
}

/// Reads the output as it arrives: keeps the log and picks out warnings
/// and errors, independently of what the log has to omit.
#[derive(Debug)]
pub(super) struct OutputAnalysis {
    log: LogBuffer,
    warnings: Vec<String>,
    no_driver_warning: Option<String>,
    error_lines: Vec<String>,
    stderr_tail: VecDeque<String>,
}

impl OutputAnalysis {
    pub(super) fn new(log_limit_bytes: usize) -> Self {
        Self {
            log: LogBuffer::new(log_limit_bytes),
            warnings: Vec::new(),
            no_driver_warning: None,
            error_lines: Vec::new(),
            stderr_tail: VecDeque::new(),
        }
    }

    pub(super) fn push(&mut self, line: OutputLine) {
        if let Some(warning) = tool_message(&line.text, "warning") {
            if NO_DRIVER_WARNINGS.iter().any(|w| warning.contains(w)) {
                self.no_driver_warning
                    .get_or_insert_with(|| warning.to_owned());
            } else if self.warnings.len() < MAX_WARNINGS {
                self.warnings.push(warning.to_owned());
            }
        }
        if line.stream == Stream::Stderr {
            if tool_message(&line.text, "error").is_some()
                && self.error_lines.len() < MAX_ERROR_LINES
            {
                self.error_lines.push(line.text.clone());
            }
            if !line.text.trim().is_empty() {
                if self.stderr_tail.len() == STDERR_TAIL_LINES {
                    self.stderr_tail.pop_front();
                }
                self.stderr_tail.push_back(line.text.clone());
            }
        }
        self.log.push(line);
    }

    /// Classifies a run that ended on its own (not stopped by us).
    pub(super) fn classify(
        self,
        status: ExitStatus,
        duration: Duration,
    ) -> Result<InjectionReport, InjectionError> {
        use std::os::unix::process::ExitStatusExt;

        let log = self.log.finish();
        if !status.success() {
            let stderr = if self.error_lines.is_empty() {
                self.stderr_tail.into_iter().collect()
            } else {
                self.error_lines
            };
            return Err(InjectionError::Failed {
                exit_code: status.code(),
                signal: status.signal(),
                stderr,
                log,
            });
        }
        if let Some(warning) = self.no_driver_warning {
            return Err(InjectionError::DriversNotInjected { warning, log });
        }
        Ok(InjectionReport {
            log,
            duration,
            warnings: self.warnings,
        })
    }

    pub(super) fn into_log(self) -> StepLog {
        self.log.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn analysis(lines: &[(Stream, &str)]) -> OutputAnalysis {
        let mut analysis = OutputAnalysis::new(64 * 1024);
        for (stream, text) in lines {
            analysis.push(OutputLine {
                stream: *stream,
                text: (*text).to_owned(),
                elapsed: Duration::ZERO,
            });
        }
        analysis
    }

    #[test]
    fn exit_zero_with_a_no_driver_warning_is_a_failure() {
        let result = analysis(&[
            (Stream::Stdout, "[   0.0] Examining the guest ..."),
            (
                Stream::Stdout,
                "virt-customize: warning: --inject-virtio-win: virtio drivers were not found \
                 for this Windows version in the virtio-win source that you specified",
            ),
        ])
        .classify(ExitStatus::from_raw(0), Duration::ZERO);
        let Err(InjectionError::DriversNotInjected { warning, .. }) = result else {
            panic!("expected DriversNotInjected, got {result:?}");
        };
        assert!(warning.starts_with("--inject-virtio-win: virtio drivers were not found"));
    }

    #[test]
    fn other_warnings_are_reported_with_success() {
        let report = analysis(&[(
            Stream::Stdout,
            "virt-customize: warning: random seed could not be set for this type of guest",
        )])
        .classify(ExitStatus::from_raw(0), Duration::from_secs(3))
        .unwrap();
        assert_eq!(
            report.warnings,
            ["random seed could not be set for this type of guest"]
        );
        assert_eq!(report.duration, Duration::from_secs(3));
    }

    #[test]
    fn a_failure_without_error_lines_keeps_the_stderr_tail() {
        let result = analysis(&[
            (
                Stream::Stderr,
                "virt-customize: unrecognized option '--bogus'",
            ),
            (
                Stream::Stderr,
                "Try ‘virt-customize --help’ for more information.",
            ),
        ])
        .classify(ExitStatus::from_raw(1 << 8), Duration::ZERO);
        let Err(InjectionError::Failed {
            exit_code, stderr, ..
        }) = result
        else {
            panic!("expected Failed, got {result:?}");
        };
        assert_eq!(exit_code, Some(1));
        assert_eq!(stderr.len(), 2);
    }
}
