//! Search drivers: which trials a sweep runs, in what order, and how far each trains.
//!
//! ```yaml
//! search: {strategy: grid}                                   # every trial of the space (the default)
//! search: {strategy: random, n: 12, seed: 0}                 # 12 trials of the grid, or 12 genomes
//! search: {strategy: asha, min_flops: 1e9, eta: 3, seed: 0}  # rungs at B/9, B/3, B for budget B = 9e9
//! search: {strategy: successive_halving, min_flops: 1e9, eta: 3}
//! search: {strategy: evolution, population: 8, generations: 4, genome: {...}}
//! ```
//!
//! A strategy is a deterministic state machine: it proposes [`Job`]s (a trial and the FLOP limit to train
//! it to) and is told their [`Outcome`]s, strictly in the order it proposed them ([`driver`]). Nothing else
//! reaches it, so its decisions are a function of its seed and the outcomes, never of timing. A killed
//! sweep resumes by replaying: the driver asks the strategy again, finds each outcome already in the trial
//! files, and only runs what has none.
//!
//! Multi-rung strategies stop trials early with `workbench trial --until-flops F`: the trial trains with
//! its full budget's schedule, pauses at F (a `rungs/STEP.json` record and a checkpoint), and a promotion
//! reruns it with a higher limit, continuing from the checkpoint.

pub mod driver;
pub mod evolution;
pub mod genome;
pub mod grid;
pub mod halving;
pub mod inherit;
pub mod pareto;
pub mod summary;
#[cfg(test)]
mod tests;

use crate::error::UsageError;
use crate::space::{Budget, Space};
use crate::trial::TrialSpec;
use serde::{Deserialize, Serialize};

/// The `search:` section of a space file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum SearchSpec {
    /// Every trial of the space.
    Grid(GridSpec),
    /// `n` trials sampled from the grid (or `n` genomes from `genome`).
    Random(RandomSpec),
    /// Synchronous successive halving over FLOP rungs (Jamieson & Talwalkar 2016).
    SuccessiveHalving(HalvingSpec),
    /// Asynchronous successive halving (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning").
    Asha(HalvingSpec),
    /// A genetic search over layouts, on one objective or a Pareto front of several.
    Evolution(evolution::EvolutionSpec),
}

impl Default for SearchSpec {
    fn default() -> Self {
        SearchSpec::Grid(GridSpec {})
    }
}

/// `grid` takes no settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {}

/// `random`: `n` samples, without replacement, from the grid or from a genome space.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomSpec {
    /// How many trials (grid) or genomes (with `genome`) to train.
    pub n: usize,
    #[serde(default)]
    pub seed: u64,
    /// Sample layouts from this genome space instead of the candidates' grid.
    #[serde(default)]
    pub genome: Option<genome::GenomeSpec>,
    /// Training FLOPs per genome trial (with `genome`); default: the space's budget, if it has one.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Stop proposing once the trials proposed would spend more than this many FLOPs in total.
    #[serde(default)]
    pub max_flops: Option<Budget>,
}

/// `successive_halving` and `asha`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HalvingSpec {
    /// The smallest rung is at least this many FLOPs: rungs are at `B / eta^K, ..., B / eta, B` for a
    /// trial of budget B, K as large as this allows.
    pub min_flops: Budget,
    /// Reduction factor: a rung promotes the best 1/eta of its trials.
    #[serde(default = "default_eta")]
    pub eta: u32,
    /// Orders the first rung (which trials start first, so which ASHA can promote early) and breaks ties.
    #[serde(default)]
    pub seed: u64,
}

/// 3, as in Hyperband and ASHA.
pub fn default_eta() -> u32 {
    3
}

/// One unit of work: train `spec` until `until_flops` (or its budget).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub spec: TrialSpec,
    /// Pause after this many training FLOPs; `None` trains to the budget.
    pub until_flops: Option<f64>,
    /// The rung (0 for single-rung strategies).
    pub rung: usize,
}

impl Job {
    pub fn new(spec: TrialSpec, until_flops: Option<f64>, rung: usize) -> Job {
        // A limit at or past the budget is no limit.
        let until_flops = until_flops.filter(|&f| spec.steps_until(f) < spec.steps());
        Job { id: spec.id(), spec, until_flops, rung }
    }

    /// The step the job ends at.
    pub fn stop_step(&self) -> u64 {
        self.until_flops.map_or(self.spec.steps(), |f| self.spec.steps_until(f))
    }

    /// Training FLOPs from step 0 to the job's end.
    pub fn flops(&self) -> f64 {
        self.stop_step() as f64 * self.spec.flops_per_step()
    }
}

/// How a job ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Stopped at its rung's limit; it can continue.
    Paused,
    Completed,
    Diverged,
    Failed,
}

/// What the strategy learns about a job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Outcome {
    pub fate: Fate,
    /// Held-out loss where it stopped (None when it failed before an evaluation).
    pub eval_loss: Option<f64>,
    pub step: u64,
    /// Training FLOPs the trial has spent in total.
    pub flops: f64,
}

impl Outcome {
    /// The loss strategies rank by: infinite for a diverged or failed trial.
    pub fn loss(&self) -> f64 {
        match (self.fate, self.eval_loss) {
            (Fate::Paused | Fate::Completed, Some(l)) if l.is_finite() => l,
            _ => f64::INFINITY,
        }
    }
}

/// What a strategy wants next.
#[derive(Debug, Clone, PartialEq)]
pub enum Proposal {
    Run(Box<Job>),
    /// Nothing until it is told the next outcome.
    Wait,
    /// Nothing more, ever.
    Done,
}

