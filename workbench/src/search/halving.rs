//! Successive halving over FLOP rungs, synchronous (SHA, Jamieson & Talwalkar 2016) and asynchronous
//! (ASHA, Li et al. 2020).
//!
//! Trials compete within a group of the same task, budget and seed. The rungs of a trial with budget B
//! are at `B / eta^K, ..., B / eta, B` FLOPs, K as large as keeps the first at least `min_flops`. A trial at a rung below the
//! last pauses there (`--until-flops`), and a promotion continues it from its checkpoint, so a trial that
//! reaches the last rung has trained exactly as it would in the grid.
//!
//! - SHA: every trial runs rung 0; when a rung is complete, the best `floor(n/eta)` (at least one) run the
//!   next.
//! - ASHA: whenever asked, promote a trial that is in the top `floor(n_k/eta)` of the `n_k` results at its
//!   rung k (highest rung first); otherwise start a new trial at rung 0. A grid is finite, so once a rung
//!   can receive no more trials it promotes at least one (as SHA does), and each group's best reaches its
//!   budget. The driver shows decision j the outcomes of jobs `0..=j-window` exactly
//!   ([`Strategy::lagged`]), so ASHA is deterministic for a seed and a window.
//!
//! A diverged or failed trial has infinite loss and is never promoted. Ties break by the seeded order.

use super::grid::grid_flops;
use super::{HalvingSpec, Job, Outcome, Proposal, Strategy, StrategyReport};
use crate::trial::TrialSpec;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The trials of one (task, budget, seed), in seeded order, and their progress through the rungs.
struct Group {
    trials: Vec<TrialSpec>,
    /// FLOPs of each rung; the last is the budget.
    rungs: Vec<f64>,
    /// `results[k]`: (loss, position in `trials`) of every outcome told at rung k.
    results: Vec<Vec<(f64, usize)>>,
    /// `promoted[k]`: positions promoted from rung k to k + 1.
    promoted: Vec<HashSet<usize>>,
    /// SHA: the rung running now and the positions that run it, in order; how many were proposed.
    rung: usize,
    members: Vec<usize>,
    proposed: usize,
    /// ASHA: trials started at rung 0 so far, and jobs proposed but not told per rung.
    started: usize,
    pending: Vec<usize>,
}

impl Group {
    fn job(&self, pos: usize, rung: usize) -> Job {
        let last = rung + 1 == self.rungs.len();
        Job::new(self.trials[pos].clone(), (!last).then(|| self.rungs[rung]), rung)
    }

    /// The best `floor(n/eta)` positions at rung k (at least one when `at_least_one`), finite losses only.
    fn top(&self, k: usize, eta: usize, at_least_one: bool) -> Vec<usize> {
        let mut r = self.results[k].clone();
        r.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = if at_least_one { (r.len() / eta).max(1) } else { r.len() / eta };
        r.into_iter().take(n).filter(|(l, _)| l.is_finite()).map(|(_, p)| p).collect()
    }
}

/// SHA or ASHA over every group of the grid.
pub struct Halving {
    groups: Vec<Group>,
    eta: usize,
    asynchronous: bool,
    /// Jobs proposed and not yet told.
    pending: usize,
    full: (usize, f64),
    /// Trial id -> (group, position).
    index: HashMap<String, (usize, usize)>,
}

/// Rung FLOPs for a budget B: `B / eta^K, ..., B / eta, B`, with K the largest for which the first rung
/// is at least `min_flops` (so rungs are evenly spaced in log FLOPs and end at the budget).
pub fn rungs(min_flops: f64, eta: u32, budget: f64) -> Vec<f64> {
    let eta = eta as f64;
    let mut k = 0;
    while budget / eta.powi(k + 1) >= min_flops * (1.0 - 1e-9) {
        k += 1;
    }
    (0..=k).rev().map(|j| budget / eta.powi(j)).collect()
}

