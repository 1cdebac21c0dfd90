//! Training tasks: plain, deterministic data generators.
//!
//! A task turns `(settings, seed)` into token batches in row-major `[batch, seq_len]` layout; it knows nothing
//! about tensors (the trainer converts [`Batch`]es). The tasks:
//!
//! - [`mqar`]: multi-query associative recall (Arora et al. 2023, "Zoology", arXiv 2312.04927), the synthetic
//!   recall probe defined in `design/TASKS.md`.
//! - [`mad`]: the six MAD tasks (Poli et al. 2024, arXiv 2403.17844) and the MAD protocol's settings.
//! - [`corpus`]: byte-level language modelling on a memory-mapped text file (vocabulary 256).
//! - [`tokens`]: language modelling on a memory-mapped pre-tokenized file ([`token_file`]: flat uint16/uint32).
//! - [`text`]: language modelling on text files through a `tokenizer.json`, tokenized once ([`prepare`]) into a
//!   token file in the sweep directory.
//!
//! All but MAD compression train a next-token head at every position; [`Task::head`] says which head a task
//! needs ([`TaskHead`]).
//!
//! Key design decision: every random draw comes from a ChaCha8 stream whose seed is a documented hash of
//! `(seed, purpose, index)` (`sub_seed`: `splitmix64(splitmix64(splitmix64(seed) ^ purpose) ^ index)`,
//! then `ChaCha8Rng::seed_from_u64`), and the few draw primitives (bounded integers, unit floats,
//! shuffles) are written out here instead of taken from `rand`'s distributions, whose algorithms may change
//! between `rand` releases. A trial resumed at step `s` therefore sees exactly the batches it would have seen,
//! and a dataset is the same on every machine and every dependency update of `rand`.
//!
//! The YAML/JSON form is [`TaskSpec`], an internally tagged enum (`kind: mqar`, `kind: bytes`,
//! `kind: mad_in_context_recall`, ...) whose variants reject unknown keys.

pub mod corpus;
pub mod mad;
pub mod mqar;
pub mod prepare;
pub mod text;
pub mod token_file;
pub mod tokens;

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use corpus::{BytesSpec, BytesTask};
pub use mad::{
    CompressionSpec, FuzzyRecallSpec, InContextRecallSpec, MadSetting, MadTask, MadTaskKind, MemorizationSpec,
    NoisyRecallSpec, SelectiveCopyingSpec,
};
pub use mqar::{MqarSpec, MqarTask};
pub use text::TextSpec;
pub use token_file::{Dtype, Sidecar, TokenFile};
pub use tokens::{TokensSpec, TokensTask};

/// Target value of a position that carries no loss and no accuracy (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// A batch in row-major `[batch, seq_len]` layout.
///
/// `targets[i]` is the label for the prediction made at `inputs[i]`, or [`IGNORE`] where there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Input tokens, `[batch, seq_len]` row-major.
    pub inputs: Vec<i64>,
    /// Labels, `[batch, seq_len]` row-major; [`IGNORE`] = no loss, no accuracy.
    pub targets: Vec<i64>,
    /// Number of rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
}

impl Batch {
    /// Row `i` as `(inputs, targets)`, each `seq_len` long.
    pub fn row(&self, i: usize) -> (&[i64], &[i64]) {
        let span = i * self.seq_len..(i + 1) * self.seq_len;
        (&self.inputs[span.clone()], &self.targets[span])
    }

