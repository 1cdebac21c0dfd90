//! Chinchilla approach 3 (Hoffmann et al. 2022, §3.3 and appendix D.2): a parametric loss in parameters and data,
//!
//! ```text
//! L(N, D) = E + A / N^alpha + B / D^beta
//! ```
//!
//! fitted as the paper does. With `A = e^a`, `B = e^b`, `E = e^e`, the log of the law is a log-sum-exp,
//!
//! ```text
//! ln L̂_i = LSE(a − alpha ln N_i,  b − beta ln D_i,  e)
//! ```
//!
//! and the objective is the Huber loss (delta = [`HUBER_DELTA`] = 1e-3) of the log residuals, SUMMED over the
//! points (not averaged: the scale matters for the optimiser's tolerances, and it is what the paper writes):
//!
//! ```text
//! min_{a, b, e, alpha, beta}  Σ_i Huber_δ( LSE(a − alpha ln N_i, b − beta ln D_i, e) − ln L_i )
//! Huber_δ(r) = r²/2 for |r| ≤ δ, δ (|r| − δ/2) otherwise
//! ```
//!
//! minimised by L-BFGS (argmin, More-Thuente line search, analytic gradient) from every point of the paper's
//! grid of initialisations: alpha, beta in {0, 0.5, 1, 1.5, 2}, e in {−1, −0.5, 0, 0.5, 1, 1.5},
//! a, b in {0, 5, 10, 15, 20, 25} (5·5·6·6·6 = 5400 starts, split over the cores); the run with the lowest
//! objective is kept.
//!
//! ## The compute-optimal frontier
//! Minimising `L(N, D)` subject to `C = 6 N D` gives (the paper's eq. 4)
//!
//! ```text
//! N_opt(C) = G (C/6)^a,   D_opt(C) = G^(−1) (C/6)^b,
//! G = (alpha A / (beta B))^(1/(alpha+beta)),   a = beta/(alpha+beta),   b = alpha/(alpha+beta)
//! ```
//!
//! In the JSON, `a` and `b` are these frontier exponents (not the log-sum-exp `a = ln A`, `b = ln B` above).
//!
//! ## Published values, for reference
//! Hoffmann et al. report E = 1.69, A = 406.4, B = 410.7, alpha = 0.34, beta = 0.28 (so a = 0.46, b = 0.54).
//! Besiroglu et al. (Epoch AI, 2024, "Chinchilla Scaling: A replication attempt") refitted the paper's data
//! with this same procedure and found E = 1.82, A = 482.0, B = 2085.4, alpha = 0.35, beta = 0.37, arguing the
//! original optimiser stopped early; both sets serve as synthetic ground truth in the tests.
//!
//! ## Bootstrap
//! The 5400-start grid per resample would cost hundreds of full fits. The point estimate always uses the full
//! grid; each bootstrap resample starts L-BFGS from the point estimate (a warm start: the resample's optimum
//! is near it) and from the reduced grid [`bootstrap_grid`] (alpha, beta in {0.5, 1}, e in {0, 1},
//! a, b in {5, 15}: 32 starts), and keeps the best. The output's `bootstrap.starts` says so.

use super::bootstrap::{resample_fits, with_replacement, Resamples};
use super::optim::{best_of, finite, LbfgsSettings};
use super::{check_positive, BootstrapInfo, Estimate, FitError, Fitted, Law};
use argmin::core::{CostFunction, Error as ArgminError, Gradient};
use serde::{Deserialize, Serialize};

/// Fewest points a fit accepts: the law has five free parameters.
pub const MIN_POINTS: usize = 5;
/// The Huber loss's threshold on log-loss residuals (the paper's delta).
pub const HUBER_DELTA: f64 = 1e-3;

/// The paper's grid of initialisations, per parameter.
pub const GRID_ALPHA: [f64; 5] = [0.0, 0.5, 1.0, 1.5, 2.0];
pub const GRID_BETA: [f64; 5] = [0.0, 0.5, 1.0, 1.5, 2.0];
pub const GRID_E: [f64; 6] = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5];
pub const GRID_A: [f64; 6] = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0];
pub const GRID_B: [f64; 6] = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0];

