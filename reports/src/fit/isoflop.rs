//! Chinchilla approach 2 (Hoffmann et al. 2022, §3.2): isoFLOP profiles.
//!
//! For each FLOP budget `C`, models of several sizes `N` are trained with that compute. Per budget we fit a
//! parabola of the final loss in `x = ln N` by least squares,
//!
//! ```text
//! L(x) = c0 + c1 (x − x0) + c2 (x − x0)²        x0 = mean ln N of the budget (centred for conditioning)
//! ```
//!
//! whose vertex `x* = x0 − c1 / (2 c2)` gives the compute-optimal size `N*(C) = exp(x*)`, its loss
//! `L* = c0 − c1² / (4 c2)`, and `D*(C) = C / (6 N*)` tokens (the `C = 6 N D` convention of the paper). Through
//! the minima we fit power laws by least squares in log-log:
//!
//! ```text
//! ln N* = ln k  + a ln C        (N* = k  C^a)
//! ln D* = ln k' + b ln C        (D* = k' C^b; JSON key `k_prime`)
//! ```
//!
//! Because `D* = C / (6 N*)`, `b = 1 − a` and `k' = 1 / (6 k)` exactly; both are reported as the paper does
//! (its Table 2: a = 0.49, b = 0.51 for approach 2).
//!
//! Points whose FLOPs agree within [`BUDGET_REL_TOL`] (relative to the smallest in the group) share a budget,
//! whose `C` is their geometric mean. A budget needs [`MIN_SIZES`] distinct sizes for its parabola; the fit
//! needs [`MIN_BUDGETS`] such budgets. Budgets with fewer sizes, or whose parabola opens downward (no minimum),
//! are left out with a warning in `warnings`; a minimum outside the sizes tried is kept but flagged
//! (`interior: false`) and warned about, since it is an extrapolation of the parabola.
//!
//! The bootstrap resamples points within each budget, so a resample keeps the design's budgets; a resample in
//! which a budget loses its minimum (too few distinct sizes drawn, or a concave parabola) counts as failed.

use super::bootstrap::{resample_fits, within_groups, Resamples};
use super::optim::line_fit;
use super::{check_positive, sig4, BootstrapInfo, Estimate, FitError, Fitted};
use serde::{Deserialize, Serialize};

/// Distinct model sizes a budget needs for its parabola (three coefficients).
pub const MIN_SIZES: usize = 3;
/// Budgets with a minimum the power laws need (two coefficients each).
pub const MIN_BUDGETS: usize = 2;
/// Points whose FLOPs agree within this relative tolerance form one budget.
pub const BUDGET_REL_TOL: f64 = 0.05;

/// One trained model: its compute, size and final loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IsoflopPoint {
    /// Training FLOPs (the budget).
    pub flops: f64,
    /// Parameters `N`.
    pub params: f64,
    pub loss: f64,
}

/// A parabola of loss in `ln N`: `L = c0 + c1 (ln N − x0) + c2 (ln N − x0)²`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Parabola {
    pub x0: f64,
    pub c0: f64,
    pub c1: f64,
    pub c2: f64,
}

impl Parabola {
    /// The loss at `n` parameters.
    pub fn at(&self, n: f64) -> f64 {
        let d = n.ln() - self.x0;
        self.c0 + self.c1 * d + self.c2 * d * d
    }

    /// `(N*, L*)` at the vertex, or `None` when the parabola opens downward or is flat.
    pub fn minimum(&self) -> Option<(f64, f64)> {
        if !(self.c2 > 0.0) {
            return None;
        }
        let n = (self.x0 - self.c1 / (2.0 * self.c2)).exp();
        let l = self.c0 - self.c1 * self.c1 / (4.0 * self.c2);
        (n.is_finite() && n > 0.0 && l.is_finite()).then_some((n, l))
    }
}

/// Least-squares parabola of `losses` in `ln params`. Needs [`MIN_SIZES`] distinct sizes.
pub fn fit_parabola(params: &[f64], losses: &[f64]) -> Result<Parabola, FitError> {
    check_positive(params.iter().copied(), "params N")?;
    check_positive(losses.iter().copied(), "loss L")?;
    let distinct = count_distinct(params);
    if distinct < MIN_SIZES {
        return Err(FitError::TooFewSizes { got: distinct, need: MIN_SIZES });
    }
    let x0 = params.iter().map(|n| n.ln()).sum::<f64>() / params.len() as f64;
    // Scale the centred x to unit spread so the normal equations stay well conditioned.
    let xs: Vec<f64> = params.iter().map(|n| n.ln() - x0).collect();
    let s = xs.iter().map(|x| x.abs()).fold(0.0, f64::max);
    let (mut m, mut r) = ([[0.0f64; 3]; 3], [0.0f64; 3]);
    for (x, &y) in xs.iter().zip(losses) {
        let basis = [1.0, x / s, (x / s) * (x / s)];
        for i in 0..3 {
            r[i] += basis[i] * y;
            for j in 0..3 {
                m[i][j] += basis[i] * basis[j];
            }
        }
    }
    let c = solve3(m, r).ok_or_else(|| FitError::Optimiser("singular least-squares system".into()))?;
    Ok(Parabola { x0, c0: c[0], c1: c[1] / s, c2: c[2] / (s * s) })
}

