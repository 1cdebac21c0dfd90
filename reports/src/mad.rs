//! MAD results (`DIR/mad.json`): the MAD protocol's scores as `workbench mad` writes them and the report reads them.
//!
//! The protocol (Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`): every candidate is trained on every task
//! setting (each task's baseline and its one-at-a-time changes) once per cell of a learning-rate x weight-decay
//! grid. Then, per candidate ([`MadResults::aggregate`]):
//!
//! ```text
//! setting score  = max over grid cells of the cell's test accuracy          (completed trials only)
//! task score     = mean over the task's settings of their setting scores    (settings with a score)
//! MAD score      = mean over the tasks of their task scores                 (tasks with a score)
//! ```
//! The accuracy is the metric named in [`MadProtocol::metric`] of the trial's final evaluation on the test set
//! (`macro_accuracy` from `workbench mad`: per-class accuracy over the labelled positions, averaged over the
//! classes, as the reference's `torchmetrics` `MulticlassAccuracy` computes it). A grid cell that diverged or
//! failed has no accuracy and cannot be the best (the reference drops such runs too). A setting with no scored
//! cell, or a task with no scored setting, is left out of the mean above it and counted in `missing`, which the
//! report shows next to the score; a run of fewer tasks than six gives a MAD score over those tasks only.
//!
//! The file is plain data: each cell names its trial, so [`MadResults::update_from`] refreshes every number from
//! the trial files, and `workbench report DIR` shows a MAD run's progress while it is still running.

use crate::result::{Status, TrialResult};
use crate::ReportError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file name under the sweep directory.
pub const MAD_FILE: &str = "mad.json";

/// `DIR/mad.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadResults {
    /// The space's name.
    pub name: String,
    /// How the protocol was run.
    pub protocol: MadProtocol,
    /// One entry per candidate and size, in the space's order.
    pub candidates: Vec<MadCandidate>,
}

/// The protocol as run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadProtocol {
    /// Passes over each setting's training set (published: 200).
    pub epochs: u64,
    /// Only each task's baseline setting (published: the baseline and every one-at-a-time change).
    pub baseline_only: bool,
    /// Every setting's training set was scaled by this (published: 1).
    pub train_fraction: f64,
    /// Test examples per setting (published: 1,280).
    pub test_examples: u64,
    /// The task kinds run (published: all six).
    pub tasks: Vec<String>,
    pub learning_rates: Vec<f64>,
    pub weight_decays: Vec<f64>,
    pub batch_size: u64,
    pub seed: u64,
    /// The trial metric scored (a key of the trials' `final_metrics`).
    pub metric: String,
    /// How this run differs from the published protocol, one sentence each (empty: as published).
    #[serde(default)]
    pub deviations: Vec<String>,
}

/// One candidate architecture at one size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadCandidate {
    /// The candidate's name in the space (the `arch` of its trials, shared with its language-modelling trials).
    pub arch: String,
    /// The name with its size, e.g. `transformer d128 x4`.
    pub label: String,
    pub d_model: u64,
    pub depth: u64,
    pub tasks: Vec<MadTaskScore>,
    /// The MAD score: mean of the task scores.
    pub score: Option<f64>,
    /// Tasks without a score.
    #[serde(default)]
    pub missing: usize,
}

/// One task of one candidate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadTaskScore {
    /// The task kind, e.g. `mad_in_context_recall`.
    pub task: String,
    pub settings: Vec<MadSettingScore>,
    /// Mean of the settings' best accuracies.
    pub score: Option<f64>,
    /// Settings without a score.
    #[serde(default)]
    pub missing: usize,
}

/// One task setting of one candidate: its grid and the best cell.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadSettingScore {
    /// `baseline` or the changed field, e.g. `seq_len=512`.
    pub setting: String,
    /// Every (learning rate, weight decay) cell.
    pub cells: Vec<MadCell>,
    /// The best cell (highest accuracy; the first in grid order on a tie).
    pub best: Option<MadBest>,
}

/// One trial of the grid.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadCell {
    pub lr: f64,
    pub weight_decay: f64,
    /// The trial's id (its folder under `trials/`).
    pub trial_id: String,
    /// None until the trial has written its result.
    pub status: Option<Status>,
    /// The protocol's metric at the end of training (completed trials only).
    pub accuracy: Option<f64>,
    /// The per-example accuracy over labelled positions, for comparison.
    pub example_accuracy: Option<f64>,
    /// Final test loss.
    pub loss: Option<f64>,
}

