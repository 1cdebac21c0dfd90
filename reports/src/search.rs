//! `DIR/search.json` as the report reads it: what a search strategy did (which trials ran to which FLOP
//! rung, which were stopped early, the Pareto front, evolution's generations, the FLOPs spent against a full
//! grid's). The workbench writes the file (`workbench::search::summary`); this is a reading of it with its
//! own serde types, because `reports` must not depend on the training crate. Every field has a default and
//! unknown fields are ignored, so a newer writer never breaks an older report and a sweep still running (a
//! partial file) still renders.

use crate::ReportError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file name in a sweep directory.
pub const SEARCH_FILE: &str = "search.json";

/// The whole file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct SearchSummary {
    /// `grid`, `random`, `successive_halving`, `asha` or `evolution`.
    pub strategy: String,
    pub seed: u64,
    /// ASHA's decision window.
    pub window: Option<usize>,
    /// False while the search runs or when it was interrupted.
    pub finished: bool,
    /// Every trial the search started, in the order it first started (stopped ones included: they have
    /// rung records but no `result.json`).
    pub trials: Vec<TrialSearch>,
    pub best: Vec<Best>,
    /// Training FLOPs spent, each trial counted to its furthest step.
    pub flops_spent: f64,
    pub full_grid_trials: Option<f64>,
    pub full_grid_flops: Option<f64>,
    pub fraction_of_grid: Option<f64>,
    /// What evolution minimised, in the order of each genome's `objectives` list.
    pub objectives: Vec<String>,
    /// Trial ids on the Pareto front (multi-objective searches).
    pub pareto_front: Option<Vec<String>>,
    /// Evolution: one record per generation: `{generation, evaluated: [Genome], population: [Genome]}`.
    pub generations: Vec<Generation>,
}

/// One trial's path through the search.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct TrialSearch {
    pub id: String,
    pub label: String,
    pub arch: String,
    pub task: String,
    pub budget_flops: f64,
    pub seed: u64,
    /// One entry per rung it ran, in order.
    pub rungs: Vec<RungVisit>,
    /// `completed`, `stopped`, `paused`, `running`, `diverged` or `failed`.
    pub fate: String,
    pub last_rung: usize,
    pub flops_spent: f64,
    pub eval_loss: Option<f64>,
}

/// One rung of a trial: where it paused (or ended) and its held-out loss there.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct RungVisit {
    pub rung: usize,
    pub until_flops: Option<f64>,
    /// `paused`, `completed`, `diverged`, `failed`; absent while it runs.
    pub fate: Option<String>,
    pub step: Option<u64>,
    pub flops: Option<f64>,
    pub eval_loss: Option<f64>,
}

/// The best completed trial of one (task, budget, seed).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct Best {
    pub task: String,
    pub budget_flops: f64,
    pub seed: u64,
    pub id: String,
    pub label: String,
    pub eval_loss: f64,
}

/// One generation of evolution.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct Generation {
    pub generation: usize,
    /// Genomes bred (or drawn, for generation 0) and evaluated in this generation.
    pub evaluated: Vec<Genome>,
    /// The survivors after selection.
    pub population: Vec<Genome>,
}

/// A genome as the search log describes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct Genome {
    /// Its trials (one per task and seed).
    pub ids: Vec<String>,
    pub arch: String,
    pub d_model: i64,
    pub depth: usize,
    /// Values of [`SearchSummary::objectives`], in that order (loss infinite for a failed genome: JSON null).
    pub objectives: Vec<Option<f64>>,
}

impl SearchSummary {
    /// Reads `dir/search.json`; `None` when the directory has none (a sweep from before searches, or a MAD
    /// run). A file that does not parse is an error naming it.
    pub fn load(dir: &Path) -> Result<Option<SearchSummary>, ReportError> {
        let path = dir.join(SEARCH_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ReportError::Io { path, error }),
        };
        serde_json::from_str(&text).map(Some).map_err(|error| ReportError::Search { path, error })
    }

    /// Trials per fate, in a fixed order: (fate, count), only fates that occur.
    pub fn fate_counts(&self) -> Vec<(&'static str, usize)> {
        ["completed", "stopped", "paused", "running", "diverged", "failed"]
            .into_iter()
            .map(|f| (f, self.trials.iter().filter(|t| t.fate == f).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every genome evolution evaluated, once each (by its first trial id), in generation order.
    pub fn genomes(&self) -> Vec<&Genome> {
        let mut seen = std::collections::HashSet::new();
        self.generations
            .iter()
            .flat_map(|g| &g.evaluated)
            .filter(|g| seen.insert(g.ids.first().cloned().unwrap_or_default()))
            .collect()
    }
}
