//! The command line: global options, the subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit codes:
  0    the job completed (or the command succeeded)
  1    the job failed
  2    the job was cancelled
  3    usage, configuration or connection error, or the API refused the request
  130  interrupted (Ctrl-C) while following a job; the job goes on

Configuration: flags, then FAILOVERCTL_API_URL / FAILOVERCTL_GRPC_URL /
FAILOVERCTL_TOKEN / FAILOVERCTL_CONFIG, then the config file
(~/.config/failoverctl/config.toml: api_url, grpc_url, token), then defaults.";

const GLOBAL: &str = "Global options";

/// Start, follow and manage failovers of replicated VMware VMs to CloudStack.
#[derive(Debug, Parser)]
#[command(name = "failoverctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// REST API base URL (env FAILOVERCTL_API_URL; default http://127.0.0.1:8082).
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub api_url: Option<String>,
    /// gRPC status service URL (env FAILOVERCTL_GRPC_URL; default http://127.0.0.1:50051).
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub grpc_url: Option<String>,
    /// Bearer token sent as `Authorization: Bearer` (env FAILOVERCTL_TOKEN,
    /// which keeps it out of the process list).
    #[arg(long, global = true, value_name = "TOKEN", help_heading = GLOBAL)]
    pub token: Option<String>,
    /// Configuration file (env FAILOVERCTL_CONFIG; default
    /// ~/.config/failoverctl/config.toml when it exists).
    #[arg(long, short = 'c', global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// `human`: progress bars and summaries; `json`: the API's answers, for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human, help_heading = GLOBAL)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a test failover (a disposable copy of the VM on an isolated
    /// network) and follow it.
    Test(TestArgs),
    /// Start a live failover (the permanent cut-over) and follow it.
    Live(StartArgs),
    /// Clean up a test failover (or a failed one that kept its state) and
    /// follow the cleanup job.
    Cleanup(ActionArgs),
    /// Cancel a job: the running step is stopped and what the job did is undone.
    Cancel(ActionArgs),
    /// Retry a failed job that kept its state, from the failed step.
    Retry(ActionArgs),
    /// List jobs.
    Jobs(JobsArgs),
    /// Show a job and its steps.
    Show(JobArg),
    /// Follow a job until it ends, then show its summary.
    Watch(JobArg),
    /// List the replicated VMs of the inventory.
    Vms,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// How long the test may run, e.g. 30m or 2h.
    #[arg(long, value_name = "DURATION")]
    pub test_duration: Option<String>,
    /// Clean up automatically once the test duration has passed.
    #[arg(long)]
    pub auto_cleanup: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The VM: its VMware UUID, or its name in the inventory.
    pub vm: String,
    /// The vm_name sent with the request (default: the inventory's name).
    #[arg(long, value_name = "NAME")]
    pub vm_name: Option<String>,
    /// Skip the validation step.
    #[arg(long)]
    pub skip_validation: bool,
    /// Skip the LINSTOR snapshot (no rollback point).
    #[arg(long)]
    pub skip_snapshot: bool,
    /// Skip VirtIO driver injection (Windows guests).
    #[arg(long)]
    pub skip_virtio_injection: bool,
    /// Maps a source network to a CloudStack network id; repeatable.
    #[arg(long = "network", value_name = "SRC=DST", value_parser = parse_network)]
    pub networks: Vec<(String, String)>,
    /// On failure keep what the job did (rollback_on_failure=false), so that
    /// it can be retried from the failed step.
    #[arg(long)]
    pub keep_state: bool,
    #[command(flatten)]
    pub request: RequestArgs,
}

/// How a request that starts a job is sent and followed.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Idempotency-Key header: the same key and request return the first answer.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the accepted answer and return instead of following the job.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The job id.
    pub job: String,
    #[command(flatten)]
    pub request: RequestArgs,
}

#[derive(Debug, Args)]
pub struct JobArg {
    /// The job id.
    pub job: String,
}

pub const JOB_STATUSES: [&str; 8] = [
    "pending",
    "validating",
    "executing",
    "compensating",
    "cancelling",
    "completed",
    "failed",
    "cancelled",
];
pub const JOB_TYPES: [&str; 3] = ["test", "live", "cleanup"];

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only the jobs in this status.
    #[arg(long, value_parser = JOB_STATUSES)]
    pub status: Option<String>,
    /// Only the jobs of this type.
    #[arg(long = "type", value_parser = JOB_TYPES)]
    pub job_type: Option<String>,
    /// Only the jobs of this VM (UUID or inventory name).
    #[arg(long, value_name = "VM")]
    pub vm: Option<String>,
    /// Only the job of this request's correlation id.
    #[arg(long, value_name = "UUID")]
    pub correlation_id: Option<String>,
    /// At most this many jobs (1 to 500; the API's default is 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Skip this many jobs (with --limit, for paging).
    #[arg(long)]
    pub offset: Option<u32>,
}

