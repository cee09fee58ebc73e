//! The worker's virt-customize wrapper driving the real stand-in binary on
//! temporary disks: outcome classification, streaming, and that a stopped
//! run leaves no process of its group behind.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use failover_platform::config::VirtCustomizeSettings;
use simulators::virt_customize_standin::{
    ControlFile, InjectionMarker, Mode, RunRecord, marker_path, run_record_path,
};
use step_worker::virt_customize::{
    InjectionError, InjectionReport, OutputLine, Stream, VirtCustomize,
};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const STANDIN: &str = env!("CARGO_BIN_EXE_virt-customize-standin");

struct Fixture {
    _dir: TempDir,
    disk: PathBuf,
    virtio: PathBuf,
}

fn fixture(mode: Mode, duration_ms: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("win2019-disk0.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let virtio = dir.path().join("virtio-win");
    std::fs::create_dir(&virtio).unwrap();
    let control = ControlFile {
        mode: Some(mode),
        duration_ms: Some(duration_ms),
        ..ControlFile::default()
    };
    control.write_beside(&disk).unwrap();
    Fixture {
        _dir: dir,
        disk,
        virtio,
    }
}

fn wrapper(fixture: &Fixture, deadline: Duration) -> VirtCustomize {
    VirtCustomize::new(&VirtCustomizeSettings {
        command: STANDIN.into(),
        virtio_win_path: fixture.virtio.clone(),
        deadline,
    })
}

type Outcome = (Result<InjectionReport, InjectionError>, Vec<OutputLine>);

/// Starts an injection in a spawned task (which also proves the future is
/// `Send`); it yields the result and the lines streamed to the callback.
fn start(vc: VirtCustomize, disk: &Path, cancel: CancellationToken) -> JoinHandle<Outcome> {
    let disk = disk.to_path_buf();
    tokio::spawn(async move {
        let mut lines = Vec::new();
        let result = vc
            .inject_virtio(&disk, cancel, |line| lines.push(line.clone()))
            .await;
        (result, lines)
    })
}

async fn inject(vc: VirtCustomize, disk: &Path, cancel: CancellationToken) -> Outcome {
    start(vc, disk, cancel).await.unwrap()
}

fn read_marker(disk: &Path) -> Option<InjectionMarker> {
    let bytes = std::fs::read(marker_path(disk)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn read_run_record(disk: &Path) -> Option<RunRecord> {
    let bytes = std::fs::read(run_record_path(disk)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Waits until the hanging stand-in has recorded the child it started.
async fn wait_for_child(disk: &Path) -> RunRecord {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = read_run_record(disk).filter(|r| r.child_pid.is_some()) {
            return record;
        }
        assert!(
            Instant::now() < until,
            "the stand-in never recorded its child"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// State and process group from `/proc/<pid>/stat`, if the process exists.
fn stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// A zombie has exited: it only waits for a parent (or a non-reaping init,
/// as in some containers) to collect its status.
fn is_running(pid: u32) -> bool {
    matches!(stat(pid as i32), Some((state, _)) if !matches!(state, 'Z' | 'X'))
}

fn live_group_members(pgid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            matches!(stat(pid), Some((state, pgrp)) if pgrp == pgid as i32 && !matches!(state, 'Z' | 'X'))
        })
        .collect()
}

fn assert_group_gone(record: &RunRecord) {
    let child = record.child_pid.unwrap();
    assert!(
        !is_running(record.pid),
        "the stand-in {} is still running",
        record.pid
    );
    assert!(!is_running(child), "its child {child} is still running");
    assert_eq!(
        live_group_members(record.pid),
        Vec::<i32>::new(),
        "group {} not empty",
        record.pid
    );
}

fn progress_messages(lines: &[OutputLine]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| line.progress().map(|p| p.message.to_owned()))
        .collect()
}

#[test]
fn the_command_line_is_the_wire_form() {
    let fixture = fixture(Mode::Ok, 0);
    let args = wrapper(&fixture, Duration::from_secs(1)).arguments(&fixture.disk);
    let expected: Vec<OsString> = vec![
        "--format".into(),
        "raw".into(),
        "-a".into(),
        fixture.disk.clone().into(),
        "--no-network".into(),
        "--inject-virtio-win".into(),
        fixture.virtio.clone().into(),
    ];
    assert_eq!(args, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_the_drivers_and_streams_progress_in_order() {
    let fixture = fixture(Mode::Ok, 400);
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, lines) = inject(vc.clone(), &fixture.disk, CancellationToken::new()).await;
    let report = result.unwrap();

    assert_eq!(
        progress_messages(&lines),
        [
            "Examining the guest ...",
            "Setting a random seed",
            "SELinux relabelling",
            "Finishing off"
        ]
    );
    let clocks: Vec<Duration> = lines
        .iter()
        .filter_map(|l| l.progress().map(|p| p.at))
        .collect();
    assert!(clocks.is_sorted(), "{clocks:?}");
    assert!(lines.windows(2).all(|w| w[0].elapsed <= w[1].elapsed));
    assert!(
        lines.iter().all(|l| l.stream == Stream::Stdout),
        "{lines:?}"
    );
    assert_eq!(
        report.warnings,
        ["random seed could not be set for this type of guest"]
    );
    assert!(
        report.duration >= Duration::from_millis(400),
        "{:?}",
        report.duration
    );
    assert!(!report.log.is_truncated());
    assert_eq!(report.log.lines(), lines.as_slice());
    assert!(
        report.log.to_string().ends_with("Finishing off\n"),
        "{}",
        report.log
    );

    let marker = read_marker(&fixture.disk).expect("marker beside the disk");
    assert_eq!(marker.virtio_win_path, fixture.virtio);
    assert_eq!(marker.format.as_deref(), Some("raw"));
    assert!(!marker.network);
    assert!(marker.drivers.iter().any(|d| d == "viostor"));
    assert_eq!(marker.injections, 1);
    let record = read_run_record(&fixture.disk).unwrap();
    assert_eq!(marker.pid, record.pid);
    let expected: Vec<String> = vc
        .arguments(&fixture.disk)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(record.args, expected);
}

#[tokio::test]
async fn exit_1_is_a_failure_with_the_error_lines() {
    let fixture = fixture(Mode::Fail, 100);
    ControlFile {
        mode: Some(Mode::Fail),
        duration_ms: Some(100),
        error: Some("libguestfs error: simulated inspection failure".to_owned()),
        ignore_sigterm: None,
    }
    .write_beside(&fixture.disk)
    .unwrap();
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, lines) = inject(vc, &fixture.disk, CancellationToken::new()).await;

    let error = result.unwrap_err();
    assert!(!error.is_retryable());
    assert_eq!(error.error_code(), "VIRT_CUSTOMIZE_FAILED");
    let InjectionError::Failed {
        exit_code,
        signal,
        stderr,
        log,
    } = error
    else {
        panic!("expected Failed, got {error:?}");
    };
    assert_eq!((exit_code, signal), (Some(1), None));
    assert_eq!(
        stderr,
        ["virt-customize: error: libguestfs error: simulated inspection failure"]
    );
    assert!(log.to_string().contains("If reporting bugs"), "{log}");
    assert!(lines.iter().any(|l| l.stream == Stream::Stderr));
    assert!(read_marker(&fixture.disk).is_none());
}

#[tokio::test]
async fn the_missing_driver_warning_is_a_failure() {
    let fixture = fixture(Mode::NoDrivers, 100);
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, _) = inject(vc, &fixture.disk, CancellationToken::new()).await;

    let error = result.unwrap_err();
    assert!(!error.is_retryable());
    let InjectionError::DriversNotInjected { warning, log } = error else {
        panic!("expected DriversNotInjected, got {error:?}");
    };
    assert!(
        warning.starts_with("there are no virtio drivers available for this version of Windows"),
        "{warning}"
    );
    assert!(
        log.to_string().contains("virtio drivers were not found"),
        "{log}"
    );
    assert!(read_marker(&fixture.disk).is_none());
}

#[tokio::test]
async fn an_absent_virtio_win_source_injects_nothing() {
    let mut fixture = fixture(Mode::Ok, 100);
    fixture.virtio = fixture.virtio.with_file_name("no-such-virtio-win.iso");
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, _) = inject(vc, &fixture.disk, CancellationToken::new()).await;

    assert!(
        matches!(result, Err(InjectionError::DriversNotInjected { .. })),
        "{result:?}"
    );
    assert!(read_marker(&fixture.disk).is_none());
}

#[tokio::test]
async fn a_non_windows_guest_is_a_failure() {
    let fixture = fixture(Mode::Linux, 100);
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, _) = inject(vc, &fixture.disk, CancellationToken::new()).await;

    let Err(InjectionError::DriversNotInjected { warning, .. }) = result else {
        panic!("expected DriversNotInjected, got {result:?}");
    };
    assert_eq!(warning, "--inject-virtio-win ignored for non-Windows guest");
}

#[tokio::test]
async fn a_missing_disk_fails_with_the_libguestfs_error() {
    let fixture = fixture(Mode::Ok, 100);
    let absent = fixture.disk.with_file_name("absent.raw");
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, _) = inject(vc, &absent, CancellationToken::new()).await;

    let Err(InjectionError::Failed {
        exit_code, stderr, ..
    }) = result
    else {
        panic!("expected Failed, got {result:?}");
    };
    assert_eq!(exit_code, Some(1));
    assert!(
        stderr[0].ends_with("absent.raw: No such file or directory"),
        "{stderr:?}"
    );
}

