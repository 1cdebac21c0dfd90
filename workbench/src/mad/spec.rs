//! The `mad:` section of a space file: how `workbench mad` runs the protocol on the space's candidates. Every key
//! is optional; the defaults are the published protocol (`tasks::mad::settings`), and the command-line flags
//! `--baseline-only`, `--epochs` and `--train-fraction` override the section.
//!
//! ```yaml
//! mad:
//!   epochs: 200                 # passes over each setting's training set
//!   baseline_only: false        # true: each task's baseline setting only (6 settings instead of 66)
//!   train_fraction: 1.0         # scale the training sets (memorization's 256 facts are kept)
//!   test_examples: 1280         # test set per setting
//!   tasks: [mad_in_context_recall, mad_fuzzy_recall, mad_noisy_recall,
//!           mad_selective_copying, mad_compression, mad_memorization]
//!   candidates: [transformer]   # a subset of the space's candidates (default: all)
//!   d_model: 128                # replaces every candidate's d_model (default: the candidates' own)
//!   learning_rates: [1.0e-4, 5.0e-4, 1.0e-3]
//!   weight_decays: [0.0, 0.1]
//!   eval_points: 4              # test-set evaluations (and checkpoints) per trial; the last one is scored
//! ```

use crate::tasks::mad::settings::{self, MadTaskKind};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A MAD task named by its YAML kind (`mad_compression`); a misspelling gets the closest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadTaskName(pub MadTaskKind);

impl<'de> Deserialize<'de> for MadTaskName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(k) = MadTaskKind::ALL.into_iter().find(|k| k.name() == s) {
            return Ok(MadTaskName(k));
        }
        let names: Vec<&str> = MadTaskKind::ALL.iter().map(|k| k.name()).collect();
        Err(de::Error::custom(format!(
            "unknown MAD task `{s}`{}; the tasks: {}",
            closest(&s, &names),
            names.join(", ")
        )))
    }
}

impl Serialize for MadTaskName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// ` (did you mean `x`?)` for the names closest to `name`, or nothing.
pub(crate) fn closest(name: &str, names: &[&str]) -> String {
    let mut scored: Vec<(f64, &str)> =
        names.iter().map(|n| (strsim::jaro_winkler(name, n), *n)).filter(|(s, _)| *s > 0.7).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    match scored.first() {
        Some((_, n)) => format!(" (did you mean `{n}`?)"),
        None => String::new(),
    }
}

/// The `mad:` section (see the module docs); defaults are the published protocol.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MadSpec {
    /// Passes over each setting's training set.
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    /// Only each task's baseline setting.
    #[serde(default)]
    pub baseline_only: bool,
    /// Every training set but memorization's is scaled by this, in (0, 1].
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    /// Test examples of every setting.
    #[serde(default = "default_test_examples")]
    pub test_examples: usize,
    /// The tasks, by kind.
    #[serde(default = "default_tasks")]
    pub tasks: Vec<MadTaskName>,
    /// The candidates of the space to run, by name (default: all of them).
    #[serde(default)]
    pub candidates: Option<Vec<String>>,
    /// Width of every candidate, replacing the candidates' `d_model`.
    #[serde(default)]
    pub d_model: Option<i64>,
    /// Peak learning rates of the grid.
    #[serde(default = "default_learning_rates")]
    pub learning_rates: Vec<f64>,
    /// Weight decays of the grid.
    #[serde(default = "default_weight_decays")]
    pub weight_decays: Vec<f64>,
    /// Test-set evaluations (and checkpoints) per trial, evenly spaced; the last, at the end, is scored.
    #[serde(default = "default_eval_points")]
    pub eval_points: usize,
}

/// The protocol's 200 epochs.
pub fn default_epochs() -> u64 {
    settings::EPOCHS as u64
}
/// 1: the published training-set sizes.
pub fn default_train_fraction() -> f64 {
    1.0
}
/// The protocol's 1,280 test examples.
pub fn default_test_examples() -> usize {
    crate::tasks::mad::default_test_examples()
}
/// All six tasks.
pub fn default_tasks() -> Vec<MadTaskName> {
    MadTaskKind::ALL.into_iter().map(MadTaskName).collect()
}
/// The protocol's learning rates {1e-4, 5e-4, 1e-3}.
pub fn default_learning_rates() -> Vec<f64> {
    settings::LEARNING_RATES.to_vec()
}
/// The protocol's weight decays {0, 0.1}.
pub fn default_weight_decays() -> Vec<f64> {
    settings::WEIGHT_DECAYS.to_vec()
}
/// 4 evaluations: enough checkpoints to resume a long trial, cheap next to training (the test set is a tenth of
/// the training set, and evaluation is a third of a training step's cost per example).
pub fn default_eval_points() -> usize {
    4
}

impl Default for MadSpec {
    fn default() -> Self {
        MadSpec {
            epochs: default_epochs(),
            baseline_only: false,
            train_fraction: default_train_fraction(),
            test_examples: default_test_examples(),
            tasks: default_tasks(),
            candidates: None,
            d_model: None,
            learning_rates: default_learning_rates(),
            weight_decays: default_weight_decays(),
            eval_points: default_eval_points(),
        }
    }
}

/// Command-line overrides of the section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MadOverrides {
    pub baseline_only: bool,
    pub epochs: Option<u64>,
    pub train_fraction: Option<f64>,
}

impl MadSpec {
    /// The section with the command line's overrides applied.
    pub fn with(mut self, o: &MadOverrides) -> MadSpec {
        self.baseline_only |= o.baseline_only;
        self.epochs = o.epochs.unwrap_or(self.epochs);
        self.train_fraction = o.train_fraction.unwrap_or(self.train_fraction);
        self
    }

    /// `Err((key, message))` for a value out of range (the key is the section's, for the error's line).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.epochs < 1 {
            return Err(("epochs", format!("must be at least 1, got {}", self.epochs)));
        }
        if !(self.train_fraction > 0.0 && self.train_fraction <= 1.0) {
            return Err(("train_fraction", format!("must be in (0, 1], got {}", self.train_fraction)));
        }
        if self.test_examples < 1 {
            return Err(("test_examples", "must be at least 1".into()));
        }
        if self.tasks.is_empty() {
            return Err(("tasks", "is empty; name at least one MAD task".into()));
        }
        if let Some(t) = self.tasks.iter().enumerate().find(|(i, t)| self.tasks[..*i].contains(t)) {
            return Err(("tasks", format!("`{}` is listed twice", t.1 .0.name())));
        }
        if let Some(d) = self.d_model.filter(|&d| d < 1) {
            return Err(("d_model", format!("must be a positive integer, got {d}")));
        }
        if self.learning_rates.is_empty() || self.learning_rates.iter().any(|&l| !(l > 0.0 && l.is_finite())) {
            return Err((
                "learning_rates",
                format!("must be a non-empty list of positive numbers, got {:?}", self.learning_rates),
            ));
        }
        if self.learning_rates.iter().any(|&l| l < settings::FINAL_LR) {
            return Err((
                "learning_rates",
                format!("every learning rate must be at least the schedule's final {:e}", settings::FINAL_LR),
            ));
        }
        if self.weight_decays.is_empty() || self.weight_decays.iter().any(|&w| !(0.0..=10.0).contains(&w)) {
            return Err((
                "weight_decays",
                format!("must be a non-empty list of numbers in [0, 10], got {:?}", self.weight_decays),
            ));
        }
        if self.eval_points < 1 {
            return Err(("eval_points", "must be at least 1".into()));
        }
        Ok(())
    }
}
