//! `workbench mad`: the MAD protocol (Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`) on a space's
//! candidates.
//!
//! Each candidate is trained on each MAD task setting (every task's baseline and its one-at-a-time changes,
//! [`crate::tasks::mad::settings`]) once per cell of the learning-rate x weight-decay grid, for the protocol's
//! epochs ([`plan`] says how epochs become a FLOP budget and which optimiser each trial gets). A setting's score is
//! the best test accuracy over the grid, a task's score the mean over its settings, the MAD score the mean over the
//! six tasks; the aggregation lives with the `mad.json` types in `reports::mad`, so the report can redo it from the
//! trial files. Accuracy is `macro_accuracy` (`train::metrics`): the MAD reference's torchmetrics default.
//!
//! The space file is the sweep's format: `workbench mad` reads `candidates` (and `name`), and a `mad:` section
//! ([`spec`]) for anything that differs from the published protocol; `tasks` and `budgets` may be left out (a
//! sweep needs them), and `seeds`, `optim` and `train` are a sweep's and are not used here (the protocol fixes the
//! seed, the optimiser and the batch). Every trial is an ordinary trial of the store, so `--resume` continues an
//! interrupted run and one directory can hold a sweep and a MAD run of the same candidates, which is what the
//! report needs to plot MAD scores against compute-optimal loss.
//!
//! ```text
//! DIR/mad.json          reports::mad::MadResults: per candidate, task, setting: every grid cell (its trial),
//!                       the best cell, the scores; the protocol as run and how it differs from the published one
//! DIR/mad-space.yaml    the space file as read
//! DIR/trials/ID/...     the trials, as for a sweep
//! ```

pub mod plan;
pub mod run;
pub mod spec;

#[cfg(test)]
mod tests;

pub use plan::{plan, MadPlan, METRIC};
pub use run::{run, write_report_without_sweep, MadOptions};
pub use spec::{MadOverrides, MadSpec, MadTaskName};
