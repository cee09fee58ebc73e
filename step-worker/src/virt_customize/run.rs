//! Running one virt-customize process: spawn it in its own process group,
//! stream its output, enforce the deadline and the cancel, reap it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::VirtCustomize;
use super::outcome::{InjectionError, InjectionReport, OutputAnalysis};
use super::output::{OutputLine, Stream, strip_ansi};
use super::process_group::{GroupGuard, signal_group, sweep};

/// Longest line kept; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// How long to wait for the output pipes to close once the group is gone
/// (only a process that left the group can still hold them).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum Stop {
    Deadline,
    Cancelled,
}

pub(super) async fn inject(
    vc: &VirtCustomize,
    device: &Path,
    cancel: CancellationToken,
    on_line: &mut (dyn FnMut(&OutputLine) + Send),
) -> Result<InjectionReport, InjectionError> {
    if cancel.is_cancelled() {
        return Err(InjectionError::Cancelled {
            log: OutputAnalysis::new(0).into_log(),
        });
    }
    let mut command = Command::new(&vc.command);
    command
        .args(vc.arguments(device))
        // The outcome is read from English messages.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| InjectionError::Spawn {
        command: vc.command.clone(),
        source,
    })?;
    let Some(pgid) = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw)
    else {
        let _ = child.start_kill();
        return Err(InjectionError::Wait {
            source: std::io::Error::other("the spawned process has no pid"),
        });
    };
    let mut guard = GroupGuard::new(pgid);
    tracing::info!(pid = pgid.as_raw(), deadline = ?vc.deadline, "virt-customize started");

    let (tx, mut rx) = mpsc::channel(256);
    let mut readers = JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        readers.spawn(read_lines(stdout, Stream::Stdout, started, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(read_lines(stderr, Stream::Stderr, started, tx));
    }

    let mut analysis = OutputAnalysis::new(vc.log_limit_bytes);
    let mut accept = |line: OutputLine, analysis: &mut OutputAnalysis| {
        if let Some(progress) = line.progress() {
            tracing::debug!(at = ?progress.at, message = progress.message, "virt-customize progress");
        }
        on_line(&line);
        analysis.push(line);
    };

    let deadline = tokio::time::sleep(vc.deadline);
    let grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(deadline, grace);
    let mut stop: Option<Stop> = None;
    let mut killed = false;
    let mut streams_open = true;
    let status = loop {
        tokio::select! {
            line = rx.recv(), if streams_open => match line {
                Some(line) => accept(line, &mut analysis),
                None => streams_open = false,
            },
            status = child.wait() => break status,
            () = &mut deadline, if stop.is_none() => {
                tracing::warn!(deadline = ?vc.deadline, "virt-customize deadline passed; stopping its process group");
                stop = Some(Stop::Deadline);
                signal_group(pgid, Signal::SIGTERM);
                grace.as_mut().reset(Instant::now() + vc.kill_grace);
            }
            () = cancel.cancelled(), if stop.is_none() => {
                tracing::warn!("virt-customize cancelled; stopping its process group");
                stop = Some(Stop::Cancelled);
                signal_group(pgid, Signal::SIGTERM);
                grace.as_mut().reset(Instant::now() + vc.kill_grace);
            }
            () = &mut grace, if stop.is_some() && !killed => {
                tracing::warn!(grace = ?vc.kill_grace, "virt-customize survived SIGTERM; sending SIGKILL");
                killed = true;
                signal_group(pgid, Signal::SIGKILL);
            }
        }
    };

    // The leader is reaped; make sure none of its group is left either.
    if sweep(pgid).await {
        guard.disarm();
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while streams_open {
            match rx.recv().await {
                Some(line) => accept(line, &mut analysis),
                None => streams_open = false,
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("virt-customize output still open after its group ended; dropping the rest");
        readers.abort_all();
    }

    let duration = started.elapsed();
    let status = status.map_err(|source| InjectionError::Wait { source })?;
    tracing::info!(
        exit_code = status.code(),
        signal = std::os::unix::process::ExitStatusExt::signal(&status),
        elapsed_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        stopped_by = ?stop,
        "virt-customize ended"
    );
    match stop {
        Some(Stop::Deadline) => Err(InjectionError::TimedOut {
            after: vc.deadline,
            log: analysis.into_log(),
        }),
        Some(Stop::Cancelled) => Err(InjectionError::Cancelled {
            log: analysis.into_log(),
        }),
        None => analysis.classify(status, duration),
    }
}

/// Forwards the lines of one stream until it closes or the receiver goes.
async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    stream: Stream,
    started: Instant,
    tx: mpsc::Sender<OutputLine>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let truncated = match read_capped_line(&mut reader, &mut buf).await {
            Ok(None) => return,
            Ok(Some(truncated)) => truncated,
            Err(error) => {
                tracing::warn!(?stream, %error, "cannot read virt-customize output");
                return;
            }
        };
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let mut text = strip_ansi(&String::from_utf8_lossy(&buf));
        if truncated {
            text.push_str(" [line truncated]");
        }
        let line = OutputLine {
            stream,
            text,
            elapsed: started.elapsed(),
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

/// Reads one line without its newline into `buf`, keeping at most
/// [`MAX_LINE_BYTES`]. `None` at end of stream; `Some(true)` if the line
/// was cut.
async fn read_capped_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    let mut read_any = false;
    let mut truncated = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let (chunk, used, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (&available[..newline], newline + 1, true),
            None => (available, available.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        truncated |= chunk.len() > room;
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if complete {
            return Ok(Some(truncated));
        }
    }
}
