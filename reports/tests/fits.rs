//! The fits against synthetic data with known parameters and seeded noise.
//!
//! Tolerances are stated per test; each is a few times the spread seen over seeds, so a correct fit passes for
//! any seed while a wrong recipe (a missing sum, a wrong frontier exponent, a biased parabola) fails.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reports::fit::{
    chinchilla::frontier, fit_chinchilla, fit_isoflop, fit_power_law, fit_power_law_bootstrap, ChinchillaPoint,
    FitError, IsoflopPoint, Law,
};
use std::time::Instant;

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `n` values log-spaced over [lo, hi].
fn logspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64)).collect()
}

/// (E, A, B, alpha, beta)
type Law3 = (f64, f64, f64, f64, f64);
const HOFFMANN: Law3 = (1.69, 406.4, 410.7, 0.34, 0.28);
const EPOCH: Law3 = (1.82, 482.0, 2085.4, 0.35, 0.37);

fn chinchilla_law((e, a, b, alpha, beta): Law3, n: f64, d: f64) -> f64 {
    e + a / n.powf(alpha) + b / d.powf(beta)
}

/// N in 1e7..1e10 (7 sizes), D in 1e8..1e12 (9 sizes), loss x exp(0.01 z): 1% multiplicative noise.
fn chinchilla_data(law: Law3, seed: u64) -> Vec<ChinchillaPoint> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for &n in &logspace(1e7, 1e10, 7) {
        for &d in &logspace(1e8, 1e12, 9) {
            let loss = chinchilla_law(law, n, d) * (0.01 * normal(&mut rng)).exp();
            out.push(ChinchillaPoint { params: n, tokens: d, loss });
        }
    }
    out
}

fn rel(got: f64, want: f64) -> f64 {
    (got / want - 1.0).abs()
}

/// Both published parameter sets, 63 points each with 1% noise. Tolerances: E 5% (relative), alpha, beta and
/// the frontier exponents a, b 0.03 (absolute), A and B 40% (relative: they trade off against the exponents, so
/// they move most), and the fitted law predicts the noise-free loss at every point within 1%.
#[test]
fn chinchilla_recovers_published_fits() {
    for (name, law, seed) in [("Hoffmann", HOFFMANN, 1), ("Epoch", EPOCH, 2)] {
        let (e, a, b, alpha, beta) = law;
        let pts = chinchilla_data(law, seed);
        let t = Instant::now();
        let fit = fit_chinchilla(&pts).unwrap();
        eprintln!("{name}: fitted in {:.1?}: {}", t.elapsed(), serde_json::to_string(&fit).unwrap());
        assert!(fit.converged, "{name}: {fit:?}");
        assert_eq!((fit.n_points, fit.n_starts), (63, 5400));
        assert!(rel(fit.E.value, e) < 0.05, "{name} E: {fit:?}");
        assert!(rel(fit.A.value, a) < 0.4, "{name} A: {fit:?}");
        assert!(rel(fit.B.value, b) < 0.4, "{name} B: {fit:?}");
        assert!((fit.alpha.value - alpha).abs() < 0.03, "{name} alpha: {fit:?}");
        assert!((fit.beta.value - beta).abs() < 0.03, "{name} beta: {fit:?}");
        assert!((fit.a.value - beta / (alpha + beta)).abs() < 0.03, "{name} a: {fit:?}");
        assert!((fit.b.value - alpha / (alpha + beta)).abs() < 0.03, "{name} b: {fit:?}");
        assert!((fit.a.value + fit.b.value - 1.0).abs() < 1e-12);
        for p in &pts {
            let truth = chinchilla_law(law, p.params, p.tokens);
            assert!(rel(fit.predict(p.params, p.tokens), truth) < 0.01, "{name} at {p:?}");
        }
    }
}

