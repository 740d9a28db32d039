//! Jobs shared by every front end (CLI, TUI, unattended boot): resolving sources and
//! targets, the safety checks that run before the first write, and running capture,
//! restore and verify with cleanup on failure. Draws no UI.
#![forbid(unsafe_code)]
