//! A stand-in for libguestfs' `virt-customize`, limited to what the
//! failover does with it: `--format raw -a DEVICE --no-network
//! --inject-virtio-win PATH` (WIRE.md, "virt-customize").
//!
//! It parses its arguments the way the real tool does (glibc
//! `getopt_long_only`, then virt-customize's own checks) and answers
//! malformed ones with the real messages and exit code 1. A run prints the
//! real progress lines (`[   0.0] Examining the guest ...`) spread over a
//! configurable time, the real warnings on stdout and errors on stderr, and
//! records an injection as a JSON marker beside the disk
//! ([`marker_path`], [`InjectionMarker`]).
//!
//! Behaviour comes from environment variables ([`ENV_MODE`],
//! [`ENV_DURATION_MS`], [`ENV_ERROR`], [`ENV_IGNORE_SIGTERM`]), overridden
//! field by field by an optional control file beside the (first) disk
//! ([`control_path`], [`ControlFile`]), so that one disk can fail while
//! others succeed. Every run that gets past its argument checks writes a
//! [`RunRecord`] beside the disk ([`run_record_path`]) with its pid and, in
//! `hang` mode, the pid of the child it started.

mod args;
mod session;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name the tool prints in its messages.
pub const PROGRAM: &str = "virt-customize";
/// The version `--version` reports.
pub const VERSION: &str = "1.52.0";

/// `ok` | `fail` | `hang` | `no-drivers` | `linux` (default `ok`).
pub const ENV_MODE: &str = "VIRT_CUSTOMIZE_STANDIN_MODE";
/// Total run time in milliseconds (default [`DEFAULT_DURATION_MS`]).
pub const ENV_DURATION_MS: &str = "VIRT_CUSTOMIZE_STANDIN_DURATION_MS";
/// The error message of `fail` mode (default [`DEFAULT_ERROR`]).
pub const ENV_ERROR: &str = "VIRT_CUSTOMIZE_STANDIN_ERROR";
/// `true`/`1`: in `hang` mode, ignore SIGTERM (only SIGKILL stops it).
pub const ENV_IGNORE_SIGTERM: &str = "VIRT_CUSTOMIZE_STANDIN_IGNORE_SIGTERM";

pub const DEFAULT_DURATION_MS: u64 = 1500;
/// What virt-customize says about a Windows disk left hibernated or with
/// fast startup on, the usual reason it fails on a replicated disk.
pub const DEFAULT_ERROR: &str = "libguestfs error: mount_options: mount exited with status 14: \
     The disk contains an unclean file system (0, 0).  Metadata kept in Windows cache, refused \
     to mount.  Falling back to read-only mount because the NTFS partition is in an unsafe \
     state. Please resume and shutdown Windows fully (no hibernation or fast restarting.)";

/// The drivers a successful injection reports (virtio-win driver names).
pub const DRIVERS: [&str; 8] = [
    "viostor", "vioscsi", "netkvm", "balloon", "viorng", "vioser", "pvpanic", "fwcfg",
];

/// What the stand-in does once its arguments are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Windows guest, drivers injected, marker written, exit 0.
    #[default]
    Ok,
    /// `virt-customize: error: ...` on stderr, exit 1.
    Fail,
    /// Never finishes; starts a child (`sleep 3600`) in its process group.
    Hang,
    /// Windows guest without matching drivers: the no-driver warnings, exit 0.
    NoDrivers,
    /// Linux guest: `--inject-virtio-win ignored for non-Windows guest`, exit 0.
    Linux,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Ok,
        Mode::Fail,
        Mode::Hang,
        Mode::NoDrivers,
        Mode::Linux,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Fail => "fail",
            Mode::Hang => "hang",
            Mode::NoDrivers => "no-drivers",
            Mode::Linux => "linux",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown mode ‘{s}’ (expected ok, fail, hang, no-drivers or linux)")
            })
    }
}

/// The effective behaviour of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub mode: Mode,
    pub duration_ms: u64,
    pub error: String,
    pub ignore_sigterm: bool,
}

/// The control file `<DEVICE>.standin.json`; every field is optional and
/// overrides the environment. Example: `{"mode": "fail", "duration_ms": 200}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_sigterm: Option<bool>,
}

