//! failoverctl: the operator's command line for the failover orchestrator.
//! It starts and manages failovers over the REST API and follows them over
//! the gRPC status stream; see README.md beside this crate.

mod api;
mod cli;
mod config;
mod error;
mod output;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;
use serde_json::Value;

use api::{Api, VmRef};
use cli::{ActionArgs, Cli, Command, Output, RequestArgs, StartArgs, TestArgs};
use config::Settings;
use error::Error;
use output::{Exit, is_terminal, print_json};
use watch::{Followed, View};

/// What every command needs.
#[derive(Debug)]
struct Ctx {
    api: Api,
    settings: Settings,
    output: Output,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers; anything else is a usage error.
            return if e.use_stderr() {
                Exit::Error
            } else {
                Exit::Success
            }
            .into();
        }
    };
    let output = cli.global.output;
    match run(cli).await {
        Ok(exit) => exit.into(),
        Err(e) => {
            if let (Output::Json, Error::Api(failure)) = (output, &e) {
                print_json(&failure.body);
            }
            eprint!("{}", e.render());
            Exit::Error.into()
        }
    }
}

async fn run(cli: Cli) -> Result<Exit, Error> {
    let settings = Settings::load(&cli.global, &|name| std::env::var(name).ok())?;
    let ctx = Ctx {
        api: Api::new(&settings)?,
        settings,
        output: cli.global.output,
    };
    match cli.command {
        Command::Test(args) => start(&ctx, "test", &args.start, Some(&args)).await,
        Command::Live(args) => start(&ctx, "live", &args, None).await,
        Command::Cleanup(args) => act(&ctx, "cleanup", &args).await,
        Command::Cancel(args) => act(&ctx, "cancel", &args).await,
        Command::Retry(args) => act(&ctx, "retry", &args).await,
        Command::Jobs(args) => {
            let vm_id = match &args.vm {
                None => None,
                Some(vm) => Some(match VmRef::parse(vm) {
                    VmRef::Id(id) => id.to_string(),
                    VmRef::Name(_) => ctx.api.resolve_vm(vm, None).await?.0,
                }),
            };
            let body = ctx.api.jobs(&api::jobs_query(&args, vm_id)).await?;
            show(&ctx, &body, output::jobs_table);
            Ok(Exit::Success)
        }
        Command::Show(job) => {
            let body = ctx.api.job(&job.job).await?;
            show(&ctx, &body, |b| output::job_summary(&b["data"]));
            Ok(Exit::Success)
        }
        Command::Watch(job) => follow(&ctx, &job.job).await,
        Command::Vms => {
            let body = ctx.api.vms().await?;
            show(&ctx, &body, output::vms_table);
            Ok(Exit::Success)
        }
    }
}

/// The API's answer as JSON, or `human` of it.
fn show(ctx: &Ctx, body: &Value, human: impl Fn(&Value) -> String) {
    match ctx.output {
        Output::Json => print_json(body),
        Output::Human => print!("{}", human(body)),
    }
}

async fn start(
    ctx: &Ctx,
    job_type: &str,
    args: &StartArgs,
    test: Option<&TestArgs>,
) -> Result<Exit, Error> {
    let (vm_id, vm_name) = ctx
        .api
        .resolve_vm(&args.vm, args.vm_name.as_deref())
        .await?;
    let body = api::failover_body(&vm_id, &vm_name, args, test)?;
    let answer = ctx
        .api
        .start(job_type, &body, args.request.idempotency_key.as_deref())
        .await?;
    accepted(ctx, &answer, &args.request).await
}

async fn act(ctx: &Ctx, action: &str, args: &ActionArgs) -> Result<Exit, Error> {
    let answer = ctx
        .api
        .act(&args.job, action, args.request.idempotency_key.as_deref())
        .await?;
    accepted(ctx, &answer, &args.request).await
}

/// Shows the accepted answer, then follows the job unless `--no-wait`.
async fn accepted(ctx: &Ctx, answer: &Value, request: &RequestArgs) -> Result<Exit, Error> {
    let job_id = answer["job_id"]
        .as_str()
        .ok_or_else(|| Error::Connection(format!("the API's answer names no job: {answer}")))?;
    if request.no_wait {
        show(ctx, answer, |a| {
            format!(
                "{}  follow it with `failoverctl watch {job_id}`\n",
                output::accepted(a)
            )
        });
        return Ok(Exit::Success);
    }
    if ctx.output == Output::Human {
        println!("{}", output::accepted(answer));
    }
    follow(ctx, job_id).await
}

/// Follows the job until it ends (a job that has ended is shown at once),
/// then shows it; the exit code is its outcome.
async fn follow(ctx: &Ctx, job_id: &str) -> Result<Exit, Error> {
    let mut body = ctx.api.job(job_id).await?;
    if !is_terminal(body["data"]["status"].as_str().unwrap_or_default()) {
        let mut view = View::new(ctx.output);
        match watch::follow(&ctx.settings, job_id, &mut view).await {
            Ok(Followed::Ended) => view.finish(),
            Ok(Followed::Interrupted) => {
                view.abandon();
                eprintln!(
                    "\nstopped following; job {job_id} goes on: `failoverctl watch {job_id}` \
                     follows it again, `failoverctl cancel {job_id}` stops it"
                );
                return Ok(Exit::Interrupted);
            }
            Err(e) => {
                view.abandon();
                return Err(e);
            }
        }
        body = ctx.api.job(job_id).await?;
    }
    show(ctx, &body, |b| output::job_summary(&b["data"]));
    let status = body["data"]["status"].as_str().unwrap_or_default();
    Ok(Exit::of_job(status).unwrap_or(Exit::Error))
}