/// The minimum of one budget's parabola.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsoflopMinimum {
    /// The budget `C` (FLOPs; geometric mean of its points' FLOPs).
    pub flops: f64,
    /// Compute-optimal parameters `N*(C)`.
    pub n_opt: Estimate,
    /// Compute-optimal tokens `D*(C) = C / (6 N*)`.
    pub d_opt: Estimate,
    /// The parabola's loss at its vertex.
    pub loss_min: Estimate,
    /// Distinct model sizes at this budget.
    pub n_sizes: usize,
    /// Whether `N*` lies within the sizes tried (else the minimum is an extrapolation).
    pub interior: bool,
    pub parabola: Parabola,
}

/// Chinchilla approach 2. JSON keys: `a`, `b`, `k`, `k_prime` (each an [`Estimate`]), `minima` (one per budget
/// used, by increasing FLOPs), `warnings`, `converged` (always true: every step is closed-form least squares),
/// `n_points`, and `bootstrap` when bootstrapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsoflopFit {
    /// Exponent of `N* = k C^a`.
    pub a: Estimate,
    /// Exponent of `D* = k' C^b`.
    pub b: Estimate,
    pub k: Estimate,
    /// `k'` of `D* = k' C^b`.
    pub k_prime: Estimate,
    pub minima: Vec<IsoflopMinimum>,
    /// Budgets left out and minima outside the sizes tried.
    pub warnings: Vec<String>,
    pub converged: bool,
    pub n_points: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapInfo>,
}

impl IsoflopFit {
    /// `N*(C) = k C^a` with the point estimates.
    pub fn n_opt(&self, c: f64) -> f64 {
        (self.k.value.ln() + self.a.value * c.ln()).exp()
    }
    /// `D*(C) = k' C^b` with the point estimates.
    pub fn d_opt(&self, c: f64) -> f64 {
        (self.k_prime.value.ln() + self.b.value * c.ln()).exp()
    }
}

impl Fitted for IsoflopFit {
    fn estimates(&self) -> Vec<(String, Estimate)> {
        let mut v =
            vec![("a".into(), self.a), ("b".into(), self.b), ("k".into(), self.k), ("k_prime".into(), self.k_prime)];
        for (i, m) in self.minima.iter().enumerate() {
            v.push((format!("minima[{i}].n_opt"), m.n_opt));
            v.push((format!("minima[{i}].d_opt"), m.d_opt));
            v.push((format!("minima[{i}].loss_min"), m.loss_min));
        }
        v
    }
    fn estimates_mut(&mut self) -> Vec<&mut Estimate> {
        let mut v = vec![&mut self.a, &mut self.b, &mut self.k, &mut self.k_prime];
        for m in &mut self.minima {
            v.extend([&mut m.n_opt, &mut m.d_opt, &mut m.loss_min]);
        }
        v
    }
    fn converged(&self) -> bool {
        self.converged
    }
    fn set_bootstrap(&mut self, info: BootstrapInfo) {
        self.bootstrap = Some(info);
    }
}

/// Indices of `points` grouped into budgets (see the module notes), by increasing FLOPs.
pub fn budget_groups(points: &[IsoflopPoint]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&i, &j| points[i].flops.total_cmp(&points[j].flops));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if points[i].flops <= points[g[0]].flops * (1.0 + BUDGET_REL_TOL) => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// Fits Chinchilla approach 2 to `points`, see the module notes.
pub fn fit_isoflop(points: &[IsoflopPoint]) -> Result<IsoflopFit, FitError> {
    check_positive(points.iter().map(|p| p.flops), "FLOPs C")?;
    check_positive(points.iter().map(|p| p.params), "params N")?;
    check_positive(points.iter().map(|p| p.loss), "loss L")?;
    let mut minima = Vec::new();
    let mut warnings = Vec::new();
    let mut left_out = Vec::new();
    for g in budget_groups(points) {
        let c = (g.iter().map(|&i| points[i].flops.ln()).sum::<f64>() / g.len() as f64).exp();
        let params: Vec<f64> = g.iter().map(|&i| points[i].params).collect();
        let losses: Vec<f64> = g.iter().map(|&i| points[i].loss).collect();
        let n_sizes = count_distinct(&params);
        if n_sizes < MIN_SIZES {
            left_out.push(format!("{} ({n_sizes} size(s))", sig4(c)));
            continue;
        }
        let parabola = fit_parabola(&params, &losses)?;
        let Some((n_opt, loss_min)) = parabola.minimum() else {
            left_out.push(format!("{} (parabola opens downward: no minimum)", sig4(c)));
            continue;
        };
        let (lo, hi) = params.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &n| (lo.min(n), hi.max(n)));
        let interior = n_opt >= lo && n_opt <= hi;
        if !interior {
            warnings.push(format!(
                "budget {}: minimum N* = {} lies outside the sizes tried [{}, {}] (extrapolated)",
                sig4(c),
                sig4(n_opt),
                sig4(lo),
                sig4(hi)
            ));
        }
        minima.push(IsoflopMinimum {
            flops: c,
            n_opt: n_opt.into(),
            d_opt: (c / (6.0 * n_opt)).into(),
            loss_min: loss_min.into(),
            n_sizes,
            interior,
            parabola,
        });
    }
    if !left_out.is_empty() {
        warnings.insert(0, format!("budgets left out: {}", left_out.join(", ")));
    }
    if minima.len() < MIN_BUDGETS {
        let detail = if left_out.is_empty() { String::new() } else { format!("; left out: {}", left_out.join(", ")) };
        return Err(FitError::TooFewBudgets {
            got: minima.len(),
            need_budgets: MIN_BUDGETS,
            need_sizes: MIN_SIZES,
            detail,
        });
    }
    let ln_c: Vec<f64> = minima.iter().map(|m| m.flops.ln()).collect();
    let ln_n: Vec<f64> = minima.iter().map(|m| m.n_opt.value.ln()).collect();
    let ln_d: Vec<f64> = minima.iter().map(|m| m.d_opt.value.ln()).collect();
    let singular = || FitError::Optimiser("all budgets have the same FLOPs".into());
    let (ln_k, a) = line_fit(&ln_c, &ln_n).ok_or_else(singular)?;
    let (ln_k_prime, b) = line_fit(&ln_c, &ln_d).ok_or_else(singular)?;
    Ok(IsoflopFit {
        a: a.into(),
        b: b.into(),
        k: ln_k.exp().into(),
        k_prime: ln_k_prime.exp().into(),
        minima,
        warnings,
        converged: true,
        n_points: points.len(),
        bootstrap: None,
    })
}