impl Halving {
    pub fn new(trials: Vec<TrialSpec>, spec: &HalvingSpec, asynchronous: bool) -> Halving {
        let mut seen = HashSet::new();
        let trials: Vec<TrialSpec> = trials.into_iter().filter(|t| seen.insert(t.id())).collect();
        let full = (trials.len(), grid_flops(&trials));
        // Groups in order of first appearance; the key is what makes losses comparable.
        let mut keys: Vec<String> = Vec::new();
        let mut by_key: BTreeMap<String, Vec<TrialSpec>> = BTreeMap::new();
        for t in trials {
            let key = serde_json::json!([t.task, t.budget_flops, t.seed]).to_string();
            if !by_key.contains_key(&key) {
                keys.push(key.clone());
            }
            by_key.entry(key).or_default().push(t);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let groups: Vec<Group> = keys
            .into_iter()
            .map(|k| {
                let mut trials = by_key.remove(&k).expect("group");
                trials.shuffle(&mut rng);
                let rungs = rungs(spec.min_flops.0, spec.eta, trials[0].budget_flops);
                let n = rungs.len();
                Group {
                    members: (0..trials.len()).collect(),
                    trials,
                    rungs,
                    results: vec![Vec::new(); n],
                    promoted: vec![HashSet::new(); n],
                    rung: 0,
                    proposed: 0,
                    started: 0,
                    pending: vec![0; n],
                }
            })
            .collect();
        let mut index = HashMap::new();
        for (gi, g) in groups.iter().enumerate() {
            for (pos, t) in g.trials.iter().enumerate() {
                index.insert(t.id(), (gi, pos));
            }
        }
        Halving { groups, eta: spec.eta as usize, asynchronous, pending: 0, full, index }
    }

    fn propose_sha(&mut self) -> Option<Job> {
        for g in &mut self.groups {
            if g.proposed < g.members.len() {
                let pos = g.members[g.proposed];
                g.proposed += 1;
                return Some(g.job(pos, g.rung));
            }
        }
        None
    }

    /// ASHA's rule, with one addition for a finite grid: once a rung can receive no more trials (every
    /// trial started, nothing running at or below it, nothing left to promote into it), it promotes like
    /// SHA, at least one, so the best trial of a group always reaches the budget.
    fn propose_asha(&mut self) -> Option<Job> {
        let eta = self.eta;
        for g in &mut self.groups {
            let mut closed = g.started == g.trials.len();
            let mut best: Option<(usize, usize)> = None;
            for k in 0..g.rungs.len() - 1 {
                closed = closed && g.pending[k] == 0;
                let next = g.top(k, eta, closed).into_iter().find(|p| !g.promoted[k].contains(p));
                if let Some(pos) = next {
                    best = Some((k, pos)); // the highest rung with a promotion wins
                }
                closed = closed && next.is_none();
            }
            if let Some((k, pos)) = best {
                g.promoted[k].insert(pos);
                g.pending[k + 1] += 1;
                return Some(g.job(pos, k + 1));
            }
        }
        for g in &mut self.groups {
            if g.started < g.trials.len() {
                g.started += 1;
                g.pending[0] += 1;
                return Some(g.job(g.started - 1, 0));
            }
        }
        None
    }
}

impl Strategy for Halving {
    fn propose(&mut self) -> Proposal {
        let job = if self.asynchronous { self.propose_asha() } else { self.propose_sha() };
        match job {
            Some(j) => {
                self.pending += 1;
                Proposal::Run(Box::new(j))
            }
            None if self.pending > 0 => Proposal::Wait,
            None => Proposal::Done,
        }
    }

    fn tell(&mut self, job: &Job, outcome: &Outcome) {
        self.pending -= 1;
        let Some(&(gi, pos)) = self.index.get(&job.id) else { return };
        let g = &mut self.groups[gi];
        g.results[job.rung].push((outcome.loss(), pos));
        g.pending[job.rung] = g.pending[job.rung].saturating_sub(1);
        if !self.asynchronous && g.results[g.rung].len() == g.members.len() && g.rung + 1 < g.rungs.len() {
            // The rung is complete: the best 1/eta go on.
            let next = g.top(g.rung, self.eta, true);
            g.promoted[g.rung].extend(next.iter().copied());
            g.rung += 1;
            g.members = next;
            g.proposed = 0;
        }
    }

    fn lagged(&self) -> bool {
        self.asynchronous
    }

    fn report(&self) -> StrategyReport {
        StrategyReport {
            full_grid_trials: Some(self.full.0 as f64),
            full_grid_flops: Some(self.full.1),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rungs;

    #[test]
    fn rungs_grow_by_eta_and_end_at_the_budget() {
        assert_eq!(rungs(1.0, 3, 27.0), vec![1.0, 3.0, 9.0, 27.0]);
        assert_eq!(rungs(2.0, 3, 20.0), vec![20.0 / 9.0, 20.0 / 3.0, 20.0]);
        assert_eq!(rungs(30.0, 3, 20.0), vec![20.0]);
    }
}