#[tokio::test]
async fn the_deadline_kills_the_whole_process_group() {
    let fixture = fixture(Mode::Hang, 100);
    let vc = wrapper(&fixture, Duration::from_millis(1000)).with_kill_grace(Duration::from_secs(3));
    let started = Instant::now();
    let (result, lines) = inject(vc, &fixture.disk, CancellationToken::new()).await;
    let elapsed = started.elapsed();

    let error = result.unwrap_err();
    assert!(error.is_retryable());
    let InjectionError::TimedOut { after, log } = error else {
        panic!("expected TimedOut, got {error:?}");
    };
    assert_eq!(after, Duration::from_millis(1000));
    // SIGTERM was enough: no wait for the grace period.
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(progress_messages(&lines), ["Examining the guest ..."]);
    assert!(log.to_string().contains("Examining the guest"));
    assert_group_gone(&read_run_record(&fixture.disk).unwrap());
}

#[tokio::test]
async fn a_process_ignoring_sigterm_gets_sigkill_after_the_grace() {
    let fixture = fixture(Mode::Hang, 100);
    ControlFile {
        mode: Some(Mode::Hang),
        ignore_sigterm: Some(true),
        ..ControlFile::default()
    }
    .write_beside(&fixture.disk)
    .unwrap();
    let vc =
        wrapper(&fixture, Duration::from_millis(500)).with_kill_grace(Duration::from_millis(500));
    let started = Instant::now();
    let (result, _) = inject(vc, &fixture.disk, CancellationToken::new()).await;
    let elapsed = started.elapsed();

    assert!(
        matches!(result, Err(InjectionError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(4000), "{elapsed:?}");
    assert_group_gone(&read_run_record(&fixture.disk).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_group_quickly() {
    let fixture = fixture(Mode::Hang, 100);
    let vc = wrapper(&fixture, Duration::from_secs(60));
    let cancel = CancellationToken::new();
    let run = start(vc, &fixture.disk, cancel.clone());
    let record = wait_for_child(&fixture.disk).await;
    assert!(is_running(record.child_pid.unwrap()));

    let cancelled_at = Instant::now();
    cancel.cancel();
    let (result, _) = run.await.unwrap();
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        cancelled_at.elapsed()
    );

    let error = result.unwrap_err();
    assert!(
        matches!(error, InjectionError::Cancelled { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.error_code(), "CANCELLED");
    assert_group_gone(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_kills_the_group() {
    let fixture = fixture(Mode::Hang, 100);
    let vc = wrapper(&fixture, Duration::from_secs(60));
    let run = start(vc, &fixture.disk, CancellationToken::new());
    let record = wait_for_child(&fixture.disk).await;

    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let until = Instant::now() + Duration::from_secs(2);
    while !live_group_members(record.pid).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_group_gone(&record);
}

#[tokio::test]
async fn an_already_cancelled_token_starts_nothing() {
    let fixture = fixture(Mode::Ok, 100);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let vc = wrapper(&fixture, Duration::from_secs(10));
    let (result, lines) = inject(vc, &fixture.disk, cancel).await;

    assert!(
        matches!(result, Err(InjectionError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(lines.is_empty());
    assert!(
        read_run_record(&fixture.disk).is_none(),
        "the stand-in never ran"
    );
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let fixture = fixture(Mode::Ok, 100);
    let vc = VirtCustomize::new(&VirtCustomizeSettings {
        command: "/nonexistent/bin/virt-customize".into(),
        virtio_win_path: fixture.virtio.clone(),
        deadline: Duration::from_secs(1),
    });
    let (result, lines) = inject(vc, &fixture.disk, CancellationToken::new()).await;

    let error = result.unwrap_err();
    assert!(error.log().is_none());
    assert!(
        !error.is_retryable(),
        "a missing program does not appear on retry"
    );
    let InjectionError::Spawn { command, source } = error else {
        panic!("expected Spawn, got {error:?}");
    };
    assert_eq!(command, Path::new("/nonexistent/bin/virt-customize"));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(lines.is_empty());
}

#[tokio::test]
async fn the_log_is_bounded_and_keeps_the_end() {
    let fixture = fixture(Mode::Ok, 100);
    let vc = wrapper(&fixture, Duration::from_secs(10)).with_log_limit_bytes(100);
    let (result, lines) = inject(vc, &fixture.disk, CancellationToken::new()).await;
    let report = result.unwrap();

    assert!(report.log.is_truncated());
    assert_eq!(
        report.log.lines().len() as u64 + report.log.omitted_lines(),
        lines.len() as u64
    );
    let text = report.log.to_string();
    assert!(text.contains("lines omitted"), "{text}");
    assert!(text.ends_with("Finishing off\n"), "{text}");
    // Warnings are read from every line, not only from the kept ones.
    assert_eq!(report.warnings.len(), 1);
}
