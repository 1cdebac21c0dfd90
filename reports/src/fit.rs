//! Saturating power-law fits of loss against compute: `L(C) = E + A * C^(-alpha)`.
//!
//! `C` is training FLOPs, `L` a held-out loss (nats per token); both must be positive. `E` is the irreducible
//! loss the law saturates at, `A * C^(-alpha)` the reducible part (Kaplan et al. 2020; Hoffmann et al. 2022,
//! eq. 2, with the parameter count folded into compute).
//!
//! ## Objective
//! With points `(C_i, L_i)`, `i = 1..n`, we minimise the sum of squared errors of log loss
//!
//! ```text
//! f(θ) = Σ_i ( ln L̂(C_i; θ) − ln L_i )²
//! ```
//!
//! Log residuals are relative errors: a 1% miss costs the same at a small budget (high loss) as at a large one,
//! so the first few budgets do not dominate the fit. `PowerLawFit::rss` is this `f` at the optimum.
//!
//! ## Parameterisation (well-conditioned)
//! Let `x = ln C`, `x̄` the mean of the `x_i`, and `x̃ = x − x̄` (centred). The optimiser works on `θ = (u, b, alpha)`:
//!
//! ```text
//! E               = exp(u)                 (E > 0; E -> 0 as u -> -inf)
//! A * C^(-alpha)  = exp(b − alpha * x̃)     (so ln A = b + alpha * x̄)
//! ln L̂            = logaddexp(u, b − alpha * x̃)
//! ```
//!
//! Centring decorrelates `ln A` from `alpha` (with `x` around 23..37 for 1e10..1e16 FLOPs they are otherwise
//! almost collinear), and `logaddexp` never overflows however far a line search steps.
//!
//! ## Optimiser
//! argmin's L-BFGS (memory 7) with the More-Thuente line search and the analytic gradient, run from a small grid
//! of starts: for each `E0 = q * min(L)`, `q` in [`START_FRACTIONS`], `(b0, alpha0)` come from the least-squares
//! line through `(x̃_i, ln(L_i − E0))`. The start with the lowest final objective is kept.

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use serde::{Deserialize, Serialize};

/// Fewest points a fit accepts: the law has three free parameters.
pub const MIN_POINTS: usize = 3;

/// Starting values of `E` as fractions of the smallest observed loss (one L-BFGS run each).
pub const START_FRACTIONS: [f64; 5] = [0.05, 0.3, 0.6, 0.85, 0.97];

/// L-BFGS stops once the gradient norm of `f` falls below this.
const TOL_GRAD: f64 = 1e-10;
/// A run whose best point has a gradient norm below this counts as converged even if the line search, not the
/// gradient test, ended it (at an exact fit the line search cannot find a decrease any more).
const TOL_GRAD_ACCEPT: f64 = 1e-7;
const MAX_ITERS: u64 = 2000;

/// Why a power law could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Fewer than [`MIN_POINTS`] points.
    #[error("a power-law fit needs at least {need} points (E, A and alpha are free), got {got}")]
    TooFewPoints { got: usize, need: usize },
    /// A compute or loss value that is zero, negative, NaN or infinite.
    #[error("point {index} has C = {c}, L = {l}; both must be positive and finite")]
    NonPositive { index: usize, c: f64, l: f64 },
    /// Every start of the optimiser failed.
    #[error("the optimiser failed from every start: {0}")]
    Optimiser(String),
}

/// A fitted law `L(C) = e + a * C^(-alpha)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    /// Irreducible loss `E` (same unit as the losses, > 0).
    pub e: f64,
    /// Scale `A` of the reducible part (loss units x FLOPs^alpha).
    pub a: f64,
    /// Exponent `alpha` (positive when loss falls with compute).
    pub alpha: f64,
    /// Whether the best start reached a stationary point: L-BFGS met its gradient tolerance (1e-10), or the
    /// gradient norm at the returned point is below 1e-7.
    pub converged: bool,
    /// Sum of squared errors of `ln L` at the optimum (the objective in the module notes).
    pub rss: f64,
    /// Number of points fitted.
    pub n: usize,
}