/// The bootstrap's starts, besides the warm start (see the module notes).
pub const BOOTSTRAP_STARTS: &str = "warm start from the point estimate plus a reduced grid of 32 starts \
    (alpha, beta in {0.5, 1}; e in {0, 1}; a, b in {5, 15}); the point estimate used the paper's full 5400-start grid";

/// L-BFGS settings. The summed Huber objective is small (≈ n δ |r|), so the tolerances are absolute and tight.
const SETTINGS: LbfgsSettings = LbfgsSettings { memory: 10, tol_grad: 1e-12, accept_grad: 1e-7, max_iters: 1000 };

/// One trained model: parameters `N`, training tokens `D`, final loss `L`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChinchillaPoint {
    pub params: f64,
    pub tokens: f64,
    pub loss: f64,
}

/// A fitted `L(N, D) = E + A/N^alpha + B/D^beta` and its frontier. JSON keys: `E`, `A`, `B`, `alpha`, `beta`,
/// `a`, `b`, `G` (each an [`Estimate`]), `converged`, `objective`, `n_points`, `n_starts`, and `bootstrap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct ChinchillaFit {
    pub E: Estimate,
    pub A: Estimate,
    pub B: Estimate,
    pub alpha: Estimate,
    pub beta: Estimate,
    /// Frontier exponent of `N_opt`: `beta / (alpha + beta)`.
    pub a: Estimate,
    /// Frontier exponent of `D_opt`: `alpha / (alpha + beta)`.
    pub b: Estimate,
    /// Frontier scale `G = (alpha A / (beta B))^(1/(alpha+beta))`.
    pub G: Estimate,
    /// Whether the best start reached a stationary point (gradient norm below 1e-7). False is a warning.
    pub converged: bool,
    /// The summed Huber objective at the optimum.
    pub objective: f64,
    pub n_points: usize,
    /// L-BFGS starts tried for the point estimate.
    pub n_starts: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapInfo>,
}

/// The frontier of a law: `(G, a, b)`.
pub fn frontier(big_a: f64, big_b: f64, alpha: f64, beta: f64) -> (f64, f64, f64) {
    let s = alpha + beta;
    ((alpha * big_a / (beta * big_b)).powf(1.0 / s), beta / s, alpha / s)
}

impl ChinchillaFit {
    /// `L(N, D)` with the point estimates.
    pub fn predict(&self, n: f64, d: f64) -> f64 {
        self.E.value + self.A.value / n.powf(self.alpha.value) + self.B.value / d.powf(self.beta.value)
    }
    /// `N_opt(C) = G (C/6)^a`.
    pub fn n_opt(&self, c: f64) -> f64 {
        self.G.value * (c / 6.0).powf(self.a.value)
    }
    /// `D_opt(C) = G^(−1) (C/6)^b`.
    pub fn d_opt(&self, c: f64) -> f64 {
        (c / 6.0).powf(self.b.value) / self.G.value
    }

    /// The fit from the optimiser's `θ = [a, b, e, alpha, beta]` (log-sum-exp parameters).
    fn from_theta(theta: &[f64], converged: bool, objective: f64, n_points: usize, n_starts: usize) -> Self {
        let (big_a, big_b, e, alpha, beta) = (theta[0].exp(), theta[1].exp(), theta[2].exp(), theta[3], theta[4]);
        let (g, a, b) = frontier(big_a, big_b, alpha, beta);
        ChinchillaFit {
            E: e.into(),
            A: big_a.into(),
            B: big_b.into(),
            alpha: alpha.into(),
            beta: beta.into(),
            a: a.into(),
            b: b.into(),
            G: g.into(),
            converged,
            objective,
            n_points,
            n_starts,
            bootstrap: None,
        }
    }

    fn theta(&self) -> Vec<f64> {
        vec![self.A.value.ln(), self.B.value.ln(), self.E.value.ln(), self.alpha.value, self.beta.value]
    }
}