/// The frontier of the published Hoffmann et al. law at C = 6e20 FLOPs, computed by hand:
/// a = 0.28/0.62 = 0.451613, b = 0.548387, G = (0.34·406.4 / (0.28·410.7))^(1/0.62) = 1.201572^1.612903 = 1.344711,
/// N_opt = 1.344711 · (1e20)^0.451613 = 1.448395e9, D_opt = (1e20)^0.548387 / 1.344711 = 6.904196e10.
#[test]
fn frontier_matches_hand_computation_and_minimises_the_law() {
    let (e, a_, b_, alpha, beta) = HOFFMANN;
    let (g, a, b) = frontier(a_, b_, alpha, beta);
    assert!((a - 0.451613).abs() < 1e-6 && (b - 0.548387).abs() < 1e-6, "{a} {b}");
    assert!(rel(g, 1.344711) < 1e-6, "G = {g}");
    let c: f64 = 6e20;
    let (n_opt, d_opt) = (g * (c / 6.0).powf(a), (c / 6.0).powf(b) / g);
    assert!(rel(n_opt, 1.448395e9) < 1e-6, "{n_opt}");
    assert!(rel(d_opt, 6.904196e10) < 1e-6, "{d_opt}");
    assert!(rel(6.0 * n_opt * d_opt, c) < 1e-12);
    // Independently: L(N, C/(6N)) is larger a little either side of N_opt.
    let on_budget = |n: f64| chinchilla_law((e, a_, b_, alpha, beta), n, c / (6.0 * n));
    for f in [0.9, 1.1] {
        assert!(on_budget(n_opt * f) > on_budget(n_opt), "not a minimum at factor {f}");
    }
}

/// Budgets 1e18..1e21; truth N*(C) = 0.1 C^0.5 (k = 0.1, a = 0.5), L*(C) = 1.7 + 50 C^(-0.1), curvature 0.05 per
/// (ln N)²; seven sizes per budget over N* x 10^[-0.7, 1.1] (off-centre, so the vertex must be found, not
/// assumed), 0.2% multiplicative noise. Tolerances: each N* within 10%, each L* within 0.5%, a within 0.02,
/// k within 30%, and b = 1 − a, k' = 1/(6k) to rounding.
#[test]
fn isoflop_recovers_minima_and_exponents_from_parabolas() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let budgets = [1e18, 1e19, 1e20, 1e21];
    let n_star = |c: f64| 0.1 * c.sqrt();
    let l_star = |c: f64| 1.7 + 50.0 * c.powf(-0.1);
    let mut pts = Vec::new();
    for &c in &budgets {
        for k in 0..7 {
            let n = n_star(c) * 10f64.powf(-0.7 + 0.3 * k as f64);
            let loss = (l_star(c) + 0.05 * (n / n_star(c)).ln().powi(2)) * (0.002 * normal(&mut rng)).exp();
            pts.push(IsoflopPoint { flops: c * (1.0 + 0.01 * normal(&mut rng).clamp(-1.0, 1.0)), params: n, loss });
        }
    }
    let fit = fit_isoflop(&pts).unwrap();
    assert_eq!(fit.minima.len(), 4, "{fit:?}");
    for (m, &c) in fit.minima.iter().zip(&budgets) {
        assert!(rel(m.flops, c) < 0.02, "{m:?}");
        assert!(rel(m.n_opt.value, n_star(c)) < 0.1, "{m:?} vs {}", n_star(c));
        assert!(rel(m.loss_min.value, l_star(c)) < 0.005, "{m:?}");
        assert!(rel(m.d_opt.value, m.flops / (6.0 * m.n_opt.value)) < 1e-12);
        assert!(m.interior && m.n_sizes == 7);
    }
    assert!((fit.a.value - 0.5).abs() < 0.02, "{fit:?}");
    assert!(rel(fit.k.value, 0.1) < 0.3, "{fit:?}");
    assert!((fit.a.value + fit.b.value - 1.0).abs() < 1e-9);
    assert!(rel(fit.k_prime.value, 1.0 / (6.0 * fit.k.value)) < 1e-9);
    assert!(fit.warnings.is_empty(), "{:?}", fit.warnings);
}