    /// Number of labelled (non-[`IGNORE`]) positions.
    pub fn labelled(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// What the model puts on top of its sequence-mixer stack to produce the logits scored against a [`Batch`]'s
/// targets (`[batch, seq_len]`, [`IGNORE`] = not scored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHead {
    /// The language-model head: `logits[b, t] = unembed(h[b, t])` at every position `t` of the row.
    Next,
    /// MAD compression's auto-encoder head (see [`mad::compression`]): the stack's output at the row's last
    /// position, `h[b, L-1]`, is the code; for each decoder position `i in 0..positions`, `x = h[b, L-1] + p_i`
    /// with `p_i` the fixed sin-cos position embedding, then a 2-layer GELU MLP (`Norm -> Linear(d, d) -> GELU`,
    /// twice) and the unembedding give `logits[b, i]`. `positions` equals `seq_len`.
    Compression {
        /// Decoder positions, the length of each target row.
        positions: usize,
    },
}

impl From<TaskHead> for operators::HeadSpec {
    /// The model head ([`operators::head`]) that produces this task's logits.
    fn from(head: TaskHead) -> operators::HeadSpec {
        match head {
            TaskHead::Next => operators::HeadSpec::Next,
            TaskHead::Compression { positions } => operators::HeadSpec::Compression { positions: positions as i64 },
        }
    }
}

/// A data generator, deterministic from `(settings, seed)`.
pub trait Task: Send + Sync {
    /// Short name of the task kind (`"mqar"`, `"bytes"`).
    fn name(&self) -> &'static str;
    /// Number of distinct token ids; every input and label is in `[0, vocab_size)`.
    fn vocab_size(&self) -> usize;
    /// Tokens per row.
    fn seq_len(&self) -> usize;
    /// The head the model needs for this task's targets ([`TaskHead::Next`] unless the task says otherwise).
    fn head(&self) -> TaskHead {
        TaskHead::Next
    }
    /// The training batch for optimiser step `step`: a pure function of (settings, seed, step, batch_size), so a
    /// trial resumed from a checkpoint at step s sees exactly the batches it would have seen.
    fn train_batch(&self, step: u64, batch_size: usize) -> Batch;
    /// The fixed held-out set, split into batches of at most `batch_size` rows (the last one may be smaller).
    ///
    /// # Panics
    /// If `batch_size` is 0.
    fn eval_set(&self, batch_size: usize) -> Vec<Batch>;
}

/// Errors from validating settings or building a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A setting is out of range; `field` is its YAML key.
    #[error("invalid task setting `{field}`: {message}")]
    Invalid {
        /// The YAML key at fault.
        field: String,
        /// What was given and what is valid.
        message: String,
    },
    /// A file could not be opened, inspected or memory-mapped.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (for a missing corpus it says how to fetch it).
        source: std::io::Error,
    },
    /// A data file (token file, sidecar, tokenizer, text) is malformed or does not fit the task's settings.
    #[error("{}: {message}", path.display())]
    Data {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong and, where it helps, what to do.
        message: String,
    },
    /// The corpus is too small for the requested windows in one of its two regions.
    #[error(
        "corpus {} is too small: its {region} region has {region_bytes} of its {file_bytes} {unit}, but needs \
         at least {needed} ({why}); use a larger file, a shorter seq_len, or a different val_fraction",
        path.display()
    )]
    CorpusTooSmall {
        /// The corpus file.
        path: PathBuf,
        /// Total size of the file in bytes.
        file_bytes: u64,
        /// `"train"` or `"validation"`.
        region: &'static str,
        /// Size of that region in bytes.
        region_bytes: u64,
        /// Bytes the region needs.
        needed: u64,
        /// Where `needed` comes from.
        why: String,
        /// What the sizes count: `bytes` or `tokens`.
        unit: &'static str,
    },
}

/// Builds a [`TaskError::Invalid`].
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> TaskError {
    TaskError::Invalid { field: field.to_string(), message: message.into() }
}

/// The settings of a task as written in YAML/JSON: `kind: mqar`, `kind: bytes` or `kind: mad_*`, then that
/// task's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Multi-query associative recall ([`mqar`]).
    Mqar(MqarSpec),
    /// Byte-level language modelling on a text file ([`corpus`]).
    Bytes(BytesSpec),
    /// Language modelling on a pre-tokenized token file ([`tokens`]).
    Tokens(TokensSpec),
    /// Language modelling on text files through a tokenizer ([`text`]).
    Text(TextSpec),
    /// MAD in-context recall ([`mad::recall`]).
    MadInContextRecall(InContextRecallSpec),
    /// MAD fuzzy recall ([`mad::fuzzy`]).
    MadFuzzyRecall(FuzzyRecallSpec),
    /// MAD noisy recall ([`mad::recall`]).
    MadNoisyRecall(NoisyRecallSpec),
    /// MAD selective copying ([`mad::copying`]).
    MadSelectiveCopying(SelectiveCopyingSpec),
    /// MAD compression ([`mad::compression`]; needs [`TaskHead::Compression`]).
    MadCompression(CompressionSpec),
    /// MAD memorization ([`mad::memorization`]).
    MadMemorization(MemorizationSpec),
}

