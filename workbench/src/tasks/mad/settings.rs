//! The MAD protocol (Poli et al. 2024, arXiv 2403.17844, §3.1 and appendix; `design/TASKS.md`; reference
//! `mad/configs.py::make_benchmark_mad_configs` and `configs/tasks/*.yml`).
//!
//! For each task, the *settings* are the baseline plus each one-at-a-time change of it ([`MadTaskKind::settings`]).
//! Each candidate architecture is trained on every setting once per (learning rate, weight decay) in
//! [`LEARNING_RATES`] x [`WEIGHT_DECAYS`]; a setting's score is the best test accuracy over that grid; a task's
//! score is the mean over its settings; the MAD score is the mean over the six tasks. Accuracy counts only the
//! positions the task labels (targets other than `IGNORE`).

use std::fmt::Display;

use super::{
    CompressionSpec, FuzzyRecallSpec, InContextRecallSpec, MemorizationSpec, NoisyRecallSpec, SelectiveCopyingSpec,
};
use crate::tasks::TaskSpec;

/// Model width (`d_model`) of every MAD candidate.
pub const WIDTH: usize = 128;
/// Sequences per optimiser step.
pub const BATCH_SIZE: usize = 128;
/// Passes over the training set (the cosine schedule spans them: the reference steps it once per epoch).
pub const EPOCHS: usize = 200;
/// The learning-rate grid (peak learning rates of AdamW with cosine decay).
pub const LEARNING_RATES: [f64; 3] = [1e-4, 5e-4, 1e-3];
/// The weight-decay grid (the reference exempts biases and norm parameters).
pub const WEIGHT_DECAYS: [f64; 2] = [0.0, 0.1];
/// The learning rate the cosine schedule ends at (`min_lr`); the schedule has no warmup.
pub const FINAL_LR: f64 = 1e-6;
/// AdamW `(beta1, beta2)` as MAD's published training settings state; the reference code leaves PyTorch's
/// default `(0.9, 0.999)`.
pub const ADAM_BETAS: (f64, f64) = (0.9, 0.98);
/// The seed of every MAD run (`MADConfig.seed`).
pub const SEED: u64 = 12345;

/// The training-set sizes of the `N` changes (all tasks but memorization).
const TRAIN_EXAMPLES: [usize; 4] = [6400, 3200, 1600, 800];
/// The sequence lengths of the `L` changes of the three recall tasks.
const RECALL_SEQ_LENS: [usize; 3] = [256, 512, 1024];
/// The vocabulary sizes of the `V` changes of in-context, fuzzy recall, selective copying and compression.
const VOCAB_SIZES: [usize; 3] = [32, 64, 128];

/// The six MAD tasks, in TASKS.md's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MadTaskKind {
    InContextRecall,
    FuzzyRecall,
    NoisyRecall,
    SelectiveCopying,
    Compression,
    Memorization,
}

/// One MAD task setting: a short name (`"baseline"`, or the changed key and value, e.g. `"seq_len=512"`) and
/// the full task settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MadSetting {
    /// `"baseline"` or `"<field>=<value>"`.
    pub name: String,
    /// The task settings (MAD's default test set of 1,280 examples).
    pub spec: TaskSpec,
}

/// The settings that change `field` of `base` to each of `values`, alone: `("<field>=<value>", settings)`.
fn vary<S: Clone, T: Copy + Display>(base: &S, field: &str, values: &[T], set: fn(&mut S, T)) -> Vec<(String, S)> {
    let changed = |&v: &T| {
        let mut s = base.clone();
        set(&mut s, v);
        (format!("{field}={v}"), s)
    };
    values.iter().map(changed).collect()
}

/// The baseline, then the given changes, each wrapped into a [`TaskSpec`].
fn settings<S: Clone>(base: S, wrap: fn(S) -> TaskSpec, changes: Vec<Vec<(String, S)>>) -> Vec<MadSetting> {
    let all = std::iter::once(("baseline".to_string(), base)).chain(changes.into_iter().flatten());
    all.map(|(name, s)| MadSetting { name, spec: wrap(s) }).collect()
}

impl MadTaskKind {
    /// The six tasks, in TASKS.md's order.
    pub const ALL: [MadTaskKind; 6] = [
        MadTaskKind::InContextRecall,
        MadTaskKind::FuzzyRecall,
        MadTaskKind::NoisyRecall,
        MadTaskKind::SelectiveCopying,
        MadTaskKind::Compression,
        MadTaskKind::Memorization,
    ];

