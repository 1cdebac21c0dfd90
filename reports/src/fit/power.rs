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
//!
//! ## Bootstrap
//! [`fit_power_law_bootstrap`] refits on resamples of the points drawn with replacement, from the same five
//! starts (the fit is cheap), and also returns the resampled fits: the report draws the law's band as the
//! pointwise percentile interval of their predictions.

use super::bootstrap::{resample_fits, with_replacement, Resamples};
use super::optim::{best_of, finite, logaddexp, sigmoid, LbfgsSettings};
use super::{check_positive, BootstrapInfo, Estimate, FitError, Fitted, Law};
use argmin::core::{CostFunction, Error as ArgminError, Gradient};
use serde::{Deserialize, Serialize};

/// Fewest points a fit accepts: the law has three free parameters.
pub const MIN_POINTS: usize = 3;

/// Starting values of `E` as fractions of the smallest observed loss (one L-BFGS run each).
pub const START_FRACTIONS: [f64; 5] = [0.05, 0.3, 0.6, 0.85, 0.97];

/// L-BFGS settings: stop at gradient norm 1e-10; accept 1e-7 when the line search ended the run.
const SETTINGS: LbfgsSettings = LbfgsSettings { memory: 7, tol_grad: 1e-10, accept_grad: 1e-7, max_iters: 2000 };

/// What a bootstrap of this law records about its starts (the same starts as the point estimate).
pub const BOOTSTRAP_STARTS: &str = "the same five starts as the point estimate (E0 = 0.05..0.97 x min loss)";

/// A fitted law `L(C) = E + A * C^(-alpha)`. JSON keys: `E`, `A`, `alpha` (each an [`Estimate`]), `converged`,
/// `rss`, `n_points`, and `bootstrap` when bootstrapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    /// Irreducible loss `E` (same unit as the losses, > 0).
    #[serde(rename = "E")]
    pub e: Estimate,
    /// Scale `A` of the reducible part (loss units x FLOPs^alpha).
    #[serde(rename = "A")]
    pub a: Estimate,
    /// Exponent `alpha` (positive when loss falls with compute).
    pub alpha: Estimate,
    /// Whether the best start reached a stationary point: L-BFGS met its gradient tolerance (1e-10), or the
    /// gradient norm at the returned point is below 1e-7. False is a warning: the numbers are not an optimum.
    pub converged: bool,
    /// Sum of squared errors of `ln L` at the optimum (the objective in the module notes).
    pub rss: f64,
    /// Number of points fitted.
    pub n_points: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapInfo>,
}

impl PowerLawFit {
    /// The law's loss at compute `c` (FLOPs) with the point estimates. Computed as `E + exp(ln A − alpha ln c)`
    /// so it does not overflow for large `c`.
    pub fn predict(&self, c: f64) -> f64 {
        self.e.value + (self.a.value.ln() - self.alpha.value * c.ln()).exp()
    }
}

impl Fitted for PowerLawFit {
    fn estimates(&self) -> Vec<(String, Estimate)> {
        vec![("E".into(), self.e), ("A".into(), self.a), ("alpha".into(), self.alpha)]
    }
    fn estimates_mut(&mut self) -> Vec<&mut Estimate> {
        vec![&mut self.e, &mut self.a, &mut self.alpha]
    }
    fn converged(&self) -> bool {
        self.converged
    }
    fn set_bootstrap(&mut self, info: BootstrapInfo) {
        self.bootstrap = Some(info);
    }
}

