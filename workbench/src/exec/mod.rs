//! Executors run a search's jobs, each a trial process (`workbench trial --sweep DIR --id ID
//! [--until-flops F]`), so a crash or an out-of-memory error kills one trial, not the sweep.
//!
//! - [`local`]: a pool of trial processes on this machine, each with a fixed CPU thread budget.
//! - [`slurm`]: Slurm job arrays on a shared sweep directory ([`sbatch`]: its settings and batch scripts).
//!
//! Both read outcomes from the trial files only ([`ended_outcome`]), and record a failed result for a
//! trial that died without writing one. The YAML's `executor:` section picks one; flags override it.

pub mod local;
pub mod sbatch;
pub mod slurm;

use crate::search::{Fate, Job, Outcome};
use crate::store::Store;
use anyhow::Result;
use reports::Status;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

pub use local::{default_threads, LocalOptions, LocalPool};

/// The `executor:` section of a space file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutorSpec {
    Local(LocalSpec),
    Slurm(slurm::SlurmSpec),
}

/// `executor: {kind: local, jobs: 2}`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    /// Trial processes at once (default 1).
    #[serde(default)]
    pub jobs: Option<usize>,
}

/// Runs jobs; the search driver decides which.
pub trait Executor {
    /// Jobs it would start now.
    fn free_slots(&self) -> usize;
    /// Starts jobs (their `spec.json` is written); the index is the job's place in the search.
    fn start(&mut self, jobs: &[(usize, Job)]) -> Result<()>;
    /// Waits until some started jobs have ended, or about a second; returns their indices. Each ended job
    /// has an outcome in the store by then.
    fn wait(&mut self) -> Result<Vec<usize>>;
    /// Jobs started and not yet ended.
    fn running(&self) -> usize;
    /// A job whose outcome was already in the store (a resumed sweep): nothing runs, but progress counts it.
    fn known(&mut self, _job: &Job) {}
    /// Stops everything it started (Ctrl-C), unless asked to leave it running.
    fn cancel(&mut self) -> Result<()>;
}

/// The driver was interrupted (SIGINT or SIGTERM): `main` exits with 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; {0}")]
pub struct Interrupted(pub String);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag that [`interrupted`] reads, so executors can stop what they
/// started (and Slurm arrays are cancelled) before the driver exits.
pub fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn outcome_of_result(r: &reports::TrialResult) -> Outcome {
    let fate = match r.status {
        Status::Completed => Fate::Completed,
        Status::Diverged => Fate::Diverged,
        Status::Failed => Fate::Failed,
    };
    Outcome { fate, eval_loss: r.final_eval_loss, step: r.steps, flops: r.flops_spent }
}

/// The outcome of `job` if the store already has one that needs no rerun: its rung record, or a completed
/// or diverged result. (A trial that already reached its budget stands in with its final loss at every rung.)
pub fn known_outcome(store: &Store, job: &Job) -> Option<Outcome> {
    if job.until_flops.is_some() {
        if let Some(r) = store.read_rung(&job.id, job.stop_step()) {
            return Some(Outcome { fate: Fate::Paused, eval_loss: Some(r.eval_loss), step: r.step, flops: r.flops });
        }
    }
    store.read_result(&job.id).filter(|r| r.status != Status::Failed).map(|r| outcome_of_result(&r))
}

/// The outcome of a job that has ended: as [`known_outcome`], or a failed result.
pub fn ended_outcome(store: &Store, job: &Job) -> Option<Outcome> {
    known_outcome(store, job).or_else(|| store.read_result(&job.id).map(|r| outcome_of_result(&r)))
}

/// Writes a failed result for a trial whose process ended without an outcome.
pub fn record_crash(store: &Store, id: &str, reason: &str) -> Result<()> {
    let spec = store.read_spec(id)?;
    let mut r = crate::train::empty_result(&spec, id, "unknown");
    r.status = Status::Failed;
    r.reason = Some(reason.to_string());
    r.curve = store.curve_until(id, u64::MAX)?;
    store.write_result(&r)
}

/// The last non-empty line of a log file, for failure reasons.
pub fn last_line(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string))
        .unwrap_or_default()
}

/// `label task budget`, with the rung for a rung job: how progress lines name a job.
pub fn job_label(job: &Job) -> String {
    let s = &job.spec;
    let rung = job.until_flops.map(|f| format!(" (rung {} to {f:.1e})", job.rung)).unwrap_or_default();
    format!("{} {} {:.1e}{rung}", s.label, s.task.name(), s.budget_flops)
}

/// One line about how a job ended.
pub fn describe_outcome(o: &Outcome) -> String {
    let loss = o.eval_loss.map(|l| format!(" eval loss {l:.4}")).unwrap_or_default();
    let fate = match o.fate {
        Fate::Paused => "paused",
        Fate::Completed => "completed",
        Fate::Diverged => "diverged",
        Fate::Failed => "failed",
    };
    format!("{fate:<9} at step {}{loss}", o.step)
}
