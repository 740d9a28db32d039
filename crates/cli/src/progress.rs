//! The CLI's sink: human progress lines on stderr (bytes, rate, ETA), or JSON Lines
//! events on stdout with `--json`.

use imaging::{Event, Progress, Sink};
use serde_json::json;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// The window over which the current rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Reports a job's events and carries the Ctrl-C flag.
#[derive(Debug)]
pub struct Reporter {
    json: bool,
    tty: bool,
    phase: &'static str,
    started: Instant,
    samples: VecDeque<(Instant, u64)>,
    last_plain: Option<Instant>,
    line_open: bool,
    cancel: Arc<AtomicBool>,
    /// The last progress seen, for the final report.
    pub last: Progress,
    crash: CrashPoint,
}

/// Test hook (docs/CLI.md "Test hooks"): die like `kill -9` at a chosen point, so
/// interruption tests hit exact places instead of racing a timer.
/// `IMPRINT_TEST_CRASH_AFTER_CHUNKS=N` aborts after N chunks; `IMPRINT_TEST_CRASH_AT_PHASE=P`
/// aborts when phase P begins (e.g. "writing partition tables").
#[derive(Debug, Default)]
struct CrashPoint {
    after_chunks: Option<u64>,
    at_phase: Option<String>,
    chunks: std::cell::Cell<u64>,
}

impl CrashPoint {
    fn from_env() -> Self {
        CrashPoint {
            after_chunks: std::env::var("IMPRINT_TEST_CRASH_AFTER_CHUNKS")
                .ok()
                .and_then(|v| v.parse().ok()),
            at_phase: std::env::var("IMPRINT_TEST_CRASH_AT_PHASE").ok(),
            chunks: std::cell::Cell::new(0),
        }
    }
}

impl Reporter {
    pub fn new(json: bool, cancel: Arc<AtomicBool>) -> Self {
        Reporter {
            json,
            tty: std::io::stderr().is_terminal(),
            phase: "",
            started: Instant::now(),
            samples: VecDeque::new(),
            last_plain: None,
            line_open: false,
            cancel,
            last: Progress::default(),
            crash: CrashPoint::from_env(),
        }
    }

    /// True when reporting JSON Lines.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Average rate since the job started, bytes per second.
    pub fn average_rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.last.done_bytes as f64 / secs
        } else {
            0.0
        }
    }

    fn current_rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1.saturating_sub(a.1)) as f64 / (b.0 - a.0).as_secs_f64()
            }
            _ => self.average_rate(),
        }
    }

    /// Ends a `\r` progress line so the next output starts on a fresh line.
    pub fn finish_line(&mut self) {
        if self.line_open {
            eprintln!();
            self.line_open = false;
        }
    }

    fn progress(&mut self, p: Progress) {
        let now = Instant::now();
        self.last = p;
        self.samples.push_back((now, p.done_bytes));
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.0) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let rate = self.current_rate();
        let remaining = p.total_bytes.saturating_sub(p.done_bytes);
        let eta = (rate > 0.0).then(|| remaining as f64 / rate);
        if self.json {
            emit(
                "progress",
                json!({
                    "phase": self.phase,
                    "done_bytes": p.done_bytes,
                    "total_bytes": p.total_bytes,
                    "done_chunks": p.done_chunks,
                    "total_chunks": p.total_chunks,
                    "written_chunks": p.written_chunks,
                    "skipped_chunks": p.skipped_chunks,
                    "rate_bytes_per_sec": rate.round() as u64,
                    "average_rate_bytes_per_sec": self.average_rate().round() as u64,
                    "eta_seconds": eta.map(|e| e.round() as u64),
                    "elapsed_seconds": self.started.elapsed().as_secs(),
                }),
            );
            return;
        }
        let pct = if p.total_bytes > 0 {
            p.done_bytes as f64 * 100.0 / p.total_bytes as f64
        } else {
            100.0
        };
        let line = format!(
            "{:<24} {:>10} / {:<10} {:>5.1}%  {:>10}/s  ETA {}",
            self.phase,
            bytes(p.done_bytes),
            bytes(p.total_bytes),
            pct,
            bytes(rate as u64),
            eta.map(duration).unwrap_or_else(|| "--:--".into())
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
            self.line_open = true;
        } else if self
            .last_plain
            .is_none_or(|t| now.duration_since(t) >= PLAIN_EVERY)
            || p.done_bytes == p.total_bytes
        {
            eprintln!("{line}");
            self.last_plain = Some(now);
        }
    }
}

impl Sink for Reporter {
    fn event(&mut self, event: Event) {
        match event {
            Event::Phase(p) => {
                if self.crash.at_phase.as_deref() == Some(p) {
                    std::process::abort();
                }
                self.phase = p;
                if self.json {
                    emit("phase", json!({ "phase": p }));
                } else {
                    self.finish_line();
                }
            }
            Event::Progress(p) => self.progress(p),
            Event::Warning(w) => {
                if self.json {
                    emit("warning", json!({ "message": w }));
                } else {
                    self.finish_line();
                    eprintln!("imprint: warning: {w}");
                }
            }
        }
    }

    fn cancelled(&self) -> bool {
        // The engine polls once per chunk: that is the chunk counter of the crash hook.
        if let Some(n) = self.crash.after_chunks {
            let done = self.crash.chunks.get() + 1;
            self.crash.chunks.set(done);
            if done >= n {
                std::process::abort();
            }
        }
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Prints one JSON Lines event `{"type": ..., "data": ...}` on stdout, `type` first as
/// docs/CLI.md shows it (serde_json's own maps would sort `data` before `type`).
pub fn emit(kind: &str, data: serde_json::Value) {
    let line = format!(
        "{{\"type\":{},\"data\":{data}}}",
        serde_json::Value::from(kind)
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Binary-prefixed size: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    disks::usage::binary_size(n)
}

/// `h:mm:ss` or `m:ss`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(duration(75.0), "1:15");
        assert_eq!(duration(3725.0), "1:02:05");
    }
}