/// Approach 2 on noise-free isoFLOP slices of the Hoffmann law agrees with its frontier exponent
/// a = beta/(alpha+beta) = 0.4516 within 0.02 (the law is not exactly a parabola in ln N, hence the slack).
#[test]
fn isoflop_agrees_with_the_parametric_frontier() {
    let (_, big_a, big_b, alpha, beta) = HOFFMANN;
    let (g, a, _) = frontier(big_a, big_b, alpha, beta);
    let mut pts = Vec::new();
    for c in [1e19, 1e20, 1e21, 1e22] {
        let n_opt = g * (c / 6.0f64).powf(a);
        for k in 0..9 {
            let n = n_opt * 10f64.powf(-0.5 + 0.125 * k as f64);
            pts.push(IsoflopPoint { flops: c, params: n, loss: chinchilla_law(HOFFMANN, n, c / (6.0 * n)) });
        }
    }
    let fit = fit_isoflop(&pts).unwrap();
    assert!((fit.a.value - a).abs() < 0.02, "a = {} vs {a}", fit.a.value);
}

fn power_data(seed: u64, n: usize, noise: f64) -> Vec<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    logspace(1e15, 1e21, n)
        .into_iter()
        .map(|c| (c, (POWER.0 + POWER.1 * c.powf(-POWER.2)) * (noise * normal(&mut rng)).exp()))
        .collect()
}

/// (E, A, alpha) of the synthetic power law: L falls from about 7.4 at 1e15 FLOPs to 2.5 at 1e21.
const POWER: (f64, f64, f64) = (1.8, 1000.0, 0.15);

/// 13 budgets over 1e15..1e21 with 1% noise, five seeds. Tolerances: E within 10%, alpha within 0.03.
#[test]
fn power_law_recovers_parameters_from_noisy_data() {
    for seed in 0..5 {
        let fit = fit_power_law(&power_data(seed, 13, 0.01)).unwrap();
        assert!(fit.converged, "{fit:?}");
        assert!(rel(fit.e.value, POWER.0) < 0.1, "seed {seed}: {fit:?}");
        assert!((fit.alpha.value - POWER.2).abs() < 0.03, "seed {seed}: {fit:?}");
    }
}

/// Coverage study: 100 synthetic data sets (16 budgets, 2% noise), each bootstrapped with 200 resamples; the
/// nominal 95% percentile interval of alpha must cover the truth in 85..100 of them.
#[test]
fn bootstrap_interval_covers_alpha_at_about_its_nominal_rate() {
    let t = Instant::now();
    let mut covered = 0;
    let datasets = 100;
    for seed in 0..datasets {
        let (fit, boot) = fit_power_law_bootstrap(&power_data(1000 + seed, 16, 0.02), 200, seed).unwrap();
        let [lo, hi] = fit.alpha.ci.expect("an interval");
        assert!(lo <= hi);
        assert!(boot.n_failed() < 10, "seed {seed}: {} failed resamples", boot.n_failed());
        if lo <= POWER.2 && POWER.2 <= hi {
            covered += 1;
        }
    }
    let rate = covered as f64 / datasets as f64;
    eprintln!("coverage of alpha: {rate:.2} over {datasets} data sets in {:.1?}", t.elapsed());
    assert!((0.85..=1.0).contains(&rate), "coverage {rate}");
}

