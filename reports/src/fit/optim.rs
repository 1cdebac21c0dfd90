//! The one L-BFGS driver the iterative fits share (argmin's L-BFGS with the More-Thuente line search), and the
//! numerically safe helpers their objectives use.

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// How one L-BFGS run is set up and judged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LbfgsSettings {
    /// History length of the inverse-Hessian approximation.
    pub memory: usize,
    /// The solver stops once the gradient norm falls below this.
    pub tol_grad: f64,
    /// A run whose best point has a gradient norm below this counts as converged even if the line search, not
    /// the gradient test, ended it (near an exact optimum the line search cannot find a decrease any more).
    pub accept_grad: f64,
    pub max_iters: u64,
}

/// The outcome of one run: the best parameters, their objective, whether that is a stationary point.
#[derive(Debug, Clone)]
pub(crate) struct RunResult {
    pub theta: Vec<f64>,
    pub cost: f64,
    pub converged: bool,
}

/// One L-BFGS run of `problem` from `start`.
pub(crate) fn run_lbfgs<P>(problem: P, start: Vec<f64>, s: LbfgsSettings) -> Result<RunResult, ArgminError>
where
    P: CostFunction<Param = Vec<f64>, Output = f64> + Gradient<Param = Vec<f64>, Gradient = Vec<f64>> + Clone,
{
    let check = problem.clone();
    // The cost-change test is off (0): it stops on flat stretches far from the optimum; the gradient test, the
    // iteration cap or a failed line search end the run instead.
    let solver =
        LBFGS::new(MoreThuenteLineSearch::new(), s.memory).with_tolerance_grad(s.tol_grad)?.with_tolerance_cost(0.0)?;
    let res = Executor::new(problem, solver)
        .configure(|st| st.param(start).max_iters(s.max_iters))
        .ctrlc(false)
        .timer(false)
        .run()?;
    let state = res.state();
    let theta = state.get_best_param().cloned().ok_or_else(|| ArgminError::msg("L-BFGS returned no parameters"))?;
    let cost = check.cost(&theta)?;
    let grad_norm = check.gradient(&theta)?.iter().map(|g| g * g).sum::<f64>().sqrt();
    let by_solver = matches!(state.get_termination_reason(), Some(TerminationReason::SolverConverged));
    Ok(RunResult { theta, cost, converged: by_solver || grad_norm < s.accept_grad })
}

/// Runs L-BFGS from every start and keeps the run with the lowest finite objective. Starts are split over the
/// machine's cores when `parallel` (the result does not depend on the split: ties keep the earliest start).
/// Returns the best run, or the last error when every start failed.
pub(crate) fn best_of<P>(
    problem: &P,
    starts: &[Vec<f64>],
    s: LbfgsSettings,
    parallel: bool,
) -> Result<RunResult, String>
where
    P: CostFunction<Param = Vec<f64>, Output = f64> + Gradient<Param = Vec<f64>, Gradient = Vec<f64>> + Clone + Sync,
{
    let run_chunk = |chunk: &[Vec<f64>]| -> (Option<RunResult>, String) {
        let mut best: Option<RunResult> = None;
        let mut last_err = String::new();
        for start in chunk {
            match run_lbfgs(problem.clone(), start.clone(), s) {
                Ok(r) if r.cost.is_finite() => {
                    if best.as_ref().is_none_or(|b| r.cost < b.cost) {
                        best = Some(r);
                    }
                }
                Ok(r) => last_err = format!("non-finite objective {}", r.cost),
                Err(e) => last_err = e.to_string(),
            }
        }
        (best, last_err)
    };
    let threads = if parallel { workers(starts.len()) } else { 1 };
    let parts: Vec<(Option<RunResult>, String)> = if threads <= 1 {
        vec![run_chunk(starts)]
    } else {
        let size = starts.len().div_ceil(threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = starts.chunks(size).map(|c| sc.spawn(move || run_chunk(c))).collect();
            handles.into_iter().map(|h| h.join().expect("an L-BFGS worker panicked")).collect()
        })
    };
    let mut best: Option<RunResult> = None;
    let mut last_err = String::from("no starts");
    for (b, e) in parts {
        if !e.is_empty() {
            last_err = e;
        }
        if let Some(r) = b {
            if best.as_ref().is_none_or(|x| r.cost < x.cost) {
                best = Some(r);
            }
        }
    }
    best.ok_or(last_err)
}

/// Worker threads for `jobs` independent jobs: the available cores, at most one per job.
pub(crate) fn workers(jobs: usize) -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(jobs).max(1)
}

/// An error for non-finite values. More-Thuente extrapolates without bound and would loop forever on NaN
/// (its tests all compare false); an error instead ends that L-BFGS run, which keeps its best point.
pub(crate) fn finite(v: &[f64]) -> Result<&[f64], ArgminError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(ArgminError::msg(format!("non-finite value in {v:?}")))
    }
}

/// `ln(e^p + e^q)` without overflow.
pub(crate) fn logaddexp(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + (-(p - q).abs()).exp().ln_1p()
}

/// `1 / (1 + e^(-z))` without overflow.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Least-squares line `y = c + m x`; returns `(c, m)`, or `None` when the `x` are all equal.
pub(crate) fn line_fit(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len() as f64;
    let (xm, ym) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|x| (x - xm) * (x - xm)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(x, y)| (x - xm) * (y - ym)).sum();
    if !(sxx > 1e-300) {
        return None;
    }
    let m = sxy / sxx;
    Some((ym - m * xm, m))
}