impl ControlFile {
    /// Writes this control file beside `device`.
    pub fn write_beside(&self, device: &Path) -> io::Result<()> {
        write_json(&control_path(device), self)
    }
}

impl Control {
    /// The environment (read through `env`), then the control file beside
    /// `device` if there is one.
    pub fn load(device: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut control = Control {
            mode: Mode::default(),
            duration_ms: DEFAULT_DURATION_MS,
            error: DEFAULT_ERROR.to_owned(),
            ignore_sigterm: false,
        };
        if let Some(mode) = env(ENV_MODE) {
            control.mode = mode.parse().map_err(|e| format!("{ENV_MODE}: {e}"))?;
        }
        if let Some(ms) = env(ENV_DURATION_MS) {
            control.duration_ms = ms.trim().parse().map_err(|_| {
                format!("{ENV_DURATION_MS}: ‘{ms}’ is not a number of milliseconds")
            })?;
        }
        if let Some(error) = env(ENV_ERROR) {
            control.error = error;
        }
        if let Some(flag) = env(ENV_IGNORE_SIGTERM) {
            control.ignore_sigterm = match flag.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => {
                    return Err(format!(
                        "{ENV_IGNORE_SIGTERM}: ‘{other}’ is not true or false"
                    ));
                }
            };
        }
        let path = control_path(device);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<ControlFile>(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ControlFile::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        control.mode = file.mode.unwrap_or(control.mode);
        control.duration_ms = file.duration_ms.unwrap_or(control.duration_ms);
        control.error = file.error.unwrap_or(control.error);
        control.ignore_sigterm = file.ignore_sigterm.unwrap_or(control.ignore_sigterm);
        Ok(control)
    }
}

/// The marker `<DEVICE>.virtio-injected` a successful injection leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectionMarker {
    pub virtio_win_path: PathBuf,
    pub injected_at: DateTime<Utc>,
    pub drivers: Vec<String>,
    pub block_driver: String,
    /// The stand-in process that injected.
    pub pid: u32,
    /// The `--format` given for the disk (`None` for auto-detection).
    pub format: Option<String>,
    /// Whether the appliance had a network (`--no-network` makes it false).
    pub network: bool,
    /// How many injections this disk has seen, this one included.
    pub injections: u32,
}

/// The record `<DEVICE>.standin-run.json` of the latest run on a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The stand-in's pid (also its process group id when started, as the
    /// worker does, in a process group of its own).
    pub pid: u32,
    pub mode: Mode,
    pub started_at: DateTime<Utc>,
    pub args: Vec<String>,
    /// In `hang` mode, the child started to stand for the qemu appliance.
    pub child_pid: Option<u32>,
}

pub fn marker_path(device: &Path) -> PathBuf {
    beside(device, ".virtio-injected")
}

pub fn control_path(device: &Path) -> PathBuf {
    beside(device, ".standin.json")
}

pub fn run_record_path(device: &Path) -> PathBuf {
    beside(device, ".standin-run.json")
}

fn beside(device: &Path, suffix: &str) -> PathBuf {
    let mut path = OsString::from(device);
    path.push(suffix);
    PathBuf::from(path)
}

/// Writes JSON through a temporary file and a rename, so that readers
/// never see a half-written file.
fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut tmp = OsString::from(path);
    tmp.push(format!(".tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Runs the stand-in with `args` (without the program name).
pub async fn main(args: Vec<OsString>) -> ExitCode {
    match args::parse(&args) {
        args::Parsed::Exit(code) => code,
        args::Parsed::Run(invocation) => session::run(invocation).await,
    }
}

/// Prints an error the way the libguestfs tools do and returns exit 1.
fn tool_error(message: &str, verbose_and_trace: bool) -> ExitCode {
    eprintln!("{PROGRAM}: error: {message}");
    if !verbose_and_trace {
        eprintln!();
        eprintln!(
            "If reporting bugs, run {PROGRAM} with debugging enabled and include the complete output:"
        );
        eprintln!();
        eprintln!("  {PROGRAM} -v -x [...]");
    }
    ExitCode::from(1)
}

/// Prints a warning the way the libguestfs tools do (on stdout).
fn tool_warning(message: &str) {
    println!("{PROGRAM}: warning: {message}");
}
