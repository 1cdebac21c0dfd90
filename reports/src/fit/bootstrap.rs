//! Bootstrap confidence intervals: refit on resampled data, read off percentile intervals.
//!
//! A resample draws as many points as the data has, with replacement (the isoFLOP fit draws within each FLOP
//! budget, so every resample keeps the design's budgets). Each law is refitted on every resample; the interval
//! of a parameter is the (2.5%, 97.5%) percentile pair of its refitted values (the percentile bootstrap, Efron &
//! Tibshirani 1993, ch. 13), with numpy's default linear interpolation between order statistics.
//!
//! Resample `i` draws from its own ChaCha8 stream (`seed`, stream `i`), so the intervals depend only on the data,
//! `n_resamples` and `seed`, never on how the resamples are split over threads. A resample whose fit fails or
//! does not converge is left out and counted in `n_failed`; so is a resample with fewer
//! distinct points than the law has parameters (it does not identify the law: with duplicates, a 3-point power
//! law through 2 distinct budgets is any of a family of curves). With very few points most resamples fail this
//! way, and the intervals, from the few that remain, say little: `n_failed` is there to show it.

use super::{FitError, Fitted};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Coverage of the intervals.
pub const LEVEL: f64 = 0.95;

/// How the intervals of a fit were made (serialised as its `bootstrap` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInfo {
    /// Resamples drawn (including failed ones).
    pub n_resamples: usize,
    /// Seed of the ChaCha8 generator (resample `i` uses stream `i`).
    pub seed: u64,
    /// Nominal coverage of every interval (0.95: the 2.5% and 97.5% percentiles).
    pub level: f64,
    /// Resamples whose fit failed or did not converge; the intervals come from the others.
    pub n_failed: usize,
    /// What was resampled.
    pub resampling: String,
    /// How each resample's optimiser was started (the laws fitted in closed form say so).
    pub starts: String,
}

/// The refitted laws of a bootstrap (successful resamples only, in resample order).
#[derive(Debug, Clone)]
pub struct Resamples<T> {
    pub fits: Vec<T>,
    pub n_resamples: usize,
    pub seed: u64,
}

impl<T> Resamples<T> {
    /// Resamples left out because their fit failed.
    pub fn n_failed(&self) -> usize {
        self.n_resamples - self.fits.len()
    }

    /// The percentile interval at [`LEVEL`] of any quantity derived from a fit (a prediction, an optimum),
    /// over the resamples where it is finite; `None` with fewer than two such resamples.
    pub fn interval(&self, f: impl Fn(&T) -> f64) -> Option<[f64; 2]> {
        percentile_interval(self.fits.iter().map(f).collect())
    }
}

impl<T: Fitted> Resamples<T> {
    /// Writes the interval of every estimate into `fit` and records the settings in its `bootstrap` key.
    /// Estimates are matched by position (see [`Fitted::estimates`]).
    pub fn attach_to(&self, fit: &mut T, resampling: &str, starts: &str) {
        let values: Vec<Vec<f64>> =
            self.fits.iter().map(|f| f.estimates().into_iter().map(|(_, e)| e.value).collect()).collect();
        for (j, est) in fit.estimates_mut().into_iter().enumerate() {
            est.ci = percentile_interval(values.iter().filter_map(|v| v.get(j).copied()).collect());
        }
        fit.set_bootstrap(BootstrapInfo {
            n_resamples: self.n_resamples,
            seed: self.seed,
            level: LEVEL,
            n_failed: self.n_failed(),
            resampling: resampling.to_string(),
            starts: starts.to_string(),
        });
    }
}

/// Refits `n_resamples` times: `draw_fit` gets resample `i`'s generator, draws the resample and fits it.
/// Runs on every core; the outcome is the same for any number of threads.
pub fn resample_fits<T, F>(n_resamples: usize, seed: u64, draw_fit: F) -> Resamples<T>
where
    T: Fitted + Send,
    F: Fn(&mut ChaCha8Rng) -> Result<T, FitError> + Sync,
{
    let one = |i: usize| -> Option<T> {
        let mut rng = rng_for(seed, i);
        draw_fit(&mut rng).ok().filter(|f| f.converged())
    };
    let threads = super::optim::workers(n_resamples);
    let fits: Vec<T> = if threads <= 1 {
        (0..n_resamples).filter_map(one).collect()
    } else {
        let size = n_resamples.div_ceil(threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let one = &one;
                    sc.spawn(move || (t * size..((t + 1) * size).min(n_resamples)).filter_map(one).collect::<Vec<T>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("a bootstrap worker panicked")).collect()
        })
    };
    Resamples { fits, n_resamples, seed }
}

/// The generator of resample `i`: ChaCha8 seeded with `seed`, on stream `i`.
pub fn rng_for(seed: u64, i: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i as u64);
    rng
}

/// `n` indices drawn uniformly from `0..n` with replacement.
pub fn with_replacement(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// For each group of indices, as many indices drawn from that group with replacement (a stratified resample).
pub fn within_groups(groups: &[Vec<usize>], rng: &mut impl Rng) -> Vec<usize> {
    groups.iter().flat_map(|g| with_replacement(g.len(), rng).into_iter().map(|k| g[k]).collect::<Vec<_>>()).collect()
}

/// The percentile interval at [`LEVEL`] of the finite values in `v`; `None` with fewer than two.
pub fn percentile_interval(mut v: Vec<f64>) -> Option<[f64; 2]> {
    v.retain(|x| x.is_finite());
    if v.len() < 2 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let tail = (1.0 - LEVEL) / 2.0;
    Some([percentile(&v, tail), percentile(&v, 1.0 - tail)])
}

/// The `q` quantile of ascending `sorted` (non-empty), interpolating linearly between order statistics.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(lo + 1) {
        Some(next) => sorted[lo] + frac * (next - sorted[lo]),
        None => sorted[lo],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.025), 1.1);
        assert!((percentile(&v, 0.975) - 4.9).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.3), 7.0);
        assert_eq!(percentile_interval(vec![f64::NAN, 1.0]), None);
    }

    #[test]
    fn resamples_have_their_own_streams() {
        let a = with_replacement(20, &mut rng_for(3, 0));
        assert_eq!(a, with_replacement(20, &mut rng_for(3, 0)));
        assert_ne!(a, with_replacement(20, &mut rng_for(3, 1)));
        assert_ne!(a, with_replacement(20, &mut rng_for(4, 0)));
        assert!(a.iter().all(|&i| i < 20));
        let groups = vec![vec![0, 1, 2], vec![5, 9]];
        let s = within_groups(&groups, &mut rng_for(0, 0));
        assert_eq!(s.len(), 5);
        assert!(s[..3].iter().all(|i| *i <= 2) && s[3..].iter().all(|i| *i == 5 || *i == 9), "{s:?}");
    }
}
