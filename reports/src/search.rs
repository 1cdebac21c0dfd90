//! `DIR/search.json`: what a search strategy did (which trials ran to which FLOP rung, which were stopped
//! early, the Pareto front, evolution's generations, the FLOPs spent against a full grid's). The one schema
//! of the file: the workbench writes it with these types (`workbench::search::summary`'s tracker fills
//! them), the report reads it with them. Reading is lenient: every field has a default, unknown fields are
//! ignored and an unknown fate reads as `Unknown`, so a newer writer never breaks an older report and a sweep
//! still running (a partial file) still renders.

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
    /// Evolution: one record per generation, `{generation, evaluated: [Genome], population: [Genome]}`, as
    /// the strategy wrote it (JSON values: evolution builds them; [`SearchSummary::generation_records`] reads
    /// them as [`Generation`]s).
    pub generations: Vec<serde_json::Value>,
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
    pub fate: TrialFate,
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
    /// How the rung ended; absent while it runs.
    pub fate: Option<RungFate>,
    pub step: Option<u64>,
    pub flops: Option<f64>,
    pub eval_loss: Option<f64>,
}

/// How a trial stands: `completed` (reached its budget), `stopped` (paused at its last rung and not promoted
/// when the search ended), `paused` or `running` while the search goes on, `diverged`, `failed`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// A fate this reader does not know (a newer writer), or none in a partial file.
    #[default]
    #[serde(other)]
    Unknown,
}

/// How one rung of a trial ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RungFate {
    /// Stopped at the rung's FLOP limit; it can continue.
    Paused,
    Completed,
    Diverged,
    Failed,
    /// A fate this reader does not know (a newer writer).
    #[serde(other)]
    Unknown,
}

impl TrialFate {
    /// Its name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialFate::Running => "running",
            TrialFate::Paused => "paused",
            TrialFate::Stopped => "stopped",
            TrialFate::Completed => "completed",
            TrialFate::Diverged => "diverged",
            TrialFate::Failed => "failed",
            TrialFate::Unknown => "unknown",
        }
    }
}

impl From<&str> for TrialFate {
    /// The fate named `name` in the file (`Unknown` for any other name).
    fn from(name: &str) -> TrialFate {
        serde_json::from_value(serde_json::Value::from(name)).unwrap_or(TrialFate::Unknown)
    }
}

impl From<RungFate> for TrialFate {
    /// A trial's fate after its latest rung ended so.
    fn from(f: RungFate) -> TrialFate {
        match f {
            RungFate::Paused => TrialFate::Paused,
            RungFate::Completed => TrialFate::Completed,
            RungFate::Diverged => TrialFate::Diverged,
            RungFate::Failed => TrialFate::Failed,
            RungFate::Unknown => TrialFate::Unknown,
        }
    }
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
        use TrialFate::*;
        [Completed, Stopped, Paused, Running, Diverged, Failed, Unknown]
            .into_iter()
            .map(|f| (f.as_str(), self.count(f)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// How many trials stand at `fate`.
    pub fn count(&self, fate: TrialFate) -> usize {
        self.trials.iter().filter(|t| t.fate == fate).count()
    }

    /// Evolution's generation records as [`Generation`]s (a record that is not an object is skipped; missing
    /// fields take their defaults).
    pub fn generation_records(&self) -> Vec<Generation> {
        self.generations.iter().filter_map(|g| serde_json::from_value(g.clone()).ok()).collect()
    }

    /// Every genome evolution evaluated, once each (by its first trial id), in generation order.
    pub fn genomes(&self) -> Vec<Genome> {
        let mut seen = std::collections::HashSet::new();
        self.generation_records()
            .into_iter()
            .flat_map(|g| g.evaluated)
            .filter(|g| seen.insert(g.ids.first().cloned().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newer writer's unknown fates and fields, and a partial trial, still read.
    #[test]
    fn unknown_fates_and_fields_read_leniently() {
        let text = r#"{"strategy": "asha", "new_field": 1, "trials": [
            {"id": "a", "fate": "migrated", "rungs": [{"rung": 0, "fate": "preempted"}]},
            {"id": "b", "fate": "stopped", "rungs": [{"rung": 0, "fate": "paused", "eval_loss": 2.5}]},
            {"id": "c"}],
            "generations": [{"generation": 0, "evaluated": [{"ids": ["a"], "objectives": [1.5, null]}]}, 7]}"#;
        let s: SearchSummary = serde_json::from_str(text).unwrap();
        let fates: Vec<TrialFate> = s.trials.iter().map(|t| t.fate).collect();
        assert_eq!(fates, [TrialFate::Unknown, TrialFate::Stopped, TrialFate::Unknown]);
        assert_eq!(s.trials[0].rungs[0].fate, Some(RungFate::Unknown));
        assert_eq!(s.trials[1].rungs[0].fate, Some(RungFate::Paused));
        assert_eq!(s.fate_counts(), [("stopped", 1), ("unknown", 2)]);
        // the record that is not an object is skipped
        let g = s.generation_records();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].evaluated[0].objectives, [Some(1.5), None]);
        assert_eq!(TrialFate::from("completed"), TrialFate::Completed);
        assert_eq!(TrialFate::from("nonsense"), TrialFate::Unknown);
        // and what the writer writes reads back the same
        let back: SearchSummary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
