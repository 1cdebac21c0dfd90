//! Language modelling on a pre-tokenized token file ([`token_file`](super::token_file): flat little-endian
//! `uint16`/`uint32` ids, nanoGPT's `train.bin` or `workbench data prepare`'s output).
//!
//! ```yaml
//! - kind: tokens
//!   path: data/owt/train.bin
//!   dtype: uint16          # required: the file has no header
//!   vocab_size: 50304      # required: every id must be below it (checked before training)
//!   val_path: data/owt/val.bin   # optional; without it the last val_fraction of `path` is held out
//!   seq_len: 256
//! ```
//!
//! With `n` tokens in the training file:
//!
//! - split: with `val_path`, training windows come from the whole of `path` and validation windows from the
//!   whole of `val_path`; without it, training uses tokens `[0, floor(n * (1 - val_fraction)))` and
//!   validation the rest. No window crosses the boundary, so no token is in both.
//! - training step `s`: `batch_size` windows of `seq_len + 1` tokens whose starts are uniform over the training
//!   region, drawn from sub-stream `(seed, TokensTrain, s)`: a pure function of (settings, seed, step), so a
//!   resumed trial sees the same batches. Windows are read straight from the map.
//! - held-out set: `eval_sequences` non-overlapping windows evenly spaced across the validation region, the same
//!   for every seed.
//! - each window `w` gives `inputs = w[..seq_len]`, `targets = w[1..]`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::token_file::{Dtype, TokenFile};
use super::{below, invalid, stream, Batch, Stream, Task, TaskError};

/// The task kind as written in YAML.
pub(crate) const NAME: &str = "tokens";

/// The YAML/JSON settings of language modelling on a token file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSpec {
    /// The token file, relative to the working directory.
    pub path: String,
    /// The width of each id on disk (`uint16` or `uint32`).
    pub dtype: Dtype,
    /// Number of token ids the model embeds; every id in the file must be below it.
    pub vocab_size: usize,
    /// Tokens per row.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// A separate validation token file of the same dtype (nanoGPT's `val.bin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_path: Option<String>,
    /// Without `val_path`: the fraction of `path`, taken from its end, held out (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// Number of validation windows.
    #[serde(default = "default_eval_sequences")]
    pub eval_sequences: usize,
}

/// 256 tokens: about a paragraph of English with a BPE tokenizer.
pub fn default_seq_len() -> usize {
    256
}
/// 5% held out, as for `bytes`.
pub fn default_val_fraction() -> f64 {
    0.05
}
/// 64 windows: a stable loss estimate that costs a few forward passes.
pub fn default_eval_sequences() -> usize {
    64
}

impl TokensSpec {
    /// Checks every range without touching the files; the error names the field.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.path.is_empty() {
            return Err(invalid("path", "must name a token file, e.g. data/corpus.bin"));
        }
        if self.vocab_size < 2 {
            return Err(invalid("vocab_size", format!("must be at least 2; got {}", self.vocab_size)));
        }
        if self.vocab_size as u64 > self.dtype.max_vocab() {
            let msg = format!(
                "{} does not fit dtype {} (at most {})",
                self.vocab_size,
                self.dtype.name(),
                self.dtype.max_vocab()
            );
            return Err(invalid("vocab_size", msg));
        }
        if self.seq_len == 0 {
            return Err(invalid("seq_len", "must be at least 1"));
        }
        match (&self.val_path, self.val_fraction) {
            (Some(_), Some(_)) => {
                return Err(invalid("val_fraction", "give either val_path (a separate file) or val_fraction, not both"))
            }
            (Some(p), None) if p.is_empty() => return Err(invalid("val_path", "must name a token file")),
            (None, Some(f)) if !(f > 0.0 && f < 1.0) => {
                return Err(invalid("val_fraction", format!("must be strictly between 0 and 1; got {f}")))
            }
            _ => {}
        }
        if self.eval_sequences == 0 {
            return Err(invalid("eval_sequences", "must be at least 1"));
        }
        Ok(())
    }
}

/// Where the validation windows are read from.
enum Validation {
    /// The tail of the training file (from `train_tokens` on).
    Tail,
    /// A file of its own.
    File(TokenFile),
}

/// The generator: training windows from one mapped file, validation windows from its tail or another file.
pub struct TokensTask {
    name: &'static str,
    seq_len: usize,
    vocab_size: usize,
    seed: u64,
    train: TokenFile,
    /// Tokens `[0, train_tokens)` of `train` are the training region.
    train_tokens: usize,
    validation: Validation,
    /// Start of each validation window, ascending.
    eval_offsets: Vec<usize>,
}

