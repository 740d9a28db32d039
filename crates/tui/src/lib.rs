//! The text UI (ratatui + crossterm): home, capture/restore/verify wizards, progress,
//! results and tools, for an 80×25 VGA console or a serial line, keyboard only.
//!
//! Shaped like gitui (STYLE.md habit 7): [`App`] is plain data; [`keymap`] turns keys
//! into [`Action`]s; [`update`] is the only place state changes and returns
//! [`Effect`]s; [`render`] draws without changing anything. Jobs run on a worker
//! thread ([`Runtime`]) whose sink sends events over a channel. Contains no job logic:
//! everything that checks or writes is `ops`.
#![forbid(unsafe_code)]

pub mod action;
pub mod app;
pub mod browser;
pub mod browser_io;
pub mod diskstores;
pub mod model;
pub mod runtime;
pub mod term;
pub mod ui;
pub mod update;

pub use action::{keymap, Action, Effect, JobMsg, JobSpec};
pub use app::{App, Exit, Screen};
pub use model::{DiskRow, DiskSource, FixedDisks, PartRow, StoreRow};
pub use runtime::{dispatch, Runtime};
pub use term::{console_size, run, Options};
pub use ui::render;
pub use update::update;