impl Fitted for ChinchillaFit {
    fn estimates(&self) -> Vec<(String, Estimate)> {
        let names = ["E", "A", "B", "alpha", "beta", "a", "b", "G"];
        let values = [self.E, self.A, self.B, self.alpha, self.beta, self.a, self.b, self.G];
        names.iter().map(|n| n.to_string()).zip(values).collect()
    }
    fn estimates_mut(&mut self) -> Vec<&mut Estimate> {
        vec![
            &mut self.E,
            &mut self.A,
            &mut self.B,
            &mut self.alpha,
            &mut self.beta,
            &mut self.a,
            &mut self.b,
            &mut self.G,
        ]
    }
    fn converged(&self) -> bool {
        self.converged
    }
    fn set_bootstrap(&mut self, info: BootstrapInfo) {
        self.bootstrap = Some(info);
    }
}

/// The paper's 5400 starts as `θ = [a, b, e, alpha, beta]`.
pub fn paper_grid() -> Vec<Vec<f64>> {
    grid(&GRID_A, &GRID_B, &GRID_E, &GRID_ALPHA, &GRID_BETA)
}

/// The bootstrap's reduced grid of 32 starts (see the module notes).
pub fn bootstrap_grid() -> Vec<Vec<f64>> {
    grid(&[5.0, 15.0], &[5.0, 15.0], &[0.0, 1.0], &[0.5, 1.0], &[0.5, 1.0])
}

fn grid(a: &[f64], b: &[f64], e: &[f64], alpha: &[f64], beta: &[f64]) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(a.len() * b.len() * e.len() * alpha.len() * beta.len());
    for &al in alpha {
        for &be in beta {
            for &e0 in e {
                for &a0 in a {
                    for &b0 in b {
                        out.push(vec![a0, b0, e0, al, be]);
                    }
                }
            }
        }
    }
    out
}

/// Fits the law from the paper's full grid, see the module notes.
pub fn fit_chinchilla(points: &[ChinchillaPoint]) -> Result<ChinchillaFit, FitError> {
    fit_chinchilla_from(points, &paper_grid(), true)
}

/// Fits the law with L-BFGS from each of `starts` (`θ = [a, b, e, alpha, beta]`), keeping the best;
/// `parallel` splits the starts over the cores.
pub fn fit_chinchilla_from(
    points: &[ChinchillaPoint],
    starts: &[Vec<f64>],
    parallel: bool,
) -> Result<ChinchillaFit, FitError> {
    if points.len() < MIN_POINTS {
        let why = "E, A, B, alpha and beta are free";
        return Err(FitError::TooFewPoints { law: Law::Chinchilla, got: points.len(), need: MIN_POINTS, why });
    }
    check_positive(points.iter().map(|p| p.params), "params N")?;
    check_positive(points.iter().map(|p| p.tokens), "tokens D")?;
    check_positive(points.iter().map(|p| p.loss), "loss L")?;
    let problem = HuberProblem {
        ln_n: points.iter().map(|p| p.params.ln()).collect(),
        ln_d: points.iter().map(|p| p.tokens.ln()).collect(),
        ln_l: points.iter().map(|p| p.loss.ln()).collect(),
    };
    let best = best_of(&problem, starts, SETTINGS, parallel).map_err(FitError::Optimiser)?;
    Ok(ChinchillaFit::from_theta(&best.theta, best.converged, best.cost, points.len(), starts.len()))
}

/// [`fit_chinchilla`] with percentile intervals from `n_resamples` resamples of the points (seeded); each
/// resample starts from the point estimate and [`bootstrap_grid`]. The resampled fits are also returned.
pub fn fit_chinchilla_bootstrap(
    points: &[ChinchillaPoint],
    n_resamples: usize,
    seed: u64,
) -> Result<(ChinchillaFit, Resamples<ChinchillaFit>), FitError> {
    let mut fit = fit_chinchilla(points)?;
    let mut starts = vec![fit.theta()];
    starts.extend(bootstrap_grid());
    let boot = resample_fits(n_resamples, seed, |rng| {
        let mut idx = with_replacement(points.len(), rng);
        let pts: Vec<ChinchillaPoint> = idx.iter().map(|&i| points[i]).collect();
        idx.sort_unstable();
        idx.dedup();
        if idx.len() < MIN_POINTS {
            let why = "distinct points in a resample";
            return Err(FitError::TooFewPoints { law: Law::Chinchilla, got: idx.len(), need: MIN_POINTS, why });
        }
        fit_chinchilla_from(&pts, &starts, false)
    });
    boot.attach_to(&mut fit, "points with replacement", BOOTSTRAP_STARTS);
    Ok((fit, boot))
}

