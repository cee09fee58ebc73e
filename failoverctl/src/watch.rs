//! Following a job over the gRPC `JobStatus.WatchJob` stream, drawn as one
//! progress bar per step on a terminal, or as one line per transition when
//! the output is not a terminal.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use failover_proto::v1 as pb;
use failover_proto::v1::job_event::Kind;
use failover_proto::v1::job_status_client::JobStatusClient;

use crate::cli::Output;
use crate::config::Settings;
use crate::error::{Error, chain};
use crate::output::is_terminal;

/// Reconnections in a row before giving up on a stream that broke.
const MAX_RECONNECTS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The job ended.
    Ended,
    /// The operator pressed Ctrl-C; the job goes on.
    Interrupted,
}

/// How one step (or the job) stands, from a step or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepView<'a> {
    name: &'a str,
    status: &'a str,
    attempt: u32,
    progress: u32,
    message: &'a str,
    error_code: &'a str,
    error_message: &'a str,
}

impl<'a> StepView<'a> {
    fn of_step(step: &'a pb::Step) -> Self {
        StepView {
            name: &step.step_name,
            status: &step.status,
            attempt: step.attempt,
            progress: step.progress_percent,
            message: &step.message,
            error_code: &step.error_code,
            error_message: &step.error_message,
        }
    }

    fn of_event(event: &'a pb::JobEvent) -> Self {
        StepView {
            name: &event.step_name,
            status: &event.status,
            attempt: event.attempt,
            progress: event.progress_percent,
            message: &event.message,
            error_code: &event.error_code,
            error_message: &event.error_message,
        }
    }

    fn progress(&self) -> u32 {
        if matches!(self.status, "completed" | "skipped") {
            100
        } else {
            self.progress.min(100)
        }
    }

    /// The error when there is one, else the message.
    fn detail(&self) -> String {
        if self.error_code.is_empty() {
            // "cancelled" says nothing more than the status does.
            if self.message == self.status {
                String::new()
            } else {
                self.message.to_owned()
            }
        } else {
            format!("{}: {}", self.error_code, self.error_message)
        }
    }
}

/// `test failover of win2019-app`.
fn title(job: &pb::Job) -> String {
    match job.job_type.as_str() {
        "cleanup" => format!("cleanup of {}", job.vm_name),
        other => format!("{other} failover of {}", job.vm_name),
    }
}

/// Line-per-transition output, for logs and pipes.
#[derive(Debug, Default)]
pub struct Lines {
    /// What was printed last per step, so a snapshot after a reconnection
    /// repeats nothing.
    shown: HashMap<String, (String, u32)>,
    started: bool,
}

impl Lines {
    /// The name column: the job's longest step name, at least 18 wide.
    fn width(event: &pb::JobEvent) -> usize {
        event
            .job
            .iter()
            .flat_map(|j| &j.steps)
            .map(|s| s.step_name.len())
            .fold(18, usize::max)
    }

    fn step_line(elapsed: Duration, width: usize, step: &StepView<'_>) -> String {
        let attempt = match step.attempt {
            0 => String::new(),
            n => format!("attempt {n}"),
        };
        let line = format!(
            "{:>7.1}s  {:<width$} {:<10} {attempt:<9} {:>3}%  {}",
            elapsed.as_secs_f64(),
            step.name,
            step.status,
            step.progress(),
            step.detail()
        );
        line.trim_end().to_owned()
    }

    fn job_line(elapsed: Duration, width: usize, status: &str, detail: &str) -> String {
        let line = format!(
            "{:>7.1}s  {:<width$} {:<10} {detail}",
            elapsed.as_secs_f64(),
            "job",
            status
        );
        line.trim_end().to_owned()
    }

