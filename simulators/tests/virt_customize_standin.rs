//! The virt-customize stand-in on its own: the real tool's answers to
//! malformed command lines, and the controls of its behaviour.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use simulators::virt_customize_standin::{
    ControlFile, ENV_DURATION_MS, ENV_ERROR, ENV_IGNORE_SIGTERM, ENV_MODE, InjectionMarker, Mode,
    marker_path,
};
use tempfile::TempDir;

const STANDIN: &str = env!("CARGO_BIN_EXE_virt-customize-standin");
const HINT: &str = "Try ‘virt-customize --help’ or consult virt-customize(1) for more information.";

struct Disk {
    dir: TempDir,
    path: PathBuf,
}

fn disk() -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk0.raw");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    Disk { dir, path }
}

/// Runs the stand-in with a clean control environment plus `env`.
fn standin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(STANDIN);
    command.args(args);
    for name in [ENV_MODE, ENV_DURATION_MS, ENV_ERROR, ENV_IGNORE_SIGTERM] {
        command.env_remove(name);
    }
    command.env(ENV_DURATION_MS, "50");
    command.envs(env.iter().copied());
    command.output().unwrap()
}

/// The usual injection command line for `disk` with `virtio` as the source.
fn inject_args<'a>(disk: &'a Path, virtio: &'a Path) -> Vec<&'a str> {
    vec![
        "--format",
        "raw",
        "-a",
        disk.to_str().unwrap(),
        "--no-network",
        "--inject-virtio-win",
        virtio.to_str().unwrap(),
    ]
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read_marker(disk: &Path) -> Option<InjectionMarker> {
    let bytes = std::fs::read(marker_path(disk)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn version_is_reported_like_the_real_tool() {
    let output = standin(&["--version"], &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "virt-customize 1.52.0\n");
}

#[test]
fn a_command_line_without_a_disk_is_refused() {
    let output = standin(&["--no-network"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .starts_with("virt-customize: error: you must give either -a or -d options."),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("virt-customize -v -x [...]"));
}

#[test]
fn format_after_the_disk_is_refused() {
    let disk = disk();
    let output = standin(&["-a", disk.path.to_str().unwrap(), "--format", "raw"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with(
            "virt-customize: error: --format parameter must appear before -a parameter\n"
        ),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).is_empty(),
        "nothing runs: {}",
        stdout(&output)
    );
}

#[test]
fn an_unknown_option_is_refused() {
    let output = standin(&["--format", "raw", "--inject-virtio", "x", "--bogus"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!("virt-customize: unrecognized option '--bogus'\n{HINT}\n")
    );
}

#[test]
fn options_missing_their_argument_are_refused() {
    let long = standin(&["--inject-virtio-win"], &[]);
    assert_eq!(long.status.code(), Some(1));
    assert!(
        stderr(&long)
            .starts_with("virt-customize: option '--inject-virtio-win' requires an argument\n"),
        "{}",
        stderr(&long)
    );
    let short = standin(&["-a"], &[]);
    assert_eq!(short.status.code(), Some(1));
    assert!(stderr(&short).starts_with("virt-customize: option requires an argument -- 'a'\n"));
}

#[test]
fn extra_parameters_are_refused() {
    let disk = disk();
    let output = standin(&["-a", disk.path.to_str().unwrap(), "stray"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!("Extra parameter on the command line: ‘stray’.\n{HINT}\n")
    );
}

#[test]
fn a_missing_disk_is_a_libguestfs_error() {
    let disk = disk();
    let absent = disk.dir.path().join("absent.raw");
    let output = standin(&inject_args(&absent, disk.dir.path()), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "[   0.0] Examining the guest ...\n");
    let expected = format!(
        "virt-customize: error: libguestfs error: {}: No such file or directory\n",
        absent.display()
    );
    assert!(
        stderr(&output).starts_with(&expected),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_successful_run_marks_the_disk_and_counts_injections() {
    let disk = disk();
    let args = inject_args(&disk.path, disk.dir.path());
    let first = standin(&args, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let lines: Vec<String> = stdout(&first).lines().map(str::to_owned).collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("[   0.0] Examining the guest ...")
    );
    assert!(
        lines.last().unwrap().ends_with("] Finishing off"),
        "{lines:?}"
    );
    assert!(lines.contains(
        &"virt-customize: warning: random seed could not be set for this type of guest".to_owned()
    ));
    let marker = read_marker(&disk.path).unwrap();
    assert_eq!(marker.injections, 1);
    assert_eq!(marker.virtio_win_path, disk.dir.path());

    let second = standin(&args, &[]);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(read_marker(&disk.path).unwrap().injections, 2);
}

#[test]
fn a_dry_run_leaves_no_marker() {
    let disk = disk();
    let mut args = inject_args(&disk.path, disk.dir.path());
    args.push("--dry-run");
    let output = standin(&args, &[]);
    assert_eq!(output.status.code(), Some(0));
    assert!(read_marker(&disk.path).is_none());
}

#[test]
fn the_environment_selects_the_mode() {
    let disk = disk();
    let output = standin(
        &inject_args(&disk.path, disk.dir.path()),
        &[(ENV_MODE, "fail"), (ENV_ERROR, "libguestfs error: boom")],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("virt-customize: error: libguestfs error: boom\n"),
        "{}",
        stderr(&output)
    );
    assert!(read_marker(&disk.path).is_none());
}

#[test]
fn the_control_file_overrides_the_environment() {
    let disk = disk();
    ControlFile {
        mode: Some(Mode::Ok),
        ..ControlFile::default()
    }
    .write_beside(&disk.path)
    .unwrap();
    let output = standin(
        &inject_args(&disk.path, disk.dir.path()),
        &[(ENV_MODE, "fail")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(read_marker(&disk.path).is_some());
}

#[test]
fn no_drivers_mode_warns_and_exits_0_without_a_marker() {
    let disk = disk();
    let output = standin(
        &inject_args(&disk.path, disk.dir.path()),
        &[(ENV_MODE, "no-drivers")],
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains(
        "virt-customize: warning: --inject-virtio-win: virtio drivers were not found for this \
         Windows version in the virtio-win source that you specified\n"
    ));
    assert!(read_marker(&disk.path).is_none());
}

#[test]
fn a_malformed_control_is_refused() {
    let disk = disk();
    std::fs::write(
        simulators::virt_customize_standin::control_path(&disk.path),
        r#"{"mode": "ok", "duraton_ms": 5}"#,
    )
    .unwrap();
    let output = standin(&inject_args(&disk.path, disk.dir.path()), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown field `duraton_ms`"),
        "{}",
        stderr(&output)
    );

    let other = self::disk();
    let output = standin(
        &inject_args(&other.path, other.dir.path()),
        &[(ENV_MODE, "sideways")],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown mode ‘sideways’"),
        "{}",
        stderr(&output)
    );
}
