//! How the engine reports: it never prints, it pushes events into a caller's [`Sink`].

/// A snapshot of a job's progress. Rates and ETAs are the front end's business: it
/// knows the wall clock it shows them against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the disk's address space processed so far.
    pub done_bytes: u64,
    /// Bytes of the disk's address space the job will process.
    pub total_bytes: u64,
    /// Chunks processed so far.
    pub done_chunks: u64,
    /// Chunks the job will process.
    pub total_chunks: u64,
    /// Chunks written to the target (restore) or to the store (capture).
    pub written_chunks: u64,
    /// Chunks that needed no write: already in the store, or already on the target.
    pub skipped_chunks: u64,
}

/// What a job tells its caller while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new phase starts ("reading source", "writing target", "writing partition tables").
    Phase(&'static str),
    /// Work advanced.
    Progress(Progress),
    /// Something the user should know that does not stop the job.
    Warning(String),
}

/// Receives a job's events. Called from the job's coordinating thread only.
pub trait Sink {
    /// One event.
    fn event(&mut self, event: Event);
    /// Polled at chunk boundaries; returning true stops the job with `Error::Cancelled`.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A sink that drops everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn event(&mut self, _: Event) {}
}

/// A sink that records every event, for tests.
#[derive(Debug, Default)]
pub struct VecSink(pub Vec<Event>);

impl Sink for VecSink {
    fn event(&mut self, event: Event) {
        self.0.push(event);
    }
}

/// Paces a job's progress events (at most five a second) and polls for cancellation at
/// each chunk boundary: the one place every pipeline does both.
#[derive(Debug)]
pub(crate) struct Ticker {
    last: std::time::Instant,
}

impl Ticker {
    pub(crate) fn new() -> Self {
        Ticker {
            last: std::time::Instant::now(),
        }
    }

    /// Reports `progress` if 200 ms passed since the last report; fails with
    /// `Error::Cancelled` when the sink asks to stop.
    pub(crate) fn tick(&mut self, sink: &mut dyn Sink, progress: Progress) -> crate::Result<()> {
        if self.last.elapsed().as_millis() >= 200 {
            self.last = std::time::Instant::now();
            sink.event(Event::Progress(progress));
        }
        if sink.cancelled() {
            return Err(crate::Error::Cancelled);
        }
        Ok(())
    }
}
