//! # workbench (library)
//!
//! The parts of the `workbench` binary that tests and other tools use directly: the search space, the
//! tasks, the trial store, the training loop and the executors. `src/main.rs` is only the CLI.
//!
//! Key design decision: every trial is its own process (`workbench trial`), reading and writing only the
//! sweep directory, so one crash kills one trial and any executor (a local pool, a Slurm array) runs the
//! same command.

pub mod bench;
pub mod error;
pub mod exec;
pub mod graft;
pub mod mad;
pub mod search;
pub mod space;
pub mod store;
pub mod tasks;
pub mod train;
pub mod trial;
pub mod yaml;