impl PowerLawFit {
    /// The law's loss at compute `c` (FLOPs). Computed as `e + exp(ln a − alpha ln c)` so it does not overflow
    /// for large `c`.
    pub fn predict(&self, c: f64) -> f64 {
        self.e + (self.a.ln() - self.alpha * c.ln()).exp()
    }
}

/// Fits `L(C) = E + A * C^(-alpha)` to `points = [(C, L), ...]` (FLOPs, loss), see the module notes.
pub fn fit_power_law(points: &[(f64, f64)]) -> Result<PowerLawFit, FitError> {
    if points.len() < MIN_POINTS {
        return Err(FitError::TooFewPoints { got: points.len(), need: MIN_POINTS });
    }
    for (index, &(c, l)) in points.iter().enumerate() {
        let ok = c.is_finite() && l.is_finite() && c > 0.0 && l > 0.0;
        if !ok {
            return Err(FitError::NonPositive { index, c, l });
        }
    }
    let problem = LogLossProblem::new(points);
    let l_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);

    let mut best: Option<(Vec<f64>, f64, bool)> = None; // (θ, f(θ), converged)
    let mut last_err = String::new();
    for q in START_FRACTIONS {
        let start = problem.start(q * l_min);
        match run_lbfgs(problem.clone(), start) {
            Ok((theta, cost, converged)) if cost.is_finite() => {
                if best.as_ref().is_none_or(|b| cost < b.1) {
                    best = Some((theta, cost, converged));
                }
            }
            Ok((_, cost, _)) => last_err = format!("non-finite objective {cost}"),
            Err(e) => last_err = e.to_string(),
        }
    }
    let (theta, rss, converged) = best.ok_or(FitError::Optimiser(last_err))?;
    let (u, b, alpha) = (theta[0], theta[1], theta[2]);
    Ok(PowerLawFit { e: u.exp(), a: (b + alpha * problem.x_mean).exp(), alpha, converged, rss, n: points.len() })
}

/// One L-BFGS run from `start`; returns (best θ, its objective, converged).
fn run_lbfgs(problem: LogLossProblem, start: Vec<f64>) -> Result<(Vec<f64>, f64, bool), ArgminError> {
    let check = problem.clone();
    // The cost-change test is off (0): it stops on flat stretches far from the optimum; the gradient test, the
    // iteration cap or a failed line search end the run instead.
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7).with_tolerance_grad(TOL_GRAD)?.with_tolerance_cost(0.0)?;
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(start).max_iters(MAX_ITERS))
        .ctrlc(false)
        .timer(false)
        .run()?;
    let state = res.state();
    let theta = state.get_best_param().cloned().ok_or_else(|| ArgminError::msg("L-BFGS returned no parameters"))?;
    let cost = check.cost(&theta)?;
    let grad_norm = check.gradient(&theta)?.iter().map(|g| g * g).sum::<f64>().sqrt();
    let by_solver = matches!(state.get_termination_reason(), Some(TerminationReason::SolverConverged));
    let converged = by_solver || grad_norm < TOL_GRAD_ACCEPT;
    Ok((theta, cost, converged))
}

/// The objective `f(θ)` over centred log-compute; θ = [u, b, alpha].
#[derive(Clone, Debug)]
struct LogLossProblem {
    /// `x̃_i = ln C_i − x̄`, shape [n].
    x: Vec<f64>,
    /// `ln L_i`, shape [n].
    y: Vec<f64>,
    /// `x̄ = mean ln C_i`.
    x_mean: f64,
}

impl LogLossProblem {
    fn new(points: &[(f64, f64)]) -> Self {
        let n = points.len() as f64;
        let x_mean = points.iter().map(|p| p.0.ln()).sum::<f64>() / n;
        LogLossProblem {
            x: points.iter().map(|p| p.0.ln() - x_mean).collect(),
            y: points.iter().map(|p| p.1.ln()).collect(),
            x_mean,
        }
    }