    /// The lines `event` adds, `elapsed` after following began.
    pub fn lines(&mut self, elapsed: Duration, event: &pb::JobEvent) -> Vec<String> {
        let mut out = Vec::new();
        let width = Self::width(event);
        match Kind::try_from(event.kind) {
            Ok(Kind::Snapshot) => {
                let Some(job) = &event.job else {
                    return out;
                };
                if self.started {
                    out.push(Self::job_line(
                        elapsed,
                        width,
                        &job.status,
                        "(stream reopened)",
                    ));
                } else {
                    self.started = true;
                    out.push(format!(
                        "following {} (job {}): {}",
                        title(job),
                        job.job_id,
                        job.status
                    ));
                }
                for step in &job.steps {
                    let view = StepView::of_step(step);
                    let now = (step.status.clone(), step.attempt);
                    if step.status != "pending" && self.shown.get(&step.step_name) != Some(&now) {
                        out.push(Self::step_line(elapsed, width, &view));
                    }
                    self.shown.insert(step.step_name.clone(), now);
                }
            }
            Ok(Kind::Transition) if event.step_name.is_empty() => {
                let view = StepView::of_event(event);
                out.push(Self::job_line(
                    elapsed,
                    width,
                    &event.status,
                    &view.detail(),
                ));
            }
            Ok(Kind::Transition) => {
                self.shown.insert(
                    event.step_name.clone(),
                    (event.status.clone(), event.attempt),
                );
                let mut view = StepView::of_event(event);
                // The audit row often has no message; the step's own says
                // what it did, as long as it is still in that state.
                let current = event.job.iter().flat_map(|j| &j.steps).find(|s| {
                    s.step_name == event.step_name
                        && s.status == event.status
                        && s.attempt == event.attempt
                });
                if let Some(step) = current
                    && view.detail().is_empty()
                {
                    view.message = &step.message;
                    view.error_code = &step.error_code;
                    view.error_message = &step.error_message;
                }
                out.push(Self::step_line(elapsed, width, &view));
            }
            _ => {}
        }
        out
    }
}

/// One progress bar per step under a spinner for the job.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    steps: Vec<(String, ProgressBar)>,
}

impl Bars {
    pub fn new(target: ProgressDrawTarget, tick: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(target);
        let header = multi.add(
            ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} [{elapsed:>4}] {wide_msg}")
                    .expect("a valid template"),
            ),
        );
        if tick {
            header.enable_steady_tick(Duration::from_millis(120));
        }
        Bars {
            multi,
            header,
            steps: Vec::new(),
        }
    }

    fn step_style() -> ProgressStyle {
        ProgressStyle::with_template("  {prefix} [{bar:24}] {pos:>3}% {wide_msg}")
            .expect("a valid template")
            .progress_chars("=> ")
    }

    /// Brings every bar to the job's state; steps that appear (compensation
    /// after a failure) get a bar of their own.
    fn show(&mut self, job: &pb::Job) {
        let mut header = format!("{} ({}): {}", title(job), job.job_id, job.status);
        if !job.current_step.is_empty() && !is_terminal(&job.status) {
            header.push_str(&format!(", {}", job.current_step));
        }
        self.header.set_message(header);
        let width = job
            .steps
            .iter()
            .map(|s| s.step_name.len())
            .max()
            .unwrap_or_default();
        for step in &job.steps {
            let bar = match self.steps.iter().find(|(name, _)| *name == step.step_name) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self
                        .multi
                        .add(ProgressBar::new(100).with_style(Self::step_style()));
                    self.steps.push((step.step_name.clone(), bar.clone()));
                    bar
                }
            };
            let view = StepView::of_step(step);
            bar.set_prefix(format!("{:<width$}", step.step_name));
            bar.set_position(u64::from(view.progress()));
            let mut message = step.status.clone();
            if step.attempt > 1 {
                message.push_str(&format!(" (attempt {})", step.attempt));
            }
            let detail = view.detail();
            if !detail.is_empty() {
                message.push_str("  ");
                message.push_str(&detail);
            }
            bar.set_message(message);
        }
    }

    /// Stops the bars where they stand (`finish` would fill them all);
    /// `redraw: false` leaves the screen untouched, as after a Ctrl-C whose
    /// echo the bars do not know about.
    fn stop(&self, redraw: bool) {
        self.header.disable_steady_tick();
        if !redraw {
            self.multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        for (_, bar) in &self.steps {
            bar.abandon();
        }
        self.header.abandon();
    }
}

