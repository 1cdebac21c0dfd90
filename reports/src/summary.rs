//! Per-task views of the results: which architectures ran, each one's compute-optimal envelope, its fitted laws.
//!
//! The envelope of an architecture on a task is, for every FLOP budget it was run at, the completed trial with
//! the lowest final eval loss (the best size/learning rate for that compute). Its point is
//! `(flops_spent, final_eval_loss)`: FLOPs actually spent (a whole number of steps, at most the budget), so the
//! loss and the compute on the x axis belong to the same run.
//!
//! Per arch and task the report fits (each with [`REPORT_BOOTSTRAP`] bootstrap resamples, seed [`REPORT_SEED`]):
//! - the power law `L(C) = E + A C^(-alpha)` to the envelope;
//! - Chinchilla approach 2 to every completed trial, as `(budget_flops, params, final_eval_loss)`: `N` is
//!   `params` (all trainable parameters), the budget groups the isoFLOP curves, and `D* = C / (6 N*)`.
//!
//! and extrapolates the power law to 10x and 100x the task's largest budget ([`EXTRAPOLATION_FACTORS`]).

use crate::fit::isoflop::MIN_SIZES;
use crate::fit::{
    fit_isoflop_bootstrap, fit_power_law_bootstrap, Estimate, FitError, IsoflopFit, IsoflopPoint, PowerLawFit,
    Resamples,
};
use crate::result::{Status, TrialResult};

/// Bootstrap resamples per fit in the report.
pub const REPORT_BOOTSTRAP: usize = 200;
/// Seed of every bootstrap in the report.
pub const REPORT_SEED: u64 = 0;
/// The power law is extrapolated to these multiples of the task's largest budget.
pub const EXTRAPOLATION_FACTORS: [f64; 2] = [10.0, 100.0];

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
    /// The law fitted to the envelope (`TooFewPoints` when it has fewer than 3 budgets), with intervals.
    pub fit: Result<PowerLawFit, FitError>,
    /// The power law's bootstrap resamples (for the band around the fitted curve).
    pub fit_resamples: Option<Resamples<PowerLawFit>>,
    /// Completed trials with a final loss as isoFLOP points `(budget_flops, params, loss)`.
    pub iso_points: Vec<IsoflopPoint>,
    /// Chinchilla approach 2 over `iso_points`, with intervals.
    pub isoflop: Result<IsoflopFit, FitError>,
    /// The power law's loss at each of [`EXTRAPOLATION_FACTORS`] x the task's largest budget: `(FLOPs, loss)`.
    pub extrapolated: Vec<(f64, Estimate)>,
}

impl ArchSummary {
    /// Whether some budget has enough distinct sizes for an isoFLOP parabola.
    pub fn has_isoflop_curve(&self) -> bool {
        crate::fit::isoflop::budget_groups(&self.iso_points).iter().any(|g| {
            let mut sizes: Vec<f64> = g.iter().map(|&i| self.iso_points[i].params).collect();
            sizes.sort_by(f64::total_cmp);
            sizes.dedup();
            sizes.len() >= MIN_SIZES
        })
    }

    /// The envelope's trial at the largest budget (the arch's best run at its most compute).
    pub fn best_trial_id(&self) -> Option<&str> {
        self.envelope.last().map(|p| p.trial_id.as_str())
    }
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

/// Groups `results` by task variant ([`TrialResult::task_label`], sorted) and fits every arch's envelope:
/// MQAR at two sequence lengths is two tasks here, since their losses are not comparable.
pub fn summarise(results: &[TrialResult]) -> Vec<TaskSummary<'_>> {
    let all_arches = sorted_unique(results.iter().map(|r| r.arch.as_str()));
    let labels: Vec<String> = results.iter().map(TrialResult::task_label).collect();
    let tasks = sorted_unique(labels.iter().map(String::as_str));
    tasks
        .into_iter()
        .map(|task| {
            let trials: Vec<&TrialResult> =
                results.iter().zip(&labels).filter(|(_, l)| l.as_str() == task).map(|(r, _)| r).collect();
            let max_budget = trials.iter().map(|r| r.budget_flops).filter(|b| b.is_finite()).fold(0.0, f64::max);
            let arches = sorted_unique(trials.iter().map(|r| r.arch.as_str()))
                .into_iter()
                .map(|arch| {
                    let of_arch: Vec<&TrialResult> = trials.iter().copied().filter(|r| r.arch == arch).collect();
                    let colour = all_arches.iter().position(|a| *a == arch).unwrap_or(0);
                    arch_summary(arch, colour, &of_arch, max_budget)
                })
                .collect();
            TaskSummary { task: task.to_string(), trials, arches }
        })
        .collect()
}

/// Fits and extrapolations of one arch on one task.
fn arch_summary(arch: &str, colour: usize, trials: &[&TrialResult], max_budget: f64) -> ArchSummary {
    let envelope = envelope(trials);
    let pts: Vec<(f64, f64)> = envelope.iter().map(|p| (p.flops, p.loss)).collect();
    let (fit, fit_resamples) = match fit_power_law_bootstrap(&pts, REPORT_BOOTSTRAP, REPORT_SEED) {
        Ok((f, r)) => (Ok(f), Some(r)),
        Err(e) => (Err(e), None),
    };
    let extrapolated = match (&fit, &fit_resamples) {
        (Ok(f), Some(r)) if max_budget > 0.0 => EXTRAPOLATION_FACTORS
            .iter()
            .map(|k| {
                let c = k * max_budget;
                (c, Estimate { value: f.predict(c), ci: r.interval(|g| g.predict(c)) })
            })
            .collect(),
        _ => Vec::new(),
    };
    let iso_points: Vec<IsoflopPoint> = completed_losses(trials)
        .filter(|(r, _)| r.params > 0)
        .map(|(r, loss)| IsoflopPoint { flops: r.budget_flops, params: r.params as f64, loss })
        .collect();
    let isoflop = fit_isoflop_bootstrap(&iso_points, REPORT_BOOTSTRAP, REPORT_SEED).map(|(f, _)| f);
    ArchSummary { arch: arch.to_string(), colour, envelope, fit, fit_resamples, iso_points, isoflop, extrapolated }
}

/// Completed trials with a positive budget and a finite, positive final eval loss.
fn completed_losses<'a>(trials: &'a [&'a TrialResult]) -> impl Iterator<Item = (&'a TrialResult, f64)> + 'a {
    trials
        .iter()
        .filter(|r| r.status == Status::Completed && r.budget_flops > 0.0)
        .filter_map(|r| r.final_eval_loss.filter(|l| l.is_finite() && *l > 0.0).map(|l| (*r, l)))
}

/// The compute-optimal envelope of `trials` (meant to be one arch on one task): per budget, the completed trial
/// with the lowest finite, positive final eval loss. Sorted by budget.
pub fn envelope(trials: &[&TrialResult]) -> Vec<EnvelopePoint> {
    let mut done: Vec<(&TrialResult, f64)> = completed_losses(trials).collect();
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