impl TokensTask {
    /// Validates `spec`, maps and checks the file(s) (length, ids) and that both regions hold their windows.
    pub fn open(spec: &TokensSpec, seed: u64) -> Result<TokensTask, TaskError> {
        spec.validate()?;
        let train = TokenFile::open(Path::new(&spec.path), spec.dtype, spec.vocab_size as u64)?;
        let val = match &spec.val_path {
            Some(p) => Some(TokenFile::open(Path::new(p), spec.dtype, spec.vocab_size as u64)?),
            None => None,
        };
        let fraction = spec.val_fraction.unwrap_or_else(default_val_fraction);
        TokensTask::from_files(NAME, train, val, fraction, spec.seq_len, spec.vocab_size, spec.eval_sequences, seed)
    }

    /// The task over already-checked files (the `text` task builds one over its tokenized cache).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_files(
        name: &'static str,
        train: TokenFile,
        val: Option<TokenFile>,
        val_fraction: f64,
        seq_len: usize,
        vocab_size: usize,
        eval_sequences: usize,
        seed: u64,
    ) -> Result<TokensTask, TaskError> {
        let window = seq_len + 1;
        let n = train.len();
        let train_tokens = match val {
            Some(_) => n,
            None => ((n as f64 * (1.0 - val_fraction)).floor() as usize).min(n),
        };
        let too_small = |path: &Path, file_tokens: usize, region, region_tokens: usize, needed: usize, why: String| {
            TaskError::CorpusTooSmall {
                path: path.to_path_buf(),
                file_bytes: file_tokens as u64,
                region,
                region_bytes: region_tokens as u64,
                needed: needed as u64,
                why,
                unit: "tokens",
            }
        };
        if train_tokens < window {
            return Err(too_small(
                train.path(),
                n,
                "train",
                train_tokens,
                window,
                format!("one window of seq_len + 1 = {window} tokens"),
            ));
        }
        let (val_start, val_end, val_file) = match &val {
            Some(v) => (0, v.len(), v),
            None => (train_tokens, n, &train),
        };
        let needed = eval_sequences * window;
        if val_end - val_start < needed {
            let why =
                format!("eval_sequences = {eval_sequences} non-overlapping windows of seq_len + 1 = {window} tokens");
            return Err(too_small(val_file.path(), val_file.len(), "validation", val_end - val_start, needed, why));
        }
        // Evenly spaced starts; consecutive ones differ by at least floor(span / (k - 1)) >= window because the
        // region holds k windows, so they never overlap (as in `corpus`).
        let (k, span) = (eval_sequences, val_end - val_start - window);
        let eval_offsets = (0..k)
            .map(|i| val_start + if k == 1 { 0 } else { (i as u128 * span as u128 / (k as u128 - 1)) as usize })
            .collect();
        let validation = match val {
            Some(v) => Validation::File(v),
            None => Validation::Tail,
        };
        Ok(TokensTask { name, seq_len, vocab_size, seed, train, train_tokens, validation, eval_offsets })
    }

    /// Training window starts for `step`, uniform over `[0, train_tokens - seq_len - 1]`.
    pub(crate) fn train_offsets(&self, step: u64, batch_size: usize) -> Vec<usize> {
        let mut rng = stream(self.seed, Stream::TokensTrain, step);
        let choices = (self.train_tokens - self.seq_len) as u64;
        (0..batch_size).map(|_| below(&mut rng, choices) as usize).collect()
    }

    /// The first token of the validation region of the training file (its length with a separate file).
    #[cfg(test)]
    pub(crate) fn train_tokens(&self) -> usize {
        self.train_tokens
    }

    /// A batch of the windows of `file` starting at `offsets`.
    fn windows(&self, file: &TokenFile, offsets: &[usize]) -> Batch {
        let l = self.seq_len;
        let mut inputs = Vec::with_capacity(offsets.len() * l);
        let mut targets = Vec::with_capacity(offsets.len() * l);
        for &start in offsets {
            file.extend(start, l, &mut inputs);
            file.extend(start + 1, l, &mut targets);
        }
        Batch { inputs, targets, batch: offsets.len(), seq_len: l }
    }
}

impl Task for TokensTask {
    fn name(&self) -> &'static str {
        self.name
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn train_batch(&self, step: u64, batch_size: usize) -> Batch {
        self.windows(&self.train, &self.train_offsets(step, batch_size))
    }

    fn eval_set(&self, batch_size: usize) -> Vec<Batch> {
        assert!(batch_size > 0, "eval_set: batch_size must be at least 1");
        let file = match &self.validation {
            Validation::Tail => &self.train,
            Validation::File(f) => f,
        };
        self.eval_offsets.chunks(batch_size).map(|offsets| self.windows(file, offsets)).collect()
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
