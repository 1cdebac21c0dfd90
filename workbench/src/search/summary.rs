//! `DIR/search.json`: what a search did, for the report (and for people). The driver rewrites it
//! atomically after every outcome, so it is current while a sweep runs and after it is killed.
//!
//! What the report should show from it:
//! - per trial, the rungs it reached (`trials[].rungs`: FLOPs, held-out loss, how each ended) and its
//!   `fate`: `completed` (reached its budget), `stopped` (paused at `last_rung` and never promoted),
//!   `diverged`, `failed`, or `paused`/`running` while the search is still going;
//! - `pareto_front` (trial ids) over `objectives` for multi-objective evolution;
//! - `flops_spent` against `full_grid_flops` (`fraction_of_grid`): what exhaustive search of the same space
//!   would have cost (for genome spaces an upper bound: every genome in the space at the search's budget);
//! - `best`: the best completed trial of each (task, budget, seed);
//! - `generations`: evolution's per-generation records (evaluated genomes and survivors, with objectives).

use super::{Fate, Job, Outcome, StrategyReport};
use std::collections::HashMap;

// The file's one schema lives in `reports` (which reads it back for the report).
pub use reports::search::{Best, RungFate, RungVisit, SearchSummary, TrialFate, TrialSearch};

/// How a rung ended, in the file's terms.
fn rung_fate(f: Fate) -> RungFate {
    match f {
        Fate::Paused => RungFate::Paused,
        Fate::Completed => RungFate::Completed,
        Fate::Diverged => RungFate::Diverged,
        Fate::Failed => RungFate::Failed,
    }
}

/// Builds the summary as jobs start and end.
#[derive(Debug, Default)]
pub struct Tracker {
    pub summary: SearchSummary,
    index: HashMap<String, usize>,
}

impl Tracker {
    pub fn new(strategy: &str, seed: u64, window: Option<usize>) -> Tracker {
        Tracker {
            summary: SearchSummary { strategy: strategy.to_string(), seed, window, ..Default::default() },
            index: HashMap::new(),
        }
    }

    pub fn started(&mut self, job: &Job) {
        let s = &job.spec;
        let i = *self.index.entry(job.id.clone()).or_insert_with(|| {
            self.summary.trials.push(TrialSearch {
                id: job.id.clone(),
                label: s.label.clone(),
                arch: s.arch.clone(),
                task: s.task.name().to_string(),
                budget_flops: s.budget_flops,
                seed: s.seed,
                rungs: Vec::new(),
                fate: TrialFate::Running,
                last_rung: 0,
                flops_spent: 0.0,
                eval_loss: None,
            });
            self.summary.trials.len() - 1
        });
        let t = &mut self.summary.trials[i];
        t.rungs.push(RungVisit {
            rung: job.rung,
            until_flops: job.until_flops,
            fate: None,
            step: None,
            flops: None,
            eval_loss: None,
        });
        t.fate = TrialFate::Running;
        t.last_rung = t.last_rung.max(job.rung);
    }

    pub fn ended(&mut self, job: &Job, o: &Outcome) {
        let Some(&i) = self.index.get(&job.id) else { return };
        let t = &mut self.summary.trials[i];
        if let Some(v) = t.rungs.iter_mut().rev().find(|v| v.rung == job.rung && v.fate.is_none()) {
            (v.fate, v.step, v.flops, v.eval_loss) =
                (Some(rung_fate(o.fate)), Some(o.step), Some(o.flops), o.eval_loss);
        }
        t.fate = rung_fate(o.fate).into();
        t.flops_spent = t.flops_spent.max(o.flops);
        t.eval_loss = o.eval_loss.or(t.eval_loss);
    }

    /// Totals, the best trials and the strategy's own facts; `finished` turns paused trials into stopped ones.
    pub fn finish(&mut self, report: StrategyReport, finished: bool) -> &SearchSummary {
        let s = &mut self.summary;
        s.finished = finished;
        if finished {
            for t in &mut s.trials {
                if t.fate == TrialFate::Paused {
                    t.fate = TrialFate::Stopped;
                }
            }
        }
        s.flops_spent = s.trials.iter().map(|t| t.flops_spent).sum();
        s.full_grid_trials = report.full_grid_trials;
        s.full_grid_flops = report.full_grid_flops;
        s.fraction_of_grid = report.full_grid_flops.filter(|&f| f > 0.0).map(|f| s.flops_spent / f);
        s.objectives = report.objectives;
        s.pareto_front = report.pareto_front;
        s.generations = report.generations;
        let mut best: Vec<Best> = Vec::new();
        for t in s.trials.iter().filter(|t| t.fate == TrialFate::Completed) {
            let Some(loss) = t.eval_loss.filter(|l| l.is_finite()) else { continue };
            let same = |b: &Best| b.task == t.task && b.budget_flops == t.budget_flops && b.seed == t.seed;
            match best.iter_mut().find(|b| same(b)) {
                Some(b) if b.eval_loss <= loss => {}
                Some(b) => (b.id, b.label, b.eval_loss) = (t.id.clone(), t.label.clone(), loss),
                None => best.push(Best {
                    task: t.task.clone(),
                    budget_flops: t.budget_flops,
                    seed: t.seed,
                    id: t.id.clone(),
                    label: t.label.clone(),
                    eval_loss: loss,
                }),
            }
        }
        s.best = best;
        &self.summary
    }
}