/// Where a followed job is shown.
#[derive(Debug)]
pub enum View {
    Bars(Bars),
    Lines {
        lines: Lines,
        since: Instant,
    },
    /// `--output json`: nothing while the job runs.
    Quiet,
}

impl View {
    /// Bars on a terminal, lines elsewhere, nothing for JSON.
    pub fn new(output: Output) -> View {
        match output {
            Output::Json => View::Quiet,
            Output::Human if std::io::stdout().is_terminal() => {
                View::Bars(Bars::new(ProgressDrawTarget::stdout(), true))
            }
            Output::Human => View::Lines {
                lines: Lines::default(),
                since: Instant::now(),
            },
        }
    }

    pub fn event(&mut self, event: &pb::JobEvent) {
        match self {
            View::Bars(bars) => {
                if let Some(job) = &event.job {
                    bars.show(job);
                }
            }
            View::Lines { lines, since } => {
                for line in lines.lines(since.elapsed(), event) {
                    println!("{line}");
                }
            }
            View::Quiet => {}
        }
    }

    /// A notice while following (the stream broke and is reopened).
    fn note(&self, text: &str) {
        match self {
            View::Bars(bars) => {
                let _ = bars.multi.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }

    /// The job ended: the bars stay as they are.
    pub fn finish(&self) {
        if let View::Bars(bars) = self {
            bars.stop(true);
            println!("\n");
        }
    }

    /// Following stopped before the job ended.
    pub fn abandon(&self) {
        if let View::Bars(bars) = self {
            bars.stop(false);
            println!();
        }
    }
}

/// Why a stream could not be opened or broke.
#[derive(Debug)]
struct Broken {
    message: String,
    /// A gateway restarting or a network hiccup, worth reopening for.
    transient: bool,
}

impl From<tonic::Status> for Broken {
    fn from(status: tonic::Status) -> Self {
        Broken {
            message: format!("{} ({:?})", status.message(), status.code()),
            transient: matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::DeadlineExceeded
            ),
        }
    }
}

async fn open(
    endpoint: &Endpoint,
    token: Option<&str>,
    job_id: &str,
) -> Result<tonic::Streaming<pb::JobEvent>, Broken> {
    let channel = endpoint.connect().await.map_err(|e| Broken {
        message: chain(&e),
        transient: true,
    })?;
    let mut request = tonic::Request::new(pb::GetJobRequest {
        key: Some(pb::get_job_request::Key::JobId(job_id.to_owned())),
    });
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| Broken {
            message: format!("token: {e}"),
            transient: false,
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(JobStatusClient::new(channel)
        .watch_job(request)
        .await?
        .into_inner())
}

/// The job's status after `event`.
fn status_after(event: &pb::JobEvent) -> Option<&str> {
    match &event.job {
        Some(job) => Some(&job.status),
        None if event.step_name.is_empty() => Some(&event.status),
        None => None,
    }
}

/// Follows `job_id` until it ends, drawing each event on `view`. A stream
/// that breaks after it worked is reopened (it starts again with a
/// snapshot) up to [`MAX_RECONNECTS`] times in a row.
pub async fn follow(settings: &Settings, job_id: &str, view: &mut View) -> Result<Followed, Error> {
    let url = settings.grpc_url.as_str();
    let gone = |why: &str| {
        Error::Stream(format!(
            "status stream at {url}: {why}; job {job_id} goes on \
             (`failoverctl watch {job_id}` follows it again; check --grpc-url or FAILOVERCTL_GRPC_URL)"
        ))
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| gone(&chain(&e)))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut worked = false;
    let mut failures = 0u32;
    let mut status = String::new();
    loop {
        let opened = tokio::select! {
            _ = &mut interrupt => return Ok(Followed::Interrupted),
            opened = open(&endpoint, settings.token.as_deref(), job_id) => opened,
        };
        let broken = match opened {
            Err(broken) => broken,
            Ok(mut stream) => loop {
                let next = tokio::select! {
                    _ = &mut interrupt => return Ok(Followed::Interrupted),
                    next = stream.message() => next,
                };
                match next {
                    Ok(Some(event)) => {
                        worked = true;
                        failures = 0;
                        view.event(&event);
                        if let Some(now) = status_after(&event) {
                            now.clone_into(&mut status);
                        }
                    }
                    Ok(None) if is_terminal(&status) => return Ok(Followed::Ended),
                    Ok(None) => {
                        break Broken {
                            message: format!("the stream ended while the job is {status:?}"),
                            transient: true,
                        };
                    }
                    Err(e) => break Broken::from(e),
                }
            },
        };
        failures += 1;
        if !worked || !broken.transient || failures > MAX_RECONNECTS {
            return Err(gone(&broken.message));
        }
        view.note(&format!(
            "status stream interrupted ({}); reopening ({failures}/{MAX_RECONNECTS})",
            broken.message
        ));
        let pause = Duration::from_millis(500 * 2u64.pow(failures.min(4)));
        tokio::select! {
            _ = &mut interrupt => return Ok(Followed::Interrupted),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use indicatif::InMemoryTerm;

    use super::*;

    fn step(name: &str, status: &str, attempt: u32, progress: u32, message: &str) -> pb::Step {
        pb::Step {
            step_name: name.into(),
            status: status.into(),
            attempt,
            progress_percent: progress,
            message: message.into(),
            ..Default::default()
        }
    }

    fn job(status: &str, steps: Vec<pb::Step>) -> pb::Job {
        pb::Job {
            job_id: "enhanced-test-failover-4205a1b2-1".into(),
            vm_name: "win2019-app".into(),
            job_type: "test".into(),
            status: status.into(),
            current_step: steps
                .iter()
                .find(|s| s.status == "running")
                .map(|s| s.step_name.clone())
                .unwrap_or_default(),
            steps,
            ..Default::default()
        }
    }

    fn snapshot(job: pb::Job) -> pb::JobEvent {
        pb::JobEvent {
            kind: Kind::Snapshot as i32,
            job_id: job.job_id.clone(),
            status: job.status.clone(),
            job: Some(job),
            ..Default::default()
        }
    }

    fn transition(step: &str, status: &str, attempt: u32, message: &str) -> pb::JobEvent {
        pb::JobEvent {
            kind: Kind::Transition as i32,
            step_name: step.into(),
            status: status.into(),
            attempt,
            progress_percent: if status == "completed" { 100 } else { 0 },
            message: message.into(),
            ..Default::default()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn lines_show_the_snapshot_then_each_transition() {
        let mut lines = Lines::default();
        let first = lines.lines(
            Duration::ZERO,
            &snapshot(job(
                "executing",
                vec![
                    step("validation", "completed", 1, 100, "all checks passed"),
                    step("snapshot", "running", 1, 50, "1 of 2 disks"),
                    step("virtio-injection", "pending", 0, 0, ""),
                ],
            )),
        );
        assert_eq!(
            first,
            vec![
                "following test failover of win2019-app (job enhanced-test-failover-4205a1b2-1): executing",
                "    0.0s  validation         completed  attempt 1 100%  all checks passed",
                "    0.0s  snapshot           running    attempt 1  50%  1 of 2 disks",
            ]
        );
        let mut failed = transition("virtio-injection", "failed", 2, "");
        failed.error_code = "VIRTIO_FAILED".into();
        failed.error_message = "virt-customize exited 1".into();
        assert_eq!(
            lines.lines(SECOND * 2, &failed),
            vec![
                "    2.0s  virtio-injection   failed     attempt 2   0%  VIRTIO_FAILED: virt-customize exited 1"
            ]
        );
        let mut done = transition("", "failed", 0, "");
        done.error_code = "VIRTIO_FAILED".into();
        done.error_message = "virt-customize exited 1".into();
        assert_eq!(
            lines.lines(SECOND * 3, &done),
            vec!["    3.0s  job                failed     VIRTIO_FAILED: virt-customize exited 1"]
        );
        let mut completed = transition("snapshot", "completed", 1, "");
        completed.job = Some(job(
            "executing",
            vec![step(
                "snapshot",
                "completed",
                1,
                100,
                "2 snapshot(s) test-4205a1b2-1",
            )],
        ));
        assert_eq!(
            lines.lines(SECOND * 3, &completed),
            vec![
                "    3.0s  snapshot           completed  attempt 1 100%  2 snapshot(s) test-4205a1b2-1"
            ],
            "a transition without a message shows the step's"
        );
        let progress = pb::JobEvent {
            kind: Kind::Progress as i32,
            ..transition("snapshot", "running", 1, "2 of 2 disks")
        };
        assert!(
            lines.lines(SECOND * 3, &progress).is_empty(),
            "progress only moves bars"
        );
    }

    #[test]
    fn long_step_names_widen_the_column_and_skipped_steps_show_no_attempt() {
        let mut lines = Lines::default();
        let shown = lines.lines(
            Duration::ZERO,
            &snapshot(job(
                "compensating",
                vec![
                    step("validation", "skipped", 0, 100, "skipped by request"),
                    step("compensation-volume-reattachment", "running", 1, 0, ""),
                ],
            )),
        );
        assert_eq!(
            shown[1..],
            [
                "    0.0s  validation                       skipped              100%  skipped by request",
                "    0.0s  compensation-volume-reattachment running    attempt 1   0%",
            ]
        );
    }

    #[test]
    fn a_reopened_stream_repeats_nothing_already_shown() {
        let mut lines = Lines::default();
        let steps = vec![
            step("validation", "completed", 1, 100, "ok"),
            step("snapshot", "running", 1, 50, ""),
        ];
        lines.lines(Duration::ZERO, &snapshot(job("executing", steps)));
        let again = lines.lines(
            SECOND * 5,
            &snapshot(job(
                "executing",
                vec![
                    step("validation", "completed", 1, 100, "ok"),
                    step("snapshot", "completed", 1, 100, "2 snapshot(s)"),
                ],
            )),
        );
        assert_eq!(
            again,
            vec![
                "    5.0s  job                executing  (stream reopened)",
                "    5.0s  snapshot           completed  attempt 1 100%  2 snapshot(s)",
            ]
        );
    }

    #[test]
    fn bars_show_one_line_per_step_and_grow_with_compensation() {
        let term = InMemoryTerm::new(12, 160);
        let mut view = View::Bars(Bars::new(
            ProgressDrawTarget::term_like(Box::new(term.clone())),
            false,
        ));
        view.event(&snapshot(job(
            "executing",
            vec![
                step("validation", "completed", 1, 100, "all checks passed"),
                step("snapshot", "running", 2, 50, "1 of 2 disks"),
            ],
        )));
        view.event(&snapshot(job(
            "compensating",
            vec![
                step("validation", "completed", 1, 100, "all checks passed"),
                pb::Step {
                    error_code: "SNAPSHOT_FAILED".into(),
                    error_message: "LINSTOR answered 500".into(),
                    ..step("snapshot", "failed", 3, 50, "")
                },
                step("compensation-snapshot-deletion", "running", 1, 0, ""),
            ],
        )));
        view.finish();
        let screen = term.contents();
        let rows: Vec<&str> = screen.lines().collect();
        assert_eq!(rows.len(), 4, "{screen}");
        assert!(
            rows[0].contains(
                "test failover of win2019-app (enhanced-test-failover-4205a1b2-1): compensating, compensation-snapshot-deletion"
            ),
            "{screen}"
        );
        assert!(
            rows[1].starts_with("  validation                     [========================] 100% completed  all checks passed"),
            "{screen}"
        );
        assert!(
            rows[2].starts_with("  snapshot                       [============>           ]  50% failed (attempt 3)  SNAPSHOT_FAILED: LINSTOR answered 500"),
            "{screen}"
        );
        assert!(
            rows[3].starts_with(
                "  compensation-snapshot-deletion [                        ]   0% running"
            ),
            "{screen}"
        );
    }

    #[test]
    fn the_status_follows_the_job() {
        assert_eq!(
            status_after(&snapshot(job("executing", vec![]))),
            Some("executing")
        );
        assert_eq!(
            status_after(&transition("", "completed", 0, "")),
            Some("completed")
        );
        assert_eq!(
            status_after(&transition("snapshot", "completed", 1, "")),
            None
        );
    }
}