impl TaskSpec {
    /// The task kind as written in YAML: `"mqar"`, `"bytes"`, `"mad_in_context_recall"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::Mqar(_) => mqar::NAME,
            TaskSpec::Bytes(_) => corpus::NAME,
            TaskSpec::Tokens(_) => tokens::NAME,
            TaskSpec::Text(_) => text::NAME,
            TaskSpec::MadInContextRecall(_) => InContextRecallSpec::NAME,
            TaskSpec::MadFuzzyRecall(_) => FuzzyRecallSpec::NAME,
            TaskSpec::MadNoisyRecall(_) => NoisyRecallSpec::NAME,
            TaskSpec::MadSelectiveCopying(_) => SelectiveCopyingSpec::NAME,
            TaskSpec::MadCompression(_) => CompressionSpec::NAME,
            TaskSpec::MadMemorization(_) => MemorizationSpec::NAME,
        }
    }

    /// Checks ranges before any training; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        match self {
            TaskSpec::Mqar(spec) => spec.validate(),
            TaskSpec::Bytes(spec) => spec.validate(),
            TaskSpec::Tokens(spec) => spec.validate(),
            TaskSpec::Text(spec) => spec.validate(),
            TaskSpec::MadInContextRecall(spec) => spec.validate(),
            TaskSpec::MadFuzzyRecall(spec) => spec.validate(),
            TaskSpec::MadNoisyRecall(spec) => spec.validate(),
            TaskSpec::MadSelectiveCopying(spec) => spec.validate(),
            TaskSpec::MadCompression(spec) => spec.validate(),
            TaskSpec::MadMemorization(spec) => spec.validate(),
        }
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        match self {
            TaskSpec::Mqar(spec) => spec.seq_len,
            TaskSpec::Bytes(spec) => spec.seq_len,
            TaskSpec::Tokens(spec) => spec.seq_len,
            TaskSpec::Text(spec) => spec.seq_len,
            TaskSpec::MadInContextRecall(spec) => spec.seq_len,
            TaskSpec::MadFuzzyRecall(spec) => spec.seq_len,
            TaskSpec::MadNoisyRecall(spec) => spec.seq_len,
            TaskSpec::MadSelectiveCopying(spec) => spec.seq_len,
            TaskSpec::MadCompression(spec) => spec.seq_len,
            TaskSpec::MadMemorization(spec) => spec.seq_len,
        }
    }

    /// The same task at another sequence length (a grafted trial's `extend_context`), or why it has none.
    ///
    /// Byte-level language modelling takes any length: its windows are cut from one corpus, so a longer
    /// window is the same data with more context (its corpus must still hold the longer windows, checked when
    /// the task is built). The synthetic tasks refuse: an MQAR or MAD example is laid out for one length (its
    /// key-value pairs, queries and noise are placed across the whole row, and its test set is drawn against
    /// that training set), so another length is another task, not more context for the same one.
    pub fn with_seq_len(&self, seq_len: usize) -> Result<TaskSpec, String> {
        match self {
            TaskSpec::Bytes(spec) => {
                let t = TaskSpec::Bytes(BytesSpec { seq_len, ..spec.clone() });
                t.validate().map_err(|e| e.to_string())?;
                Ok(t)
            }
            other => Err(format!(
                "the task `{}` cannot change its sequence length: its examples are generated for one seq_len \
                 ({}), so a longer one is a different task; use a language-modelling task (`kind: bytes`)",
                other.name(),
                other.seq_len()
            )),
        }
    }

    /// Number of distinct token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            TaskSpec::Mqar(spec) => spec.vocab_size,
            TaskSpec::Bytes(_) => corpus::VOCAB_SIZE,
            TaskSpec::Tokens(spec) => spec.vocab_size,
            TaskSpec::Text(spec) => spec.vocab_size,
            TaskSpec::MadInContextRecall(spec) => spec.vocab_size,
            TaskSpec::MadFuzzyRecall(spec) => spec.vocab_size,
            TaskSpec::MadNoisyRecall(spec) => spec.vocab_size,
            TaskSpec::MadSelectiveCopying(spec) => spec.vocab_size,
            TaskSpec::MadCompression(spec) => spec.vocab_size,
            TaskSpec::MadMemorization(spec) => spec.vocab_size,
        }
    }

    /// The settings that tell this task's variants apart in one report (`TrialResult::task_params`): MQAR's
    /// `seq_len`, `kv_pairs` and `vocab_size`, the axes of a Zoology-style sweep. Other kinds return none: a
    /// sweep has one variant of each, and MAD settings are reported by `workbench mad` itself.
    pub fn variant_params(&self) -> std::collections::BTreeMap<String, u64> {
        match self {
            TaskSpec::Mqar(spec) => {
                [("seq_len", spec.seq_len), ("kv_pairs", spec.kv_pairs), ("vocab_size", spec.vocab_size)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v as u64))
                    .collect()
            }
            _ => Default::default(),
        }
    }

    /// The head the model needs (known before the task is built, e.g. to size the model and count its FLOPs).
    pub fn head(&self) -> TaskHead {
        match self {
            TaskSpec::MadCompression(spec) => spec.head(),
            _ => TaskHead::Next,
        }
    }

    /// The data files checked before any training, without tokenizing anything: `bytes` and `tokens` open and
    /// check their files (length, ids, room for the windows); `text` loads its tokenizer and checks its vocabulary
    /// and files. Errors name the file.
    pub fn check_files(&self) -> Result<(), TaskError> {
        match self {
            TaskSpec::Bytes(spec) => BytesTask::open(spec.clone(), 0).map(drop),
            TaskSpec::Tokens(spec) => TokensTask::open(spec, 0).map(drop),
            TaskSpec::Text(spec) => spec.check().map(drop),
            _ => Ok(()),
        }
    }

    /// Validates, then builds the generator (MQAR and MAD draw their test sets; bytes and tokens memory-map their
    /// files, and their errors name the file). `data_dir` holds the `text` task's tokenized cache (the sweep's
    /// `DIR/data`).
    pub fn build_in(&self, seed: u64, data_dir: &Path) -> Result<Box<dyn Task>, TaskError> {
        Ok(match self {
            TaskSpec::Mqar(spec) => Box::new(MqarTask::new(spec.clone(), seed)?),
            TaskSpec::Bytes(spec) => Box::new(BytesTask::open(spec.clone(), seed)?),
            TaskSpec::Tokens(spec) => Box::new(TokensTask::open(spec, seed)?),
            TaskSpec::Text(spec) => Box::new(spec.open(seed, data_dir)?),
            TaskSpec::MadInContextRecall(spec) => Box::new(spec.build(seed)?),
            TaskSpec::MadFuzzyRecall(spec) => Box::new(spec.build(seed)?),
            TaskSpec::MadNoisyRecall(spec) => Box::new(spec.build(seed)?),
            TaskSpec::MadSelectiveCopying(spec) => Box::new(spec.build(seed)?),
            TaskSpec::MadCompression(spec) => Box::new(spec.build(seed)?),
            TaskSpec::MadMemorization(spec) => Box::new(spec.build(seed)?),
        })
    }

    /// [`TaskSpec::build_in`] with the `text` cache in the system's temp folder (tests, tools).
    pub fn build(&self, seed: u64) -> Result<Box<dyn Task>, TaskError> {
        self.build_in(seed, &std::env::temp_dir().join("workbench-text-cache"))
    }
}