    /// A start θ0 for `E0` (< min L): `(b0, alpha0)` from the least-squares line of `ln(L − E0)` on `x̃`.
    fn start(&self, e0: f64) -> Vec<f64> {
        let z: Vec<f64> = self.y.iter().map(|&y| (y.exp() - e0).ln()).collect();
        let n = z.len() as f64;
        let z_mean = z.iter().sum::<f64>() / n;
        let sxx: f64 = self.x.iter().map(|x| x * x).sum();
        let sxz: f64 = self.x.iter().zip(&z).map(|(x, z)| x * (z - z_mean)).sum();
        // x̃ is centred, so the intercept is mean z; with one distinct C the slope is undefined: guess 0.1.
        let alpha0 = if sxx > 1e-12 { -sxz / sxx } else { 0.1 };
        let alpha0 = if alpha0.is_finite() { alpha0 } else { 0.1 };
        vec![e0.ln(), z_mean, alpha0]
    }

    /// Per point: residual `r_i = ln L̂_i − ln L_i` and `s_i = E / L̂_i` (the saturated share of the prediction).
    fn residuals(&self, theta: &[f64]) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        let (u, b, alpha) = (theta[0], theta[1], theta[2]);
        self.x.iter().zip(&self.y).map(move |(&x, &y)| {
            let v = b - alpha * x; // ln of the reducible part
            (logaddexp(u, v) - y, sigmoid(u - v), x)
        })
    }
}

impl CostFunction for LogLossProblem {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, ArgminError> {
        finite(theta)?;
        finite(&[self.residuals(theta).map(|(r, _, _)| r * r).sum()]).map(|f| f[0])
    }
}

impl Gradient for LogLossProblem {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    /// `∂f/∂θ = 2 Σ r_i ∂ln L̂_i/∂θ`, with `∂ln L̂/∂u = s`, `∂ln L̂/∂b = 1 − s`, `∂ln L̂/∂alpha = −(1 − s) x̃`.
    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, ArgminError> {
        finite(theta)?;
        let mut g = vec![0.0; 3];
        for (r, s, x) in self.residuals(theta) {
            g[0] += 2.0 * r * s;
            g[1] += 2.0 * r * (1.0 - s);
            g[2] -= 2.0 * r * (1.0 - s) * x;
        }
        finite(&g)?;
        Ok(g)
    }
}

/// An error for non-finite values. More-Thuente extrapolates without bound and would loop forever on NaN
/// (its tests all compare false); an error instead ends that L-BFGS run, which keeps its best point.
fn finite(v: &[f64]) -> Result<&[f64], ArgminError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(ArgminError::msg(format!("non-finite value in {v:?}")))
    }
}

/// `ln(e^p + e^q)` without overflow.
fn logaddexp(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + (-(p - q).abs()).exp().ln_1p()
}

