//! One run on accepted arguments: the timeline of messages the real tool
//! prints for `--inject-virtio-win`, the marker, and the `hang` mode.
//!
//! The real tool prints no progress line for the injection itself; it
//! happens between `Setting a random seed` and `SELinux relabelling`.

use std::io;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use super::args::Invocation;
use super::{
    Control, DRIVERS, InjectionMarker, Mode, RunRecord, marker_path, run_record_path, tool_error,
    tool_warning, write_json,
};

/// The Windows version the stand-in's guest claims in its messages.
const GUEST: &str = "10.0 x86_64 Server win2k19";

struct Session {
    invocation: Invocation,
    control: Control,
    clock: Instant,
}

impl Session {
    fn progress(&self, message: &str) {
        if !self.invocation.quiet {
            println!("[{:>6.1}] {message}", self.clock.elapsed().as_secs_f64());
        }
    }

    fn error(&self, message: &str) -> ExitCode {
        tool_error(message, self.invocation.verbose_and_trace)
    }

    /// Sleeps until `fraction` of the configured duration has passed.
    async fn until(&self, fraction: f64) {
        let total = Duration::from_millis(self.control.duration_ms);
        tokio::time::sleep_until(self.clock + total.mul_f64(fraction)).await;
    }
}

pub(super) async fn run(invocation: Invocation) -> ExitCode {
    let clock = Instant::now();
    if !invocation.quiet {
        println!("[{:>6.1}] Examining the guest ...", 0.0);
    }
    let (Some((_, device)), None) = (invocation.disks.first(), &invocation.domain) else {
        let domain = invocation.domain.as_deref().unwrap_or_default();
        return tool_error(
            &format!(
                "libguestfs error: no libvirt domain called '{domain}': \
                 Domain not found: no domain with matching name '{domain}'"
            ),
            invocation.verbose_and_trace,
        );
    };
    let device = device.clone();
    for (_, disk) in &invocation.disks {
        if let Err(e) = std::fs::File::open(disk) {
            let message = format!("libguestfs error: {}: {}", disk.display(), describe(&e));
            return tool_error(&message, invocation.verbose_and_trace);
        }
    }
    let control = match Control::load(&device, |name| std::env::var(name).ok()) {
        Ok(control) => control,
        Err(e) => {
            return tool_error(
                &format!("stand-in control: {e}"),
                invocation.verbose_and_trace,
            );
        }
    };
    let session = Session {
        invocation,
        control,
        clock,
    };
    let mut record = RunRecord {
        pid: std::process::id(),
        mode: session.control.mode,
        started_at: Utc::now(),
        args: session.invocation.args.clone(),
        child_pid: None,
    };
    if let Err(e) = write_json(&run_record_path(&device), &record) {
        return session.error(&format!("stand-in run record: {e}"));
    }

    if session.control.mode == Mode::Hang {
        return hang(&session, &device, &mut record).await;
    }
    session.until(0.4).await;
    if session.control.mode == Mode::Fail {
        return session.error(&session.control.error);
    }
    let windows = session.control.mode != Mode::Linux;
    session.progress("Setting a random seed");
    if windows {
        tool_warning("random seed could not be set for this type of guest");
    }
    session.until(0.8).await;
    for path in &session.invocation.inject_virtio_win {
        if let Err(code) = inject(&session, windows, path) {
            return code;
        }
    }
    session.progress("SELinux relabelling");
    session.until(0.95).await;
    session.progress("Finishing off");
    session.until(1.0).await;
    ExitCode::SUCCESS
}

/// One `--inject-virtio-win PATH`: the warnings, or the markers.
fn inject(session: &Session, windows: bool, path: &Path) -> Result<(), ExitCode> {
    if !windows {
        tool_warning("--inject-virtio-win ignored for non-Windows guest");
        return Ok(());
    }
    // Like the real tool, a path that is neither a directory nor a file
    // yields no drivers rather than an error.
    let usable = std::fs::metadata(path).is_ok();
    if session.control.mode == Mode::NoDrivers || !usable {
        tool_warning(&format!(
            "there are no virtio drivers available for this version of Windows ({GUEST}).  \
             virt-v2v looks for drivers in {}\n\nThe guest will be configured to use slower \
             emulated devices.",
            path.display()
        ));
        tool_warning(
            "--inject-virtio-win: virtio drivers were not found for this Windows version in the \
             virtio-win source that you specified",
        );
        return Ok(());
    }
    if session.invocation.dry_run {
        return Ok(());
    }
    for (format, disk) in &session.invocation.disks {
        let marker = marker_path(disk);
        let injections = std::fs::read(&marker)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<InjectionMarker>(&bytes).ok())
            .map_or(0, |previous| previous.injections);
        let record = InjectionMarker {
            virtio_win_path: path.to_path_buf(),
            injected_at: Utc::now(),
            drivers: DRIVERS.iter().map(|d| (*d).to_owned()).collect(),
            block_driver: "viostor".to_owned(),
            pid: std::process::id(),
            format: format.clone(),
            network: session.invocation.network,
            injections: injections + 1,
        };
        if let Err(e) = write_json(&marker, &record) {
            return Err(session.error(&format!(
                "libguestfs error: {}: {}",
                marker.display(),
                describe(&e)
            )));
        }
    }
    Ok(())
}

/// Never finishes: starts a child standing for the qemu appliance (in the
/// same process group, holding the same stdout and stderr) and waits.
/// SIGTERM ends the stand-in alone, by its default action, and leaves the
/// child running, like a tool killed mid-run leaves its appliance: only a
/// signal to the whole group stops both. With `ignore_sigterm` a handler
/// that is never read swallows SIGTERM, so only SIGKILL ends the wait.
async fn hang(session: &Session, device: &Path, record: &mut RunRecord) -> ExitCode {
    let _swallow_sigterm = if session.control.ignore_sigterm {
        match signal(SignalKind::terminate()) {
            Ok(terminate) => Some(terminate),
            Err(e) => return session.error(&format!("stand-in: cannot handle SIGTERM: {e}")),
        }
    } else {
        None
    };
    let mut child = match tokio::process::Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return session.error(&format!("stand-in: cannot start sleep: {e}")),
    };
    record.child_pid = child.id();
    if let Err(e) = write_json(&run_record_path(device), record) {
        return session.error(&format!("stand-in run record: {e}"));
    }
    // Reap the child if it dies first, then keep waiting.
    let _ = child.wait().await;
    std::future::pending().await
}

/// An I/O error as libguestfs words it (strerror, without Rust's suffix).
fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "No such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "Permission denied".to_owned(),
        _ => {
            let text = error.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_owned()
        }
    }
}