/// Facts a strategy adds to the search summary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StrategyReport {
    /// Trial ids of the non-dominated set over `objectives` (multi-objective searches).
    pub pareto_front: Option<Vec<String>>,
    pub objectives: Vec<String>,
    /// Trials and FLOPs of the exhaustive search over the same space (an upper bound for genome spaces).
    pub full_grid_trials: Option<f64>,
    pub full_grid_flops: Option<f64>,
    /// Strategy-specific records (evolution: one per generation).
    pub generations: Vec<serde_json::Value>,
}

/// A search strategy: a deterministic function of its seed and the outcomes it is told.
pub trait Strategy {
    /// Its next decision. Called again after every [`Strategy::tell`] while it says `Wait`.
    fn propose(&mut self) -> Proposal;
    /// The outcome of a job it proposed; outcomes arrive in proposal order.
    fn tell(&mut self, job: &Job, outcome: &Outcome);
    /// True when a decision depends on how many outcomes are known when it is made (ASHA). The driver then
    /// lets decision k see exactly the outcomes of jobs 0..=k-window, so a given window gives the same
    /// decisions however fast trials finish.
    fn lagged(&self) -> bool {
        false
    }
    /// Lines for `search.jsonl` about what it decided since the last call (e.g. a generation's survivors).
    fn take_events(&mut self) -> Vec<serde_json::Value> {
        Vec::new()
    }
    fn report(&self) -> StrategyReport;
}

impl SearchSpec {
    pub fn name(&self) -> &'static str {
        match self {
            SearchSpec::Grid(_) => "grid",
            SearchSpec::Random(_) => "random",
            SearchSpec::SuccessiveHalving(_) => "successive_halving",
            SearchSpec::Asha(_) => "asha",
            SearchSpec::Evolution(_) => "evolution",
        }
    }

    pub fn seed(&self) -> u64 {
        match self {
            SearchSpec::Grid(_) => 0,
            SearchSpec::Random(r) => r.seed,
            SearchSpec::SuccessiveHalving(h) | SearchSpec::Asha(h) => h.seed,
            SearchSpec::Evolution(e) => e.seed,
        }
    }

    /// True when the search builds its own layouts (a genome) and needs no `candidates`.
    pub fn uses_genome(&self) -> bool {
        matches!(self, SearchSpec::Evolution(_) | SearchSpec::Random(RandomSpec { genome: Some(_), .. }))
    }
}

/// Everything a space needs before a trial runs: its grid (unless a genome search replaces it) and its
/// search settings.
pub fn check(space: &Space) -> Result<(), UsageError> {
    if space.file.search.uses_genome() {
        if !space.file.candidates.is_empty() {
            let name = space.file.search.name();
            let msg = format!("`candidates` is unused: the {name} search builds its layouts from `search.genome`; remove `candidates`");
            return Err(space.err_at("candidates", 1, msg));
        }
    } else {
        space.trials()?;
    }
    build(space).map(|_| ())
}

/// An error about `key` of the top-level `section`: at the key's line if it has one of its own, else at
/// the section's (a flow mapping such as `search: {strategy: asha, eta: 1}` is one line).
pub(crate) fn err_in(space: &Space, section: &str, key: &str, msg: String) -> UsageError {
    let from = crate::yaml::line_of_key(&space.text, section, 1).unwrap_or(1);
    let line = crate::yaml::line_of_key(&space.text, key, from).unwrap_or(from);
    UsageError::new(format!("{}:{line}: {section}: {msg}", space.path.display()))
}

/// Checks the `search:` section against the space (every error names its line) and builds the strategy.
pub fn build(space: &Space) -> Result<Box<dyn Strategy>, UsageError> {
    let at = |key: &str, msg: String| err_in(space, "search", key, msg);
    Ok(match &space.file.search {
        SearchSpec::Grid(_) => Box::new(grid::Grid::new(space.trials()?)),
        SearchSpec::Random(r) => {
            if r.n < 1 {
                return Err(at("n", "`n` must be at least 1".into()));
            }
            match &r.genome {
                None => Box::new(grid::Random::new(space.trials()?, r)),
                Some(g) => {
                    let space_g = genome::GenomeSpace::new(space, g, r.budget)?;
                    Box::new(evolution::RandomGenomes::new(space_g, r))
                }
            }
        }
        SearchSpec::SuccessiveHalving(h) | SearchSpec::Asha(h) => {
            let asha = matches!(space.file.search, SearchSpec::Asha(_));
            if h.eta < 2 {
                return Err(at("eta", format!("`eta` must be at least 2, got {}", h.eta)));
            }
            let trials = space.trials()?;
            for t in &trials {
                if t.steps_until(h.min_flops.0) < 1 {
                    return Err(at(
                        "min_flops",
                        format!(
                            "`min_flops` = {:.3e} buys no training step of `{}` on {} ({:.3e} FLOPs per step); use at least {:.3e}",
                            h.min_flops.0,
                            t.label,
                            t.task.name(),
                            t.flops_per_step(),
                            t.flops_per_step()
                        ),
                    ));
                }
            }
            Box::new(halving::Halving::new(trials, h, asha))
        }
        SearchSpec::Evolution(e) => {
            let space_g = genome::GenomeSpace::new(space, &e.genome, e.budget)?;
            Box::new(evolution::Evolution::new(space_g, e).map_err(|(k, m)| at(k, m))?)
        }
    })
}