/// Fits `L(C) = E + A * C^(-alpha)` to `points = [(C, L), ...]` (FLOPs, loss), see the module notes.
pub fn fit_power_law(points: &[(f64, f64)]) -> Result<PowerLawFit, FitError> {
    if points.len() < MIN_POINTS {
        let why = "E, A and alpha are free";
        return Err(FitError::TooFewPoints { law: Law::Power, got: points.len(), need: MIN_POINTS, why });
    }
    check_positive(points.iter().map(|p| p.0), "compute C")?;
    check_positive(points.iter().map(|p| p.1), "loss L")?;
    let problem = LogLossProblem::new(points);
    let l_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let starts: Vec<Vec<f64>> = START_FRACTIONS.iter().map(|q| problem.start(q * l_min)).collect();
    let best = best_of(&problem, &starts, SETTINGS, false).map_err(FitError::Optimiser)?;
    let (u, b, alpha) = (best.theta[0], best.theta[1], best.theta[2]);
    Ok(PowerLawFit {
        e: u.exp().into(),
        a: (b + alpha * problem.x_mean).exp().into(),
        alpha: alpha.into(),
        converged: best.converged,
        rss: best.cost,
        n_points: points.len(),
        bootstrap: None,
    })
}

/// [`fit_power_law`] with percentile intervals from `n_resamples` resamples of the points (seeded), which
/// are also returned (for bands of derived quantities, e.g. the predicted loss at a budget).
pub fn fit_power_law_bootstrap(
    points: &[(f64, f64)],
    n_resamples: usize,
    seed: u64,
) -> Result<(PowerLawFit, Resamples<PowerLawFit>), FitError> {
    let mut fit = fit_power_law(points)?;
    let boot = resample_fits(n_resamples, seed, |rng| {
        let mut idx = with_replacement(points.len(), rng);
        let pts: Vec<(f64, f64)> = idx.iter().map(|&i| points[i]).collect();
        idx.sort_unstable();
        idx.dedup();
        if idx.len() < MIN_POINTS {
            // Fewer distinct points than parameters: the law is not identified by this resample.
            let why = "distinct points in a resample";
            return Err(FitError::TooFewPoints { law: Law::Power, got: idx.len(), need: MIN_POINTS, why });
        }
        fit_power_law(&pts)
    });
    boot.attach_to(&mut fit, "points with replacement", BOOTSTRAP_STARTS);
    Ok((fit, boot))
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
        assert_close("E", fit.e.value, 1.7);
        assert_close("A", fit.a.value, 400.0);
        assert_close("alpha", fit.alpha.value, 0.3);
        assert!(fit.converged, "{fit:?}");
        assert!(fit.rss < 1e-12, "{fit:?}");
        assert_eq!(fit.n_points, 13);
        assert_close("predict", fit.predict(1e13), 1.7 + 400.0 * 1e13f64.powf(-0.3));
    }

    #[test]
    fn recovers_small_exponent_law_at_large_compute() {
        let pts = synthetic(2.5, 50.0, 0.15, 14.0, 20.0, 7);
        let fit = fit_power_law(&pts).unwrap();
        assert_close("E", fit.e.value, 2.5);
        assert_close("A", fit.a.value, 50.0);
        assert_close("alpha", fit.alpha.value, 0.15);
        assert!(fit.converged, "{fit:?}");
    }

    #[test]
    fn recovers_law_from_three_points() {
        let pts = synthetic(0.8, 3.0e3, 0.45, 9.0, 13.0, 3);
        let fit = fit_power_law(&pts).unwrap();
        assert_close("E", fit.e.value, 0.8);
        assert_close("alpha", fit.alpha.value, 0.45);
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
        assert!((fit.e.value / 1.7 - 1.0).abs() < 0.02, "{fit:?}");
        assert!((fit.alpha.value / 0.3 - 1.0).abs() < 0.1, "{fit:?}");
        assert!(fit.rss > 0.0 && fit.rss < 1e-3, "{fit:?}");
    }

    #[test]
    fn too_few_points_says_how_many_are_needed() {
        let err = fit_power_law(&[(1e10, 3.0), (1e11, 2.5)]).unwrap_err();
        assert!(matches!(err, FitError::TooFewPoints { law: Law::Power, got: 2, need: 3, .. }), "{err:?}");
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
            assert!(fit.rss.is_finite() && fit.e.value.is_finite(), "{pts:?} -> {fit:?}");
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