#[test]
fn bootstrap_is_seeded_and_recorded_in_the_json() {
    let pts = power_data(7, 12, 0.01);
    let (a, _) = fit_power_law_bootstrap(&pts, 50, 42).unwrap();
    let (b, _) = fit_power_law_bootstrap(&pts, 50, 42).unwrap();
    let (c, _) = fit_power_law_bootstrap(&pts, 50, 43).unwrap();
    assert_eq!(a, b, "same seed, same intervals");
    assert_ne!(a.alpha.ci, c.alpha.ci, "another seed, other intervals");
    let j = serde_json::to_value(&a).unwrap();
    for key in ["E", "A", "alpha"] {
        assert!(j[key]["value"].is_f64() && j[key]["ci"].as_array().map(|v| v.len()) == Some(2), "{j}");
    }
    assert_eq!(j["bootstrap"]["n_resamples"], 50);
    assert_eq!(j["bootstrap"]["seed"], 42);
    assert_eq!(j["bootstrap"]["level"], 0.95);
    assert_eq!(j["converged"], true);
    let plain = serde_json::to_value(fit_power_law(&pts).unwrap()).unwrap();
    assert!(plain.get("bootstrap").is_none() && plain["E"].get("ci").is_none(), "{plain}");
}

#[test]
fn too_few_points_say_how_many_each_law_needs() {
    let err = fit_power_law(&[(1e18, 3.0), (1e19, 2.8)]).unwrap_err();
    assert!(matches!(err, FitError::TooFewPoints { law: Law::Power, got: 2, need: 3, .. }));
    assert!(err.to_string().contains("needs at least 3 points"), "{err}");

    let four: Vec<ChinchillaPoint> =
        (1..=4).map(|i| ChinchillaPoint { params: 1e8 * i as f64, tokens: 1e10, loss: 3.0 }).collect();
    let err = fit_chinchilla(&four).unwrap_err();
    assert!(err.to_string().contains("chinchilla fit needs at least 5 points"), "{err}");

    // One budget with three sizes, one with two: only one usable budget.
    let pts: Vec<IsoflopPoint> = [(1e18, 1e7), (1e18, 2e7), (1e18, 4e7), (1e19, 1e7), (1e19, 3e7)]
        .iter()
        .map(|&(flops, params)| IsoflopPoint { flops, params, loss: 3.0 + (params / 2e7f64).ln().powi(2) })
        .collect();
    let err = fit_isoflop(&pts).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("at least 2 FLOP budgets with at least 3 distinct model sizes each, got 1"), "{msg}");
    assert!(msg.contains("1.000e19 (2 size(s))"), "{msg}");
}

#[test]
fn non_positive_values_are_rejected_with_their_index() {
    let err = fit_power_law(&[(1e18, 3.0), (1e19, 0.0), (1e20, 2.5)]).unwrap_err();
    assert_eq!(err, FitError::NonPositive { index: 1, what: "loss L", value: 0.0 });
    let pts = [IsoflopPoint { flops: 1e18, params: -5.0, loss: 3.0 }];
    assert!(matches!(fit_isoflop(&pts), Err(FitError::NonPositive { index: 0, what: "params N", .. })));
}

#[test]
fn isoflop_warns_about_concave_budgets_and_extrapolated_minima() {
    let mut pts = Vec::new();
    for (c, centre) in [(1e18, 2e7), (1e19, 6e7), (1e20, 2e8)] {
        for n in [centre / 2.0, centre, centre * 2.0] {
            pts.push(IsoflopPoint { flops: c, params: n, loss: 3.0 + (n / centre).ln().powi(2) });
        }
    }
    // A fourth budget whose losses fall with size all the way: its vertex lies beyond the largest size.
    for (n, loss) in [(1e8, 3.0), (2e8, 2.5), (4e8, 2.2)] {
        pts.push(IsoflopPoint { flops: 1e21, params: n, loss });
    }
    // A fifth whose parabola opens downward.
    for (n, loss) in [(1e8, 2.0), (2e8, 2.5), (4e8, 2.0)] {
        pts.push(IsoflopPoint { flops: 1e22, params: n, loss });
    }
    let fit = fit_isoflop(&pts).unwrap();
    assert_eq!(fit.minima.len(), 4);
    assert!(!fit.minima[3].interior);
    let w = fit.warnings.join("\n");
    assert!(w.contains("1.000e22 (parabola opens downward"), "{w}");
    assert!(w.contains("budget 1.000e21: minimum") && w.contains("(extrapolated)"), "{w}");
}