/// The winning cell of a setting.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadBest {
    pub accuracy: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub trial_id: String,
}

/// Mean of the values present, and how many were absent.
fn mean_present(values: impl Iterator<Item = Option<f64>>) -> (Option<f64>, usize) {
    let (mut sum, mut n, mut missing) = (0.0, 0usize, 0usize);
    for v in values {
        match v {
            Some(v) => (sum, n) = (sum + v, n + 1),
            None => missing += 1,
        }
    }
    ((n > 0).then(|| sum / n as f64), missing)
}

impl MadSettingScore {
    /// The best completed cell with a finite accuracy.
    fn pick_best(&self) -> Option<MadBest> {
        let mut best: Option<&MadCell> = None;
        for c in &self.cells {
            let Some(a) = c.accuracy.filter(|a| a.is_finite()) else { continue };
            if c.status != Some(Status::Completed) {
                continue;
            }
            if best.and_then(|b| b.accuracy).is_none_or(|b| a > b) {
                best = Some(c);
            }
        }
        best.map(|c| MadBest {
            accuracy: c.accuracy.unwrap_or(f64::NAN),
            lr: c.lr,
            weight_decay: c.weight_decay,
            trial_id: c.trial_id.clone(),
        })
    }
}

impl MadResults {
    /// Recomputes every best cell, task score and MAD score from the cells (see the module docs).
    pub fn aggregate(&mut self) {
        for cand in &mut self.candidates {
            for task in &mut cand.tasks {
                for s in &mut task.settings {
                    s.best = s.pick_best();
                }
                (task.score, task.missing) =
                    mean_present(task.settings.iter().map(|s| s.best.as_ref().map(|b| b.accuracy)));
            }
            (cand.score, cand.missing) = mean_present(cand.tasks.iter().map(|t| t.score));
        }
    }

    /// Fills every cell from the trial result with its id (cells without one are reset to not finished), then
    /// [`aggregate`](Self::aggregate)s.
    pub fn update_from(&mut self, results: &[TrialResult]) {
        let by_id: std::collections::HashMap<&str, &TrialResult> = results.iter().map(|r| (r.id.as_str(), r)).collect();
        let metric = self.protocol.metric.clone();
        for cell in self.cells_mut() {
            let r = by_id.get(cell.trial_id.as_str());
            cell.status = r.map(|r| r.status);
            let done = r.filter(|r| r.status == Status::Completed);
            cell.accuracy = done.and_then(|r| r.final_metrics.get(&metric).copied());
            cell.example_accuracy = done.and_then(|r| r.final_metrics.get("accuracy").copied());
            cell.loss = done.and_then(|r| r.final_eval_loss);
        }
        self.aggregate();
    }

    /// Every grid cell.
    pub fn cells_mut(&mut self) -> impl Iterator<Item = &mut MadCell> {
        self.candidates
            .iter_mut()
            .flat_map(|c| c.tasks.iter_mut().flat_map(|t| t.settings.iter_mut().flat_map(|s| s.cells.iter_mut())))
    }

    /// The task kinds in the order of the first candidate (every candidate runs the same tasks).
    pub fn task_names(&self) -> Vec<&str> {
        self.candidates.first().map(|c| c.tasks.iter().map(|t| t.task.as_str()).collect()).unwrap_or_default()
    }

    /// Reads `dir/mad.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<MadResults>, ReportError> {
        let path = dir.join(MAD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ReportError::Io { path, error }),
        };
        serde_json::from_str(&text).map(Some).map_err(|error| ReportError::Parse { path, error })
    }
}

/// Tasks whose trials are language modelling (their eval loss is the LM loss MAD scores are checked against).
pub const LM_TASKS: [&str; 3] = ["bytes", "tokens", "text"];

/// Spearman's rank correlation of paired values (average ranks for ties); `None` below 3 pairs or when either
/// side is constant.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let ranks = |v: Vec<f64>| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    };
    let (x, y) = (ranks(pairs.iter().map(|p| p.0).collect()), ranks(pairs.iter().map(|p| p.1).collect()));
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let (vx, vy): (f64, f64) = (x.iter().map(|a| (a - mx).powi(2)).sum(), y.iter().map(|b| (b - my).powi(2)).sum());
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

#[cfg(test)]
mod tests;