/// `1 / (1 + e^(-z))` without overflow.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points of the exact law, log-spaced over [10^lo, 10^hi] FLOPs.
    fn synthetic(e: f64, a: f64, alpha: f64, lo: f64, hi: f64, n: usize) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let c = 10f64.powf(lo + (hi - lo) * i as f64 / (n - 1) as f64);
                (c, e + a * c.powf(-alpha))
            })
            .collect()
    }

    fn assert_close(name: &str, got: f64, want: f64) {
        let rel = ((got - want) / want).abs();
        assert!(rel < 0.01, "{name}: got {got}, want {want} (relative error {rel:.2e})");
    }

    #[test]
    fn recovers_chinchilla_like_law() {
        let pts = synthetic(1.7, 400.0, 0.3, 10.0, 16.0, 13);
        let fit = fit_power_law(&pts).unwrap();
        assert_close("E", fit.e, 1.7);
        assert_close("A", fit.a, 400.0);
        assert_close("alpha", fit.alpha, 0.3);
        assert!(fit.converged, "{fit:?}");
        assert!(fit.rss < 1e-12, "{fit:?}");
        assert_eq!(fit.n, 13);
        assert_close("predict", fit.predict(1e13), 1.7 + 400.0 * 1e13f64.powf(-0.3));
    }

    #[test]
    fn recovers_small_exponent_law_at_large_compute() {
        let pts = synthetic(2.5, 50.0, 0.15, 14.0, 20.0, 7);
        let fit = fit_power_law(&pts).unwrap();
        assert_close("E", fit.e, 2.5);
        assert_close("A", fit.a, 50.0);
        assert_close("alpha", fit.alpha, 0.15);
        assert!(fit.converged, "{fit:?}");
    }

    #[test]
    fn recovers_law_from_three_points() {
        let pts = synthetic(0.8, 3.0e3, 0.45, 9.0, 13.0, 3);
        let fit = fit_power_law(&pts).unwrap();
        assert_close("E", fit.e, 0.8);
        assert_close("alpha", fit.alpha, 0.45);
    }

    #[test]
    fn noisy_points_give_a_close_fit() {
        // ±0.5% multiplicative noise from a fixed LCG. (This case once hung More-Thuente on NaN; see `finite`.)
        let mut s = 12345u64;
        let pts: Vec<(f64, f64)> = synthetic(1.7, 400.0, 0.3, 10.0, 16.0, 13)
            .into_iter()
            .map(|(c, l)| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                (c, l * (1.0 + 0.01 * u))
            })
            .collect();
        let fit = fit_power_law(&pts).unwrap();
        assert!((fit.e / 1.7 - 1.0).abs() < 0.02, "{fit:?}");
        assert!((fit.alpha / 0.3 - 1.0).abs() < 0.1, "{fit:?}");
        assert!(fit.rss > 0.0 && fit.rss < 1e-3, "{fit:?}");
    }

    #[test]
    fn too_few_points_says_how_many_are_needed() {
        let err = fit_power_law(&[(1e10, 3.0), (1e11, 2.5)]).unwrap_err();
        assert_eq!(err, FitError::TooFewPoints { got: 2, need: 3 });
        assert!(err.to_string().contains("at least 3 points"), "{err}");
    }

    #[test]
    fn rejects_non_positive_and_non_finite_inputs() {
        let bad_c = [(1e10, 3.0), (0.0, 2.5), (1e12, 2.0)];
        assert!(matches!(fit_power_law(&bad_c), Err(FitError::NonPositive { index: 1, .. })));
        let bad_l = [(1e10, 3.0), (1e11, 2.5), (1e12, -2.0)];
        assert!(matches!(fit_power_law(&bad_l), Err(FitError::NonPositive { index: 2, .. })));
        let nan = [(1e10, f64::NAN), (1e11, 2.5), (1e12, 2.0)];
        assert!(matches!(fit_power_law(&nan), Err(FitError::NonPositive { index: 0, .. })));
    }

    #[test]
    fn degenerate_data_does_not_panic() {
        // All losses equal, all budgets equal, and loss rising with compute: any finite answer will do.
        for pts in [
            vec![(1e10, 2.0), (1e11, 2.0), (1e12, 2.0)],
            vec![(1e12, 3.0), (1e12, 2.0), (1e12, 2.5)],
            vec![(1e10, 2.0), (1e11, 2.5), (1e12, 3.0)],
        ] {
            let fit = fit_power_law(&pts).unwrap();
            assert!(fit.rss.is_finite() && fit.e.is_finite(), "{pts:?} -> {fit:?}");
            assert!(fit.predict(1e11).is_finite(), "{fit:?}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let pts = synthetic(1.7, 400.0, 0.3, 10.0, 16.0, 6);
        let p = LogLossProblem::new(&pts);
        let theta = vec![0.2, -1.0, 0.25];
        let g = p.gradient(&theta).unwrap();
        for k in 0..3 {
            let h = 1e-6;
            let (mut up, mut dn) = (theta.clone(), theta.clone());
            up[k] += h;
            dn[k] -= h;
            let fd = (p.cost(&up).unwrap() - p.cost(&dn).unwrap()) / (2.0 * h);
            assert!((fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()), "k={k}: {fd} vs {}", g[k]);
        }
    }
}
