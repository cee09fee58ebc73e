//! What virt-customize prints: lines, progress messages, warnings and
//! errors, and the bounded log kept of them.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    /// The line without its end-of-line and without ANSI colour sequences.
    pub text: String,
    /// When the line arrived, counted from the start of the process.
    pub elapsed: Duration,
}

impl OutputLine {
    /// The progress message on this line, if it is one (stdout only).
    pub fn progress(&self) -> Option<Progress<'_>> {
        match self.stream {
            Stream::Stdout => parse_progress(&self.text),
            Stream::Stderr => None,
        }
    }
}

/// A timestamped progress message such as `[  12.3] Setting a random seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress<'a> {
    /// The tool's own clock: time since it started.
    pub at: Duration,
    pub message: &'a str,
}

/// Parses a progress line: `[` seconds `]` then the message.
pub fn parse_progress(line: &str) -> Option<Progress<'_>> {
    let (seconds, message) = line.strip_prefix('[')?.split_once(']')?;
    let seconds: f64 = seconds.trim().parse().ok()?;
    let at = Duration::try_from_secs_f64(seconds).ok()?;
    let message = message.strip_prefix(' ').unwrap_or(message).trim_end();
    Some(Progress { at, message })
}

/// The message of a `<program>: <kind>: <message>` line (the form of the
/// libguestfs tools' warnings and errors), for `kind` `warning` or `error`.
pub(super) fn tool_message<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    let (program, rest) = line.split_once(": ")?;
    if program.is_empty() || program.contains(char::is_whitespace) {
        return None;
    }
    rest.strip_prefix(kind)?.strip_prefix(": ")
}

/// Removes ANSI escape sequences (`ESC [ ... final`), which the tool emits
/// only when asked to colour its output or when writing to a terminal.
pub(super) fn strip_ansi(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.clone().next() == Some('[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The output of one run, kept as the step's log. Bounded: when the output
/// is larger than the limit, its beginning and its end are kept and the
/// lines in between are counted as omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepLog {
    lines: Vec<OutputLine>,
    omitted_lines: u64,
    omitted_at: usize,
}

impl StepLog {
    /// The kept lines, in arrival order (the omitted ones sit between
    /// `lines()[..omitted_at]` and the rest; see [`StepLog::omitted_at`]).
    pub fn lines(&self) -> &[OutputLine] {
        &self.lines
    }

    /// How many lines were dropped to respect the size limit.
    pub fn omitted_lines(&self) -> u64 {
        self.omitted_lines
    }

    /// The index in [`StepLog::lines`] where the omitted lines were.
    pub fn omitted_at(&self) -> usize {
        self.omitted_at
    }

    pub fn is_truncated(&self) -> bool {
        self.omitted_lines > 0
    }
}

/// The log as plain text, one line per output line, with a marker where
/// lines were omitted.
impl fmt::Display for StepLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, line) in self.lines.iter().enumerate() {
            if index == self.omitted_at && self.is_truncated() {
                writeln!(f, "[... {} lines omitted ...]", self.omitted_lines)?;
            }
            writeln!(f, "{}", line.text)?;
        }
        if self.omitted_at >= self.lines.len() && self.is_truncated() {
            writeln!(f, "[... {} lines omitted ...]", self.omitted_lines)?;
        }
        Ok(())
    }
}

/// Builds a [`StepLog`] within a byte budget: a quarter for the head, the
/// rest for a sliding tail (errors come last, so the tail matters most).
#[derive(Debug)]
pub(super) struct LogBuffer {
    head: Vec<OutputLine>,
    head_bytes: usize,
    head_limit: usize,
    tail: VecDeque<OutputLine>,
    tail_bytes: usize,
    tail_limit: usize,
    omitted_lines: u64,
}

impl LogBuffer {
    pub(super) fn new(limit_bytes: usize) -> Self {
        let head_limit = limit_bytes / 4;
        Self {
            head: Vec::new(),
            head_bytes: 0,
            head_limit,
            tail: VecDeque::new(),
            tail_bytes: 0,
            tail_limit: limit_bytes - head_limit,
            omitted_lines: 0,
        }
    }

    pub(super) fn push(&mut self, line: OutputLine) {
        let size = line.text.len() + 1;
        let head_open = self.tail.is_empty() && self.omitted_lines == 0;
        if head_open && self.head_bytes + size <= self.head_limit {
            self.head_bytes += size;
            self.head.push(line);
            return;
        }
        self.tail_bytes += size;
        self.tail.push_back(line);
        while self.tail_bytes > self.tail_limit {
            let Some(dropped) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= dropped.text.len() + 1;
            self.omitted_lines += 1;
        }
    }

    pub(super) fn finish(self) -> StepLog {
        let omitted_at = self.head.len();
        let mut lines = self.head;
        lines.extend(self.tail);
        StepLog {
            lines,
            omitted_lines: self.omitted_lines,
            omitted_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> OutputLine {
        OutputLine {
            stream: Stream::Stdout,
            text: text.to_owned(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn progress_lines_parse_into_seconds_and_message() {
        let progress = parse_progress("[  12.3] Setting a random seed").unwrap();
        assert_eq!(progress.at, Duration::from_millis(12_300));
        assert_eq!(progress.message, "Setting a random seed");
        let first = parse_progress("[   0.0] Examining the guest ...").unwrap();
        assert_eq!(first.message, "Examining the guest ...");
        assert!(parse_progress("virt-customize: warning: x").is_none());
        assert!(parse_progress("[ abc] nope").is_none());
        assert!(parse_progress("[-1.0] nope").is_none());
    }

    #[test]
    fn tool_messages_need_a_program_name_and_the_kind() {
        let warning = "virt-customize: warning: random seed could not be set";
        assert_eq!(
            tool_message(warning, "warning"),
            Some("random seed could not be set")
        );
        assert_eq!(tool_message(warning, "error"), None);
        assert_eq!(tool_message("a b: warning: x", "warning"), None);
        assert_eq!(tool_message("warning: x", "warning"), None);
    }

    #[test]
    fn ansi_colour_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\x1b[0;32mFinishing off\x1b[0m"),
            "Finishing off"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn a_small_log_is_kept_whole() {
        let mut buffer = LogBuffer::new(1024);
        buffer.push(line("one"));
        buffer.push(line("two"));
        let log = buffer.finish();
        assert!(!log.is_truncated());
        assert_eq!(log.to_string(), "one\ntwo\n");
    }

    #[test]
    fn a_large_log_keeps_its_head_and_tail() {
        let mut buffer = LogBuffer::new(40);
        for n in 0..100 {
            buffer.push(line(&format!("line {n:02}")));
        }
        let log = buffer.finish();
        assert!(log.is_truncated());
        let text = log.to_string();
        assert!(text.starts_with("line 00\n"), "{text}");
        assert!(text.ends_with("line 99\n"), "{text}");
        assert!(text.contains("lines omitted"), "{text}");
        assert_eq!(log.lines().len() as u64 + log.omitted_lines(), 100);
    }
}