/// What a random stream is for; the discriminant enters [`sub_seed`], so never renumber these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// MQAR training example `index`.
    MqarTrain = 1,
    /// MQAR test example `index` (including its redraws after a collision with the training set).
    MqarTest = 2,
    /// The order in which MQAR epoch `index` visits the training set.
    MqarOrder = 3,
    /// The window offsets of byte-level training step `index`.
    BytesTrain = 4,
    /// The window offsets of token-file (and tokenized text) training step `index`.
    TokensTrain = 5,
    /// MAD training example `index` (any of the six tasks).
    MadTrain = 10,
    /// MAD test example `index` (including its redraws after a collision with the training set).
    MadTest = 11,
    /// The order in which MAD epoch `index` visits the training set.
    MadOrder = 12,
    /// MAD memorization's global key->value map (`index` 0).
    MadMap = 13,
}

/// SplitMix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mixer.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of sub-stream `(seed, purpose, index)`: `splitmix64(splitmix64(splitmix64(seed) ^ purpose) ^ index)`.
pub(crate) fn sub_seed(seed: u64, purpose: Stream, index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ purpose as u64) ^ index)
}

/// A ChaCha8 generator for sub-stream `(seed, purpose, index)`, seeded with `seed_from_u64(sub_seed(..))`.
pub(crate) fn stream(seed: u64, purpose: Stream, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(sub_seed(seed, purpose, index))
}