/// [`fit_isoflop`] with percentile intervals from `n_resamples` stratified resamples (seeded), which are also
/// returned. A resample must yield a minimum at every budget the point fit used, else it counts as failed.
pub fn fit_isoflop_bootstrap(
    points: &[IsoflopPoint],
    n_resamples: usize,
    seed: u64,
) -> Result<(IsoflopFit, Resamples<IsoflopFit>), FitError> {
    let mut fit = fit_isoflop(points)?;
    let groups = budget_groups(points);
    let budgets: Vec<f64> = fit.minima.iter().map(|m| m.flops).collect();
    let boot = resample_fits(n_resamples, seed, |rng| {
        let pts: Vec<IsoflopPoint> = within_groups(&groups, rng).into_iter().map(|i| points[i]).collect();
        let f = fit_isoflop(&pts)?;
        let same = f.minima.len() == budgets.len()
            && f.minima.iter().zip(&budgets).all(|(m, c)| (m.flops / c - 1.0).abs() < BUDGET_REL_TOL);
        if same {
            Ok(f)
        } else {
            Err(FitError::Optimiser("a budget lost its minimum in this resample".into()))
        }
    });
    boot.attach_to(&mut fit, "points with replacement within each FLOP budget", "closed form (no starts)");
    Ok((fit, boot))
}

/// Number of distinct values (relative tolerance 1e-9).
fn count_distinct(v: &[f64]) -> usize {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
    s.len()
}

/// Solves the 3x3 system `m c = r` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve3(mut m: [[f64; 3]; 3], mut r: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let piv = (col..3).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if !(m[piv][col].abs() > 1e-12) {
            return None;
        }
        m.swap(col, piv);
        r.swap(col, piv);
        for row in col + 1..3 {
            let f = m[row][col] / m[col][col];
            let pivot_row = m[col];
            for (x, p) in m[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            r[row] -= f * r[col];
        }
    }
    let mut c = [0.0; 3];
    for i in (0..3).rev() {
        c[i] = (r[i] - (i + 1..3).map(|k| m[i][k] * c[k]).sum::<f64>()) / m[i][i];
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parabola_through_three_points_is_exact() {
        // L = 2 + 0.1 (ln N − ln 1e8)², sampled at three sizes, one of them the vertex.
        let ns = [1e7, 1e8, 3e9];
        let ls: Vec<f64> = ns.iter().map(|n: &f64| 2.0 + 0.1 * (n / 1e8).ln().powi(2)).collect();
        let p = fit_parabola(&ns, &ls).unwrap();
        let (n, l) = p.minimum().unwrap();
        assert!((n / 1e8 - 1.0).abs() < 1e-9 && (l - 2.0).abs() < 1e-12, "{p:?}");
        assert!((p.at(5e8) - (2.0 + 0.1 * 5f64.ln().powi(2))).abs() < 1e-12);
        let err = fit_parabola(&[1e7, 1e7, 1e8], &[3.0, 3.1, 2.9]).unwrap_err();
        assert_eq!(err, FitError::TooFewSizes { got: 2, need: 3 });
    }

    #[test]
    fn budgets_group_within_tolerance() {
        let p = |flops| IsoflopPoint { flops, params: 1.0, loss: 1.0 };
        let pts = [p(1e18), p(3e18), p(1.03e18), p(2.9e18), p(1e19)];
        assert_eq!(budget_groups(&pts), vec![vec![0, 2], vec![3, 1], vec![4]]);
    }
}
