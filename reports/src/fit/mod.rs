//! Scaling-law fits with bootstrap uncertainty: one file per law, one shared JSON shape.
//!
//! | law | module | model | needs |
//! |---|---|---|---|
//! | [`Law::Power`] | [`power`] | `L(C) = E + A * C^(-alpha)` | 3 points |
//! | [`Law::Isoflop`] | [`isoflop`] | Chinchilla approach 2: per budget a parabola of `L` in `ln N`, its minimum `N*(C)`; `N* = k C^a`, `D* = k' C^b` | 2 budgets with 3 sizes each |
//! | [`Law::Chinchilla`] | [`chinchilla`] | Chinchilla approach 3: `L(N, D) = E + A/N^alpha + B/D^beta` (Huber on log loss, L-BFGS from the paper's grid) | 5 points |
//!
//! [`bootstrap`] resamples the points with replacement and gives a percentile interval for every parameter.
//!
//! ## JSON shape
//! Every fit serialises with its parameter names as keys. A parameter is an [`Estimate`]: its value, and its
//! 95% bootstrap percentile interval when the fit was bootstrapped (the key `ci` is absent otherwise):
//!
//! ```json
//! { "E": {"value": 1.69, "ci": [1.61, 1.77]}, "A": {"value": 406.4, "ci": [...]}, "alpha": {"value": 0.34},
//!   "converged": true, "n_points": 120,
//!   "bootstrap": {"n_resamples": 200, "seed": 0, "level": 0.95, "n_failed": 0, "starts": "..."} }
//! ```
//!
//! `converged: false` is the warning flag of a fit whose optimiser stopped away from a stationary point: its
//! numbers are printed, but marked, never silently. `bootstrap` is absent for a point estimate.

pub mod bootstrap;
pub mod chinchilla;
pub mod isoflop;
mod optim;
pub mod power;

pub use bootstrap::{BootstrapInfo, Resamples};
pub use chinchilla::{fit_chinchilla, fit_chinchilla_bootstrap, ChinchillaFit, ChinchillaPoint};
pub use isoflop::{
    fit_isoflop, fit_isoflop_bootstrap, fit_parabola, IsoflopFit, IsoflopMinimum, IsoflopPoint, Parabola,
};
pub use power::{fit_power_law, fit_power_law_bootstrap, PowerLawFit};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The laws `workbench fit --law` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Law {
    /// Saturating power law in compute, [`power`].
    Power,
    /// Chinchilla approach 2 (isoFLOP parabolas), [`isoflop`].
    Isoflop,
    /// Chinchilla approach 3 (parametric `L(N, D)`), [`chinchilla`].
    Chinchilla,
}

impl Law {
    /// Every law, in CLI order.
    pub const ALL: [Law; 3] = [Law::Power, Law::Isoflop, Law::Chinchilla];

    /// The CLI name (`power`, `isoflop`, `chinchilla`).
    pub fn name(self) -> &'static str {
        match self {
            Law::Power => "power",
            Law::Isoflop => "isoflop",
            Law::Chinchilla => "chinchilla",
        }
    }
}

impl fmt::Display for Law {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown law name; lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown law {0:?}: expected one of power, isoflop, chinchilla")]
pub struct UnknownLaw(pub String);

impl FromStr for Law {
    type Err = UnknownLaw;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        Law::ALL.into_iter().find(|l| l.name() == s).ok_or(UnknownLaw(s))
    }
}

/// One fitted number and, when bootstrapped, its percentile interval `[lo, hi]` (level in [`BootstrapInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<[f64; 2]>,
}

impl Estimate {
    /// A point estimate without an interval.
    pub fn point(value: f64) -> Self {
        Estimate { value, ci: None }
    }
}

impl From<f64> for Estimate {
    fn from(value: f64) -> Self {
        Estimate::point(value)
    }
}

impl fmt::Display for Estimate {
    /// `1.69` or `1.69 [1.61, 1.77]`, four significant digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", sig4(self.value))?;
        if let Some([lo, hi]) = self.ci {
            write!(f, " [{}, {}]", sig4(lo), sig4(hi))?;
        }
        Ok(())
    }
}

/// `x` with four significant digits, in plain or scientific notation by magnitude.
pub fn sig4(x: f64) -> String {
    let m = x.abs();
    if x == 0.0 || !x.is_finite() {
        format!("{x}")
    } else if (1e-3..1e5).contains(&m) {
        let decimals = (3 - m.log10().floor() as i32).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.3e}")
    }
}

/// What every fit offers the bootstrap and the renderers.
pub trait Fitted {
    /// Every fitted number as `(name, estimate)`, in a fixed order that a resample of the same data repeats.
    fn estimates(&self) -> Vec<(String, Estimate)>;
    /// The same estimates, mutable, in the same order (the bootstrap writes the intervals through them).
    fn estimates_mut(&mut self) -> Vec<&mut Estimate>;
    /// False when the optimiser did not reach a stationary point (shown as a warning).
    fn converged(&self) -> bool;
    /// Records how the intervals were made.
    fn set_bootstrap(&mut self, info: BootstrapInfo);
}

/// Why a law could not be fitted. Every message says what the law needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Fewer points than the law has free parameters.
    #[error("a {law} fit needs at least {need} points ({why}), got {got}")]
    TooFewPoints { law: Law, got: usize, need: usize, why: &'static str },
    /// An isoFLOP fit without enough budgets that have enough model sizes.
    #[error(
        "an isoflop fit needs at least {need_budgets} FLOP budgets with at least {need_sizes} distinct model \
         sizes each, got {got} such budget(s){detail}"
    )]
    TooFewBudgets { got: usize, need_budgets: usize, need_sizes: usize, detail: String },
    /// A parabola over too few distinct model sizes.
    #[error("a parabola needs at least {need} distinct model sizes, got {got}")]
    TooFewSizes { got: usize, need: usize },
    /// A value that is zero, negative, NaN or infinite.
    #[error("point {index}: {what} = {value}; it must be positive and finite")]
    NonPositive { index: usize, what: &'static str, value: f64 },
    /// The optimiser failed from every start (not the same as `converged: false`, which still gives numbers).
    #[error("the optimiser failed from every start: {0}")]
    Optimiser(String),
}

/// Checks that every value is positive and finite; `what` names the quantity in the error.
pub(crate) fn check_positive(values: impl IntoIterator<Item = f64>, what: &'static str) -> Result<(), FitError> {
    for (index, value) in values.into_iter().enumerate() {
        if !(value.is_finite() && value > 0.0) {
            return Err(FitError::NonPositive { index, what, value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn law_parses_and_prints() {
        for l in Law::ALL {
            assert_eq!(l.to_string().parse::<Law>().unwrap(), l);
        }
        assert_eq!(" Chinchilla ".parse::<Law>().unwrap(), Law::Chinchilla);
        let e = "kaplan".parse::<Law>().unwrap_err();
        assert!(e.to_string().contains("power, isoflop, chinchilla"), "{e}");
    }

    #[test]
    fn estimate_json_omits_missing_interval() {
        let p = serde_json::to_string(&Estimate::point(1.5)).unwrap();
        assert_eq!(p, r#"{"value":1.5}"#);
        let c = Estimate { value: 1.5, ci: Some([1.0, 2.0]) };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"value":1.5,"ci":[1.0,2.0]}"#);
        assert_eq!(c.to_string(), "1.500 [1.000, 2.000]");
        assert_eq!(sig4(406.43), "406.4");
        assert_eq!(sig4(1.2e9), "1.200e9");
    }
}