/// A uniform integer in `[0, n)`, `n >= 1`, by Lemire's multiply-and-reject method (unbiased).
pub(crate) fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    debug_assert!(n > 0, "below(0)");
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

/// A uniform float in `(0, 1]` with 53 random bits.
pub(crate) fn unit_open0(rng: &mut impl RngCore) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fisher-Yates shuffle driven by [`below`].
pub(crate) fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_json_accepts_kind_and_defaults() {
        let spec: TaskSpec = serde_json::from_str(r#"{"kind": "mqar", "seq_len": 128, "kv_pairs": 16}"#).unwrap();
        let TaskSpec::Mqar(m) = &spec else { panic!("wrong variant: {spec:?}") };
        assert_eq!((m.seq_len, m.kv_pairs, m.vocab_size), (128, 16, 8192));
        assert_eq!(spec.name(), "mqar");
        let spec: TaskSpec = serde_json::from_str(r#"{"kind": "bytes"}"#).unwrap();
        assert_eq!(spec, TaskSpec::Bytes(BytesSpec::default()));
        assert_eq!((spec.name(), spec.vocab_size(), spec.seq_len()), ("bytes", 256, 256));
    }

    #[test]
    fn spec_json_rejects_unknown_key_and_kind() {
        let err = serde_json::from_str::<TaskSpec>(r#"{"kind": "mqar", "sequence_len": 128}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `sequence_len`"), "{err}");
        let err = serde_json::from_str::<TaskSpec>(r#"{"kind": "bytes", "path": "x", "seqlen": 8}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `seqlen`"), "{err}");
        let err = serde_json::from_str::<TaskSpec>(r#"{"kind": "mad", "seq_len": 128}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `mad`"), "{err}");
        assert!(serde_json::from_str::<TaskSpec>(r#"{"seq_len": 128}"#).is_err());
    }

    #[test]
    fn only_bytes_changes_its_length() {
        let bytes = TaskSpec::Bytes(BytesSpec::default());
        assert_eq!(bytes.with_seq_len(512).unwrap().seq_len(), 512);
        assert!(bytes.with_seq_len(0).unwrap_err().contains("seq_len"));
        let err = TaskSpec::Mqar(MqarSpec::default()).with_seq_len(512).unwrap_err();
        assert!(err.contains("`mqar` cannot change its sequence length"), "{err}");
    }

    #[test]
    fn spec_json_round_trips() {
        for spec in [TaskSpec::Mqar(MqarSpec::default()), TaskSpec::Bytes(BytesSpec::default())] {
            let text = serde_json::to_string(&spec).unwrap();
            assert!(text.contains(&format!(r#""kind":"{}""#, spec.name())), "{text}");
            assert_eq!(serde_json::from_str::<TaskSpec>(&text).unwrap(), spec);
        }
    }

    #[test]
    fn sub_streams_are_stable_and_distinct() {
        // SplitMix64 reference value: the first output of the generator seeded with 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let a = sub_seed(7, Stream::MqarTrain, 0);
        assert_eq!(a, sub_seed(7, Stream::MqarTrain, 0));
        assert_ne!(a, sub_seed(7, Stream::MqarTest, 0));
        assert_ne!(a, sub_seed(7, Stream::MqarTrain, 1));
        assert_ne!(a, sub_seed(8, Stream::MqarTrain, 0));
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = stream(1, Stream::MqarTrain, 0);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[below(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(below(&mut rng, 1), 0);
        let u = unit_open0(&mut rng);
        assert!(u > 0.0 && u <= 1.0);
    }
}
