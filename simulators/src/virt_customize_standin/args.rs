//! Argument parsing as virt-customize does it: glibc `getopt_long_only`
//! (long options with one or two dashes, unique prefixes, `--opt=value`),
//! glibc's messages for malformed options, then the tool's own checks.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{PROGRAM, VERSION, tool_error};

/// An accepted command line.
#[derive(Debug, Clone)]
pub(super) struct Invocation {
    /// The `-a` disks with the `--format` in force when each was given.
    pub disks: Vec<(Option<String>, PathBuf)>,
    pub domain: Option<String>,
    pub network: bool,
    pub inject_virtio_win: Vec<PathBuf>,
    pub quiet: bool,
    pub dry_run: bool,
    pub verbose_and_trace: bool,
    pub args: Vec<String>,
}

pub(super) enum Parsed {
    Run(Invocation),
    Exit(ExitCode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Add,
    Domain,
    Format,
    Network,
    NoNetwork,
    InjectVirtioWin,
    Version,
    Verbose,
    Trace,
    Quiet,
    DryRun,
    Help,
}

/// (name, option, takes an argument); one-letter names are short options.
const OPTIONS: &[(&str, Opt, bool)] = &[
    ("a", Opt::Add, true),
    ("add", Opt::Add, true),
    ("d", Opt::Domain, true),
    ("domain", Opt::Domain, true),
    ("format", Opt::Format, true),
    ("network", Opt::Network, false),
    ("no-network", Opt::NoNetwork, false),
    ("inject-virtio-win", Opt::InjectVirtioWin, true),
    ("V", Opt::Version, false),
    ("version", Opt::Version, false),
    ("v", Opt::Verbose, false),
    ("verbose", Opt::Verbose, false),
    ("x", Opt::Trace, false),
    ("q", Opt::Quiet, false),
    ("quiet", Opt::Quiet, false),
    ("n", Opt::DryRun, false),
    ("dryrun", Opt::DryRun, false),
    ("dry-run", Opt::DryRun, false),
    ("help", Opt::Help, false),
];

/// glibc's message for a malformed option, followed by the tool's hint.
fn usage_error(message: &str) -> Parsed {
    eprintln!("{PROGRAM}: {message}");
    eprintln!("Try ‘{PROGRAM} --help’ or consult {PROGRAM}(1) for more information.");
    Parsed::Exit(ExitCode::from(1))
}

enum Lookup {
    Found(&'static str, Opt, bool),
    Ambiguous(Vec<&'static str>),
    Missing,
}

fn lookup_long(name: &str) -> Lookup {
    let long = || OPTIONS.iter().filter(|(n, _, _)| n.len() > 1);
    if let Some(&(n, opt, arg)) = long().find(|(n, _, _)| *n == name) {
        return Lookup::Found(n, opt, arg);
    }
    let matches: Vec<_> = long().filter(|(n, _, _)| n.starts_with(name)).collect();
    match matches.as_slice() {
        [] => Lookup::Missing,
        [(n, opt, arg)] => Lookup::Found(n, *opt, *arg),
        // Prefixes of one option under several names are not ambiguous.
        [(n, opt, arg), rest @ ..] if rest.iter().all(|(_, o, _)| o == opt) => {
            Lookup::Found(n, *opt, *arg)
        }
        many => Lookup::Ambiguous(many.iter().map(|(n, _, _)| *n).collect()),
    }
}

fn lookup_short(c: char) -> Option<(Opt, bool)> {
    OPTIONS
        .iter()
        .find(|(n, _, _)| n.len() == 1 && n.starts_with(c))
        .map(|&(_, opt, arg)| (opt, arg))
}

pub(super) fn parse(raw: &[OsString]) -> Parsed {
    let args: Vec<String> = raw
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut options: Vec<(Opt, Option<String>)> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        let (dashes, body) = if let Some(body) = arg.strip_prefix("--") {
            ("--", body)
        } else if let Some(body) = arg.strip_prefix('-').filter(|b| !b.is_empty()) {
            ("-", body)
        } else {
            positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        // getopt_long_only: "-x" is a short option when x is one; longer
        // single-dash words are long options first, short clusters second.
        let single_short = dashes == "-"
            && body.chars().count() == 1
            && lookup_short(body.chars().next().unwrap_or(' ')).is_some();
        let lookup = if single_short {
            Lookup::Missing
        } else {
            lookup_long(name)
        };
        match lookup {
            Lookup::Ambiguous(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("'--{n}'")).collect();
                return usage_error(&format!(
                    "option '{dashes}{name}' is ambiguous; possibilities: {}",
                    names.join(" ")
                ));
            }
            Lookup::Found(full, opt, takes_arg) => {
                let value = match (takes_arg, inline) {
                    (false, Some(_)) => {
                        return usage_error(&format!(
                            "option '{dashes}{full}' doesn't allow an argument"
                        ));
                    }
                    (false, None) => None,
                    (true, Some(value)) => Some(value),
                    (true, None) if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    (true, None) => {
                        return usage_error(&format!(
                            "option '{dashes}{full}' requires an argument"
                        ));
                    }
                };
                options.push((opt, value));
            }
            Lookup::Missing if dashes == "--" => {
                return usage_error(&format!("unrecognized option '--{body}'"));
            }
            Lookup::Missing => {
                for (at, c) in body.char_indices() {
                    let Some((opt, takes_arg)) = lookup_short(c) else {
                        if at == 0 {
                            return usage_error(&format!("unrecognized option '-{body}'"));
                        }
                        return usage_error(&format!("invalid option -- '{c}'"));
                    };
                    if !takes_arg {
                        options.push((opt, None));
                        continue;
                    }
                    let rest = &body[at + c.len_utf8()..];
                    if !rest.is_empty() {
                        options.push((opt, Some(rest.to_owned())));
                    } else if i < args.len() {
                        i += 1;
                        options.push((opt, Some(args[i - 1].clone())));
                    } else {
                        return usage_error(&format!("option requires an argument -- '{c}'"));
                    }
                    break;
                }
            }
        }
    }
    apply(options, positional, args)
}

/// Applies the options in order, as the tool's callbacks do, then checks
/// the command line as a whole.
fn apply(
    options: Vec<(Opt, Option<String>)>,
    positional: Vec<String>,
    args: Vec<String>,
) -> Parsed {
    let mut invocation = Invocation {
        disks: Vec::new(),
        domain: None,
        network: true,
        inject_virtio_win: Vec::new(),
        quiet: false,
        dry_run: false,
        verbose_and_trace: false,
        args,
    };
    let (mut verbose, mut trace) = (false, false);
    let mut format: Option<String> = None;
    let mut format_consumed = true;
    for (opt, value) in options {
        let value = value.unwrap_or_default();
        match opt {
            Opt::Add => {
                invocation
                    .disks
                    .push((format.clone(), PathBuf::from(value)));
                format_consumed = true;
            }
            Opt::Format => {
                format = (value != "auto").then_some(value);
                format_consumed = false;
            }
            Opt::Domain if invocation.domain.is_some() => {
                return Parsed::Exit(tool_error(
                    "--domain option can only be given once",
                    verbose && trace,
                ));
            }
            Opt::Domain => invocation.domain = Some(value),
            Opt::Network => invocation.network = true,
            Opt::NoNetwork => invocation.network = false,
            Opt::InjectVirtioWin => invocation.inject_virtio_win.push(PathBuf::from(value)),
            Opt::Version => {
                println!("{PROGRAM} {VERSION}");
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            Opt::Help => {
                print_usage();
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            Opt::Verbose => verbose = true,
            Opt::Trace => trace = true,
            Opt::Quiet => invocation.quiet = true,
            Opt::DryRun => invocation.dry_run = true,
        }
    }
    invocation.verbose_and_trace = verbose && trace;
    if let Some(extra) = positional.first() {
        eprintln!("Extra parameter on the command line: ‘{extra}’.");
        eprintln!("Try ‘{PROGRAM} --help’ or consult {PROGRAM}(1) for more information.");
        return Parsed::Exit(ExitCode::from(1));
    }
    let fail = |message: &str| Parsed::Exit(tool_error(message, verbose && trace));
    if !format_consumed {
        return fail("--format parameter must appear before -a parameter");
    }
    match (invocation.disks.is_empty(), invocation.domain.is_some()) {
        (true, false) => fail(
            "you must give either -a or -d options. Read virt-customize(1) man page for further information.",
        ),
        (false, true) => fail(
            "you cannot give -a and -d options together. Read virt-customize(1) man page for further information.",
        ),
        _ => Parsed::Run(invocation),
    }
}

fn print_usage() {
    println!(
        "{PROGRAM}: customize a virtual machine

 {PROGRAM} [--options] -d domname

 {PROGRAM} [--options] -a disk.img [-a disk.img ...]

A short summary of the options is given below.  For detailed help please
read the man page virt-customize(1).

Options (this stand-in accepts only these):
  -a, --add <file>             Add disk image file
  -d, --domain <domain>        Set libvirt guest name
  --format <format>            Set format (default: auto)
  --network                    Enable appliance network (default)
  --no-network                 Disable appliance network
  --inject-virtio-win <path>   Inject virtio-win drivers from <path>
  -n, --dryrun, --dry-run      Perform a dry run
  -q, --quiet                  Don’t print progress messages
  -v, --verbose                Enable libguestfs debugging messages
  -x                           Enable tracing of libguestfs calls
  -V, --version                Display version and exit
  --help                       Display brief help"
    );
}