    /// The YAML kind of the task (`"mad_in_context_recall"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MadTaskKind::InContextRecall => InContextRecallSpec::NAME,
            MadTaskKind::FuzzyRecall => FuzzyRecallSpec::NAME,
            MadTaskKind::NoisyRecall => NoisyRecallSpec::NAME,
            MadTaskKind::SelectiveCopying => SelectiveCopyingSpec::NAME,
            MadTaskKind::Compression => CompressionSpec::NAME,
            MadTaskKind::Memorization => MemorizationSpec::NAME,
        }
    }

    /// The MAD task a task setting belongs to, if any.
    pub fn of(spec: &TaskSpec) -> Option<MadTaskKind> {
        MadTaskKind::ALL.into_iter().find(|k| k.name() == spec.name())
    }

    /// The baseline setting (every field at its default).
    pub fn baseline(self) -> TaskSpec {
        match self {
            MadTaskKind::InContextRecall => TaskSpec::MadInContextRecall(InContextRecallSpec::default()),
            MadTaskKind::FuzzyRecall => TaskSpec::MadFuzzyRecall(FuzzyRecallSpec::default()),
            MadTaskKind::NoisyRecall => TaskSpec::MadNoisyRecall(NoisyRecallSpec::default()),
            MadTaskKind::SelectiveCopying => TaskSpec::MadSelectiveCopying(SelectiveCopyingSpec::default()),
            MadTaskKind::Compression => TaskSpec::MadCompression(CompressionSpec::default()),
            MadTaskKind::Memorization => TaskSpec::MadMemorization(MemorizationSpec::default()),
        }
    }

    /// The baseline, then each one-at-a-time change of TASKS.md's table (the reference's `changes:`), in order.
    /// In-context and fuzzy recall have 11 settings, noisy recall 14, selective copying 13, compression 11 and
    /// memorization 6.
    pub fn settings(self) -> Vec<MadSetting> {
        match self {
            MadTaskKind::InContextRecall => {
                let b = InContextRecallSpec::default();
                let changes = vec![
                    vary(&b, "vocab_size", &VOCAB_SIZES, |s, v| s.vocab_size = v),
                    vary(&b, "seq_len", &RECALL_SEQ_LENS, |s, v| s.seq_len = v),
                    vary(&b, "train_examples", &TRAIN_EXAMPLES, |s, v| s.train_examples = v),
                ];
                settings(b, TaskSpec::MadInContextRecall, changes)
            }
            MadTaskKind::FuzzyRecall => {
                let b = FuzzyRecallSpec::default();
                let changes = vec![
                    vary(&b, "vocab_size", &VOCAB_SIZES, |s, v| s.vocab_size = v),
                    vary(&b, "seq_len", &RECALL_SEQ_LENS, |s, v| s.seq_len = v),
                    vary(&b, "train_examples", &TRAIN_EXAMPLES, |s, v| s.train_examples = v),
                ];
                settings(b, TaskSpec::MadFuzzyRecall, changes)
            }
            MadTaskKind::NoisyRecall => {
                let b = NoisyRecallSpec::default();
                let changes = vec![
                    // 32, 64, 128 content tokens plus the 16 noise tokens.
                    vary(&b, "vocab_size", &[48, 80, 144], |s, v| s.vocab_size = v),
                    vary(&b, "seq_len", &RECALL_SEQ_LENS, |s, v| s.seq_len = v),
                    vary(&b, "train_examples", &TRAIN_EXAMPLES, |s, v| s.train_examples = v),
                    vary(&b, "frac_noise", &[0.4, 0.6, 0.8], |s, v| s.frac_noise = v),
                ];
                settings(b, TaskSpec::MadNoisyRecall, changes)
            }
            MadTaskKind::SelectiveCopying => {
                let b = SelectiveCopyingSpec::default();
                let changes = vec![
                    vary(&b, "vocab_size", &VOCAB_SIZES, |s, v| s.vocab_size = v),
                    vary(&b, "seq_len", &[512, 1024], |s, v| s.seq_len = v),
                    vary(&b, "train_examples", &TRAIN_EXAMPLES, |s, v| s.train_examples = v),
                    vary(&b, "num_tokens_to_copy", &[32, 64, 96], |s, v| s.num_tokens_to_copy = v),
                ];
                settings(b, TaskSpec::MadSelectiveCopying, changes)
            }
            MadTaskKind::Compression => {
                let b = CompressionSpec::default();
                let changes = vec![
                    vary(&b, "vocab_size", &VOCAB_SIZES, |s, v| s.vocab_size = v),
                    vary(&b, "seq_len", &[64, 128, 256], |s, v| s.seq_len = v),
                    vary(&b, "train_examples", &TRAIN_EXAMPLES, |s, v| s.train_examples = v),
                ];
                settings(b, TaskSpec::MadCompression, changes)
            }
            MadTaskKind::Memorization => {
                let b = MemorizationSpec::default();
                let changes = vec![vary(&b, "vocab_size", &[512, 1024, 2048, 4096, 8192], |s, v| s.vocab_size = v)];
                settings(b, TaskSpec::MadMemorization, changes)
            }
        }
    }
}
