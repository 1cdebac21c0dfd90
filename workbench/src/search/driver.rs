//! The search driver: asks a [`Strategy`] for jobs, hands them to an [`Executor`], and tells the strategy
//! each outcome, strictly in the order the jobs were proposed.
//!
//! Determinism: the strategy is told the next outcome only when it says `Wait` (or, for a lagged strategy
//! such as ASHA, when decision k needs the outcomes of jobs `0..=k-window`). What it sees at each decision
//! is therefore fixed by the sequence of outcomes, not by how fast trials finish.
//!
//! Resumption: before running a job the driver looks for its outcome in the trial files
//! ([`known_outcome`]); a resumed sweep replays the same decisions, finds the outcomes of everything that
//! finished, and runs only the rest (an interrupted trial continues from its checkpoint).
//!
//! `DIR/search.jsonl` logs every decision: a `start` line (strategy, seed, window), then `launch`,
//! `outcome` and the strategy's own lines (evolution: `child`, `generation`), and `finished`. A resumed
//! sweep compares its decisions with the old log (and says where they depart, which happens only when a
//! trial that failed before succeeds on retry) and reuses its window. `DIR/search.json` is the
//! [`summary`](super::summary).

use super::summary::{SearchSummary, Tracker};
use super::{Job, Outcome, Proposal, Strategy};
use crate::exec::{ended_outcome, interrupted, known_outcome, Executor, Interrupted};
use crate::store::{write_atomic, Store};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;

/// The decision log.
struct Log {
    file: std::fs::File,
    /// (id, rung) of each launch in the previous run's log, to compare against.
    old: Vec<(String, usize)>,
    departed: bool,
}

impl Log {
    /// Opens the log afresh; returns it and the window the previous run used, if any.
    fn open(store: &Store, files: &Files, strategy: &str, seed: u64) -> Result<(Log, Option<usize>)> {
        let path = store.root.join(files.log);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let same = lines.first().is_some_and(|h| h["strategy"] == strategy && h["seed"] == seed);
        let old_window = lines.first().filter(|_| same).and_then(|h| h["window"].as_u64()).map(|w| w as usize);
        let old = lines
            .iter()
            .filter(|l| same && l["event"] == "launch")
            .map(|l| (l["id"].as_str().unwrap_or("").to_string(), l["rung"].as_u64().unwrap_or(0) as usize))
            .collect();
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((Log { file, old, departed: false }, old_window))
    }

    fn write(&mut self, line: &Value) -> Result<()> {
        let mut bytes = serde_json::to_vec(line)?;
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        Ok(())
    }

    fn launch(&mut self, k: usize, job: &Job) -> Result<()> {
        if let Some((id, rung)) = self.old.get(k) {
            if !self.departed && (id != &job.id || *rung != job.rung) {
                self.departed = true;
                eprintln!(
                    "note: the search departs from its previous log at job {k} (a trial that failed before has an outcome now)"
                );
            }
        }
        self.write(&json!({"event": "launch", "job": k, "id": job.id, "rung": job.rung,
                           "until_flops": job.until_flops, "label": job.spec.label}))
    }
}

/// Where a run of the driver records itself in the sweep directory.
#[derive(Debug, Clone, Copy)]
pub struct Files {
    /// The decision log (`search.jsonl` for a sweep).
    pub log: &'static str,
    /// The summary (`search.json` for a sweep).
    pub summary: &'static str,
    /// Keep `sweep.json`'s trial list to the trials started, so the report shows them (also after an
    /// interruption). Off for runs that share a directory with a sweep they are not part of (MAD).
    pub list_trials: bool,
}

impl Files {
    /// What `workbench sweep` uses.
    pub const SWEEP: Files = Files { log: "search.jsonl", summary: "search.json", list_trials: true };
}

