//! `grid` (every trial of the space, the longest first: see [`Grid::new`]) and `random` over the grid (`n` trials drawn
//! without replacement by a seeded shuffle). Neither looks at outcomes.

use super::{Job, Outcome, Proposal, RandomSpec, Strategy, StrategyReport};
use crate::trial::TrialSpec;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

/// Each distinct trial once (a space can name the same trial twice, e.g. two equal candidates).
fn distinct(trials: Vec<TrialSpec>) -> Vec<TrialSpec> {
    let mut seen = HashSet::new();
    trials.into_iter().filter(|t| seen.insert(t.id())).collect()
}

/// FLOPs of training every trial to its budget (whole steps).
pub fn grid_flops(trials: &[TrialSpec]) -> f64 {
    trials.iter().map(|t| t.steps() as f64 * t.flops_per_step()).sum()
}

/// Every trial of the space.
pub struct Grid {
    trials: Vec<TrialSpec>,
    next: usize,
    full_flops: f64,
}

impl Grid {
    /// The trials in launch order: largest FLOP budget first, then most steps (at one budget the smaller
    /// model takes more, shorter steps, which small models run at a lower utilisation), then the space's
    /// order. Starting the longest trials first keeps one long trial from running alone at the end of a
    /// parallel sweep (longest-processing-time-first scheduling); results and reports do not depend on it.
    pub fn new(trials: Vec<TrialSpec>) -> Grid {
        let mut trials = distinct(trials);
        trials.sort_by(|a, b| b.budget_flops.total_cmp(&a.budget_flops).then(b.steps().cmp(&a.steps())));
        Grid { full_flops: grid_flops(&trials), trials, next: 0 }
    }
}

impl Strategy for Grid {
    fn propose(&mut self) -> Proposal {
        match self.trials.get(self.next) {
            Some(t) => {
                self.next += 1;
                Proposal::Run(Box::new(Job::new(t.clone(), None, 0)))
            }
            None => Proposal::Done,
        }
    }

    fn tell(&mut self, _job: &Job, _outcome: &Outcome) {}

    fn report(&self) -> StrategyReport {
        StrategyReport {
            full_grid_trials: Some(self.trials.len() as f64),
            full_grid_flops: Some(self.full_flops),
            ..Default::default()
        }
    }
}

/// `n` trials of the grid, drawn by a shuffle seeded with `seed`; stops early at `max_flops`.
pub struct Random {
    chosen: Vec<TrialSpec>,
    next: usize,
    max_flops: f64,
    proposed_flops: f64,
    full: (usize, f64),
}

impl Random {
    pub fn new(trials: Vec<TrialSpec>, spec: &RandomSpec) -> Random {
        let mut trials = distinct(trials);
        let full = (trials.len(), grid_flops(&trials));
        trials.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed));
        trials.truncate(spec.n);
        Random {
            chosen: trials,
            next: 0,
            max_flops: spec.max_flops.map_or(f64::INFINITY, |b| b.0),
            proposed_flops: 0.0,
            full,
        }
    }
}

impl Strategy for Random {
    fn propose(&mut self) -> Proposal {
        let Some(t) = self.chosen.get(self.next) else { return Proposal::Done };
        let job = Job::new(t.clone(), None, 0);
        if self.proposed_flops + job.flops() > self.max_flops {
            return Proposal::Done;
        }
        self.next += 1;
        self.proposed_flops += job.flops();
        Proposal::Run(Box::new(job))
    }

    fn tell(&mut self, _job: &Job, _outcome: &Outcome) {}

    fn report(&self) -> StrategyReport {
        StrategyReport {
            full_grid_trials: Some(self.full.0 as f64),
            full_grid_flops: Some(self.full.1),
            ..Default::default()
        }
    }
}