/// `SRC=DST`, split at the last `=` (source network names may hold one,
/// CloudStack network ids do not).
pub fn parse_network(text: &str) -> Result<(String, String), String> {
    let (source, target) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not SRC=DST"))?;
    let (source, target) = (source.trim(), target.trim());
    if source.is_empty() || target.is_empty() {
        return Err(format!("{text:?} must name both networks (SRC=DST)"));
    }
    Ok((source.to_owned(), target.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("failoverctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_test_failover_takes_every_flag() {
        let cli = parse(&[
            "test",
            "win2019-app",
            "--vm-name",
            "win2019-app-copy",
            "--skip-validation",
            "--skip-snapshot",
            "--skip-virtio-injection",
            "--network",
            "VM Network=net-1",
            "--network",
            "Backup=net-2",
            "--test-duration",
            "2h",
            "--auto-cleanup",
            "--keep-state",
            "--idempotency-key",
            "k-1",
            "--no-wait",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.output, Output::Json);
        let Command::Test(args) = cli.command else {
            panic!("not a test command: {:?}", cli.command)
        };
        assert_eq!(args.start.vm, "win2019-app");
        assert_eq!(args.start.vm_name.as_deref(), Some("win2019-app-copy"));
        assert!(args.start.skip_validation && args.start.skip_snapshot);
        assert!(args.start.skip_virtio_injection && args.start.keep_state);
        assert_eq!(
            args.start.networks,
            vec![
                ("VM Network".to_owned(), "net-1".to_owned()),
                ("Backup".to_owned(), "net-2".to_owned())
            ]
        );
        assert_eq!(args.test_duration.as_deref(), Some("2h"));
        assert!(args.auto_cleanup);
        assert_eq!(args.start.request.idempotency_key.as_deref(), Some("k-1"));
        assert!(args.start.request.no_wait);
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let cli = parse(&[
            "--api-url",
            "http://gw:8082",
            "watch",
            "job-1",
            "--grpc-url",
            "http://gw:50051",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.api_url.as_deref(), Some("http://gw:8082"));
        assert_eq!(cli.global.grpc_url.as_deref(), Some("http://gw:50051"));
        assert_eq!(cli.global.output, Output::Json);
        assert!(matches!(cli.command, Command::Watch(JobArg { ref job }) if job == "job-1"));
    }

    #[test]
    fn live_failovers_take_no_test_options() {
        assert!(parse(&["live", "web01", "--auto-cleanup"]).is_err());
        assert!(parse(&["live", "web01", "--test-duration", "1h"]).is_err());
        assert!(parse(&["live", "web01", "--keep-state"]).is_ok());
    }

    #[test]
    fn list_filters_are_checked() {
        let cli = parse(&[
            "jobs", "--status", "failed", "--type", "test", "--vm", "pgtest1", "--limit", "5",
        ])
        .unwrap();
        let Command::Jobs(args) = cli.command else {
            panic!("not a jobs command")
        };
        assert_eq!(args.status.as_deref(), Some("failed"));
        assert_eq!(args.job_type.as_deref(), Some("test"));
        assert_eq!(args.vm.as_deref(), Some("pgtest1"));
        assert_eq!(args.limit, Some(5));
        assert!(parse(&["jobs", "--status", "done"]).is_err());
        assert!(parse(&["jobs", "--type", "dr"]).is_err());
        assert!(parse(&["jobs", "--limit", "0"]).is_err());
        assert!(parse(&["jobs", "--limit", "501"]).is_err());
    }

    #[test]
    fn commands_need_their_arguments() {
        for args in [&["test"][..], &["cancel"], &["watch"], &["frobnicate"], &[]] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(parse(&["vms"]).is_ok());
    }

    #[test]
    fn network_mappings_split_at_the_last_equals_sign() {
        assert_eq!(
            parse_network("VM Network=4a6b").unwrap(),
            ("VM Network".to_owned(), "4a6b".to_owned())
        );
        assert_eq!(
            parse_network("a=b=c").unwrap(),
            ("a=b".to_owned(), "c".to_owned())
        );
        for bad in ["VM Network", "=net-1", "VM Network=", " = "] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
        assert!(parse(&["test", "vm", "--network", "nope"]).is_err());
    }
}
