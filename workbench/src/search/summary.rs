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
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The whole file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct SearchSummary {
    /// `grid`, `random`, `successive_halving`, `asha` or `evolution`.
    pub strategy: String,
    pub seed: u64,
    /// ASHA's decision window (its decisions are deterministic for a seed and a window).
    pub window: Option<usize>,
    /// True once the search has ended (false while it runs, or when it was interrupted).
    pub finished: bool,
    /// Every trial the search started, in the order it first started.
    pub trials: Vec<TrialSearch>,
    /// The best completed trial of each (task, budget, seed).
    pub best: Vec<Best>,
    /// Training FLOPs spent, each trial counted to the furthest step it trained (continuing from a
    /// checkpoint costs only the new steps).
    pub flops_spent: f64,
    /// Trials and FLOPs of an exhaustive search of the same space.
    pub full_grid_trials: Option<f64>,
    pub full_grid_flops: Option<f64>,
    /// `flops_spent / full_grid_flops`.
    pub fraction_of_grid: Option<f64>,
    /// What evolution minimised (`loss`, `params`, `state_size`, `flops_per_token`).
    pub objectives: Vec<String>,
    /// Trial ids on the Pareto front of `objectives` (multi-objective searches only).
    pub pareto_front: Option<Vec<String>>,
    /// Evolution: one record per generation (`evaluated` and `population`, with their objectives).
    pub generations: Vec<serde_json::Value>,
}

/// One trial's path through the search.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TrialSearch {
    pub id: String,
    pub label: String,
    pub arch: String,
    pub task: String,
    pub budget_flops: f64,
    pub seed: u64,
    /// Every job of this trial in order: one per rung it ran.
    pub rungs: Vec<RungVisit>,
    pub fate: TrialFate,
    /// The highest rung it ran (0 for single-rung strategies).
    pub last_rung: usize,
    /// Training FLOPs it spent (to its furthest step).
    pub flops_spent: f64,
    /// Held-out loss where it stopped.
    pub eval_loss: Option<f64>,
}

/// One rung of a trial.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RungVisit {
    pub rung: usize,
    /// The FLOP limit it trained to (None: its budget).
    pub until_flops: Option<f64>,
    /// How the rung ended; None while it runs.
    pub fate: Option<Fate>,
    pub step: Option<u64>,
    pub flops: Option<f64>,
    pub eval_loss: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TrialFate {
    Running,
    /// Paused at a rung; the search may still promote it.
    Paused,
    /// Paused at a rung and not promoted when the search ended.
    Stopped,
    Completed,
    Diverged,
    Failed,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Best {
    pub task: String,
    pub budget_flops: f64,
    pub seed: u64,
    pub id: String,
    pub label: String,
    pub eval_loss: f64,
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
            (v.fate, v.step, v.flops, v.eval_loss) = (Some(o.fate), Some(o.step), Some(o.flops), o.eval_loss);
        }
        t.fate = match o.fate {
            Fate::Paused => TrialFate::Paused,
            Fate::Completed => TrialFate::Completed,
            Fate::Diverged => TrialFate::Diverged,
            Fate::Failed => TrialFate::Failed,
        };
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
