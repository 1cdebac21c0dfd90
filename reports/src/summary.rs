//! Per-task views of the results: which architectures ran, each one's compute-optimal envelope, its fitted law.
//!
//! The envelope of an architecture on a task is, for every FLOP budget it was run at, the completed trial with
//! the lowest final eval loss (the best size/learning rate for that compute). Its point is
//! `(flops_spent, final_eval_loss)`: FLOPs actually spent (a whole number of steps, at most the budget), so the
//! loss and the compute on the x axis belong to the same run.

use crate::fit::{fit_power_law, FitError, PowerLawFit};
use crate::result::{Status, TrialResult};

/// Budgets closer than this (relative) count as one budget.
const SAME_BUDGET_REL: f64 = 1e-6;

/// One architecture on one task.
#[derive(Debug, Clone)]
pub struct ArchSummary {
    pub arch: String,
    /// Index of the arch in the report-wide sorted arch list, so an arch has one colour in every plot.
    pub colour: usize,
    /// Best completed trial per budget, by increasing budget.
    pub envelope: Vec<EnvelopePoint>,
    /// The law fitted to the envelope (`TooFewPoints` when it has fewer than 3 budgets).
    pub fit: Result<PowerLawFit, FitError>,
}

/// One point of an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopePoint {
    /// The planned budget (FLOPs) that groups the trials.
    pub budget_flops: f64,
    /// FLOPs the best trial actually spent (the point's x).
    pub flops: f64,
    /// Its final eval loss (the point's y).
    pub loss: f64,
    /// Its trial id.
    pub trial_id: String,
}

/// Everything about one task.
#[derive(Debug, Clone)]
pub struct TaskSummary<'a> {
    pub task: String,
    /// All trials of the task, in the order they were given (any status).
    pub trials: Vec<&'a TrialResult>,
    /// One entry per arch that has any trial on this task, sorted by name.
    pub arches: Vec<ArchSummary>,
}

impl TaskSummary<'_> {
    /// The arch's summary, if it ran on this task.
    pub fn arch(&self, arch: &str) -> Option<&ArchSummary> {
        self.arches.iter().find(|a| a.arch == arch)
    }
}

/// Groups `results` by task (sorted by name) and fits every arch's envelope.
pub fn summarise(results: &[TrialResult]) -> Vec<TaskSummary<'_>> {
    let all_arches = sorted_unique(results.iter().map(|r| r.arch.as_str()));
    let tasks = sorted_unique(results.iter().map(|r| r.task.as_str()));
    tasks
        .into_iter()
        .map(|task| {
            let trials: Vec<&TrialResult> = results.iter().filter(|r| r.task == task).collect();
            let arches = sorted_unique(trials.iter().map(|r| r.arch.as_str()))
                .into_iter()
                .map(|arch| {
                    let of_arch: Vec<&TrialResult> = trials.iter().copied().filter(|r| r.arch == arch).collect();
                    let envelope = envelope(&of_arch);
                    let pts: Vec<(f64, f64)> = envelope.iter().map(|p| (p.flops, p.loss)).collect();
                    ArchSummary {
                        colour: all_arches.iter().position(|a| *a == arch).unwrap_or(0),
                        arch: arch.to_string(),
                        fit: fit_power_law(&pts),
                        envelope,
                    }
                })
                .collect();
            TaskSummary { task: task.to_string(), trials, arches }
        })
        .collect()
}

/// The compute-optimal envelope of `trials` (meant to be one arch on one task): per budget, the completed trial
/// with the lowest finite, positive final eval loss. Sorted by budget.
pub fn envelope(trials: &[&TrialResult]) -> Vec<EnvelopePoint> {
    let mut done: Vec<(&TrialResult, f64)> = trials
        .iter()
        .filter(|r| r.status == Status::Completed && r.budget_flops > 0.0)
        .filter_map(|r| r.final_eval_loss.filter(|l| l.is_finite() && *l > 0.0).map(|l| (*r, l)))
        .collect();
    done.sort_by(|a, b| a.0.budget_flops.total_cmp(&b.0.budget_flops));
    let mut out: Vec<EnvelopePoint> = Vec::new();
    for (r, loss) in done {
        let flops = if r.flops_spent.is_finite() && r.flops_spent > 0.0 { r.flops_spent } else { r.budget_flops };
        let point = EnvelopePoint { budget_flops: r.budget_flops, flops, loss, trial_id: r.id.clone() };
        match out.last_mut() {
            Some(last) if same_budget(last.budget_flops, r.budget_flops) => {
                if loss < last.loss {
                    *last = EnvelopePoint { budget_flops: last.budget_flops, ..point };
                }
            }
            _ => out.push(point),
        }
    }
    out
}

fn same_budget(a: f64, b: f64) -> bool {
    (a - b).abs() <= SAME_BUDGET_REL * a.abs().max(b.abs())
}

fn sorted_unique<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(id: &str, arch: &str, budget: f64, loss: Option<f64>, status: Status) -> TrialResult {
        let mut t = crate::test_support::minimal(id, "t", arch);
        t.budget_flops = budget;
        t.flops_spent = budget * 0.99;
        t.final_eval_loss = loss;
        t.status = status;
        t
    }

    #[test]
    fn envelope_keeps_best_completed_per_budget() {
        let ts = [
            trial("a", "x", 1e12, Some(3.0), Status::Completed),
            trial("b", "x", 1e12, Some(2.5), Status::Completed),
            trial("c", "x", 1e13, Some(1.0), Status::Diverged),
            trial("d", "x", 1e13, Some(2.2), Status::Completed),
            trial("e", "x", 1e14, None, Status::Failed),
        ];
        let refs: Vec<&TrialResult> = ts.iter().collect();
        let env = envelope(&refs);
        assert_eq!(env.len(), 2);
        assert_eq!((env[0].trial_id.as_str(), env[0].loss), ("b", 2.5));
        assert_eq!((env[1].trial_id.as_str(), env[1].loss), ("d", 2.2));
        assert_eq!(env[1].flops, 0.99e13);
    }

    #[test]
    fn summarise_groups_tasks_and_gives_stable_colours() {
        let mut ts = vec![
            trial("a", "zeta", 1e12, Some(3.0), Status::Completed),
            trial("b", "alpha", 1e12, Some(2.5), Status::Completed),
        ];
        ts[1].task = "other".into();
        let s = summarise(&ts);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].task, "other");
        assert_eq!(s[0].arches[0].colour, 0);
        assert_eq!(s[1].arch("zeta").unwrap().colour, 1);
        assert!(matches!(s[1].arches[0].fit, Err(FitError::TooFewPoints { got: 1, need: 3, .. })));
    }
}