/// Runs the search to its end (or an interrupt) and returns the summary written to `files.summary`.
/// `window` is the decision window of lagged strategies (the executor's parallelism); a resumed sweep
/// keeps the window it started with.
pub fn run(
    store: &Store,
    strategy: &mut dyn Strategy,
    name: &str,
    seed: u64,
    window: usize,
    exec: &mut dyn Executor,
    files: &Files,
) -> Result<SearchSummary> {
    let (mut log, old_window) = Log::open(store, files, name, seed)?;
    let lagged = strategy.lagged();
    let window = if lagged { old_window.unwrap_or(window).max(1) } else { window };
    log.write(&json!({"event": "start", "strategy": name, "seed": seed, "window": lagged.then_some(window)}))?;
    let mut tracker = Tracker::new(name, seed, lagged.then_some(window));
    let mut jobs: Vec<Job> = Vec::new();
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    let (mut ids, mut seen): (Vec<String>, std::collections::HashSet<String>) = Default::default();
    let (mut told, mut listed) = (0, usize::MAX);
    let mut done = false;
    loop {
        if interrupted() {
            exec.cancel()?;
            write_summary(store, files, &mut tracker, strategy, false)?;
            return Err(Interrupted("the sweep can continue with --resume".into()).into());
        }
        let mut batch: Vec<(usize, Job)> = Vec::new();
        while !done {
            let k = jobs.len();
            let need = if lagged { (k + 1).saturating_sub(window) } else { 0 };
            if told < need {
                if outcomes[told].is_some() {
                    tell(store, files, &mut log, &mut tracker, strategy, &jobs, &outcomes, &mut told)?;
                    continue;
                }
                break;
            }
            if exec.free_slots() <= batch.len() {
                break;
            }
            match strategy.propose() {
                Proposal::Run(job) => {
                    let job = *job;
                    log.launch(k, &job)?;
                    store.write_spec(&job.spec)?;
                    tracker.started(&job);
                    if seen.insert(job.id.clone()) {
                        ids.push(job.id.clone());
                    }
                    let known = known_outcome(store, &job);
                    match &known {
                        Some(_) => exec.known(&job),
                        None => batch.push((k, job.clone())),
                    }
                    outcomes.push(known);
                    jobs.push(job);
                }
                Proposal::Wait => {
                    if told < jobs.len() && outcomes[told].is_some() {
                        tell(store, files, &mut log, &mut tracker, strategy, &jobs, &outcomes, &mut told)?;
                        continue;
                    }
                    break;
                }
                Proposal::Done => done = true,
            }
        }
        if files.list_trials && seen.len() != listed {
            store.set_trials(ids.clone())?;
            listed = seen.len();
        }
        if !batch.is_empty() {
            exec.start(&batch)?;
        }
        while done && told < jobs.len() && outcomes[told].is_some() {
            tell(store, files, &mut log, &mut tracker, strategy, &jobs, &outcomes, &mut told)?;
        }
        if done && told == jobs.len() {
            break;
        }
        if exec.running() == 0 && batch.is_empty() {
            if told < jobs.len() && outcomes[told].is_some() {
                continue;
            }
            bail!(
                "internal error: the {name} search waits for an outcome while nothing runs (job {told} of {})",
                jobs.len()
            );
        }
        for i in exec.wait()? {
            outcomes[i] = Some(ended_outcome(store, &jobs[i]).unwrap_or(Outcome {
                fate: super::Fate::Failed,
                eval_loss: None,
                step: 0,
                flops: 0.0,
            }));
        }
    }
    log.write(&json!({"event": "finished"}))?;
    write_summary(store, files, &mut tracker, strategy, true)
}

#[allow(clippy::too_many_arguments)]
fn tell(
    store: &Store,
    files: &Files,
    log: &mut Log,
    tracker: &mut Tracker,
    strategy: &mut dyn Strategy,
    jobs: &[Job],
    outcomes: &[Option<Outcome>],
    told: &mut usize,
) -> Result<()> {
    let (job, o) = (&jobs[*told], outcomes[*told].as_ref().expect("outcome"));
    strategy.tell(job, o);
    tracker.ended(job, o);
    log.write(&json!({"event": "outcome", "job": *told, "id": job.id, "rung": job.rung, "fate": o.fate,
                      "eval_loss": o.eval_loss, "step": o.step, "flops": o.flops}))?;
    for line in strategy.take_events() {
        log.write(&line)?;
    }
    *told += 1;
    write_summary(store, files, tracker, strategy, false)?;
    Ok(())
}

fn write_summary(
    store: &Store,
    files: &Files,
    tracker: &mut Tracker,
    strategy: &dyn Strategy,
    finished: bool,
) -> Result<SearchSummary> {
    let s = tracker.finish(strategy.report(), finished).clone();
    write_atomic(&store.root.join(files.summary), &serde_json::to_vec_pretty(&s)?)?;
    Ok(s)
}