/// The summed Huber objective over `θ = [a, b, e, alpha, beta]`.
#[derive(Clone, Debug)]
struct HuberProblem {
    ln_n: Vec<f64>,
    ln_d: Vec<f64>,
    ln_l: Vec<f64>,
}

impl HuberProblem {
    /// Calls `f(r_i, s_i, ln N_i, ln D_i)` per point: `r` the log residual, `s` the softmax weights of the three
    /// log-sum-exp terms (the derivatives of `ln L̂` with respect to them).
    fn each(&self, theta: &[f64], mut f: impl FnMut(f64, [f64; 3], f64, f64)) {
        let (a, b, e, alpha, beta) = (theta[0], theta[1], theta[2], theta[3], theta[4]);
        for ((&ln_n, &ln_d), &ln_l) in self.ln_n.iter().zip(&self.ln_d).zip(&self.ln_l) {
            let u = [a - alpha * ln_n, b - beta * ln_d, e];
            let m = u[0].max(u[1]).max(u[2]);
            let w = [(u[0] - m).exp(), (u[1] - m).exp(), (u[2] - m).exp()];
            let sum = w[0] + w[1] + w[2];
            let lse = m + sum.ln();
            f(lse - ln_l, [w[0] / sum, w[1] / sum, w[2] / sum], ln_n, ln_d);
        }
    }
}

/// `Huber_δ(r)`.
fn huber(r: f64) -> f64 {
    if r.abs() <= HUBER_DELTA {
        0.5 * r * r
    } else {
        HUBER_DELTA * (r.abs() - 0.5 * HUBER_DELTA)
    }
}

impl CostFunction for HuberProblem {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, ArgminError> {
        finite(theta)?;
        let mut total = 0.0;
        self.each(theta, |r, _, _, _| total += huber(r));
        finite(&[total]).map(|v| v[0])
    }
}

impl Gradient for HuberProblem {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    /// `∂/∂θ = Σ_i ψ(r_i) ∂ln L̂_i/∂θ`, `ψ(r) = clamp(r, −δ, δ)`, with `∂ln L̂/∂a = s_0`, `∂/∂alpha = −s_0 ln N`,
    /// `∂/∂b = s_1`, `∂/∂beta = −s_1 ln D`, `∂/∂e = s_2`.
    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, ArgminError> {
        finite(theta)?;
        let mut g = vec![0.0; 5];
        self.each(theta, |r, s, ln_n, ln_d| {
            let psi = r.clamp(-HUBER_DELTA, HUBER_DELTA);
            g[0] += psi * s[0];
            g[1] += psi * s[1];
            g[2] += psi * s[2];
            g[3] -= psi * s[0] * ln_n;
            g[4] -= psi * s[1] * ln_d;
        });
        finite(&g)?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let pts: Vec<ChinchillaPoint> = [(1e8, 1e10, 3.1), (3e8, 2e10, 2.9), (1e9, 5e9, 2.95), (2e7, 1e11, 3.3)]
            .iter()
            .map(|&(params, tokens, loss)| ChinchillaPoint { params, tokens, loss })
            .collect();
        let p = HuberProblem {
            ln_n: pts.iter().map(|p| p.params.ln()).collect(),
            ln_d: pts.iter().map(|p| p.tokens.ln()).collect(),
            ln_l: pts.iter().map(|p| p.loss.ln()).collect(),
        };
        // One start in the quadratic zone of the Huber loss for some points, one in the linear zone.
        for theta in [vec![6.0, 6.0, 0.5, 0.34, 0.28], vec![5.0, 7.0, 0.2, 0.3, 0.3]] {
            let g = p.gradient(&theta).unwrap();
            for k in 0..5 {
                let h = 1e-7;
                let (mut up, mut dn) = (theta.clone(), theta.clone());
                up[k] += h;
                dn[k] -= h;
                let fd = (p.cost(&up).unwrap() - p.cost(&dn).unwrap()) / (2.0 * h);
                assert!((fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()), "k={k}: {fd} vs {}", g[k]);
            }
        }
    }

    #[test]
    fn grids_have_the_papers_size() {
        assert_eq!(paper_grid().len(), 5400);
        assert_eq!(bootstrap_grid().len(), 32);
    }
}
