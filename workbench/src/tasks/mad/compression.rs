//! MAD compression (`mad_compression`; Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`).
//!
//! With `V = vocab_size` and `L = seq_len`: the inputs are `L - 1` tokens drawn uniformly from `[0, V - 1)`
//! with replacement, then the compression token `V - 1` at position `L - 1`. The model is an auto-encoder
//! ([`TaskHead::Compression`]): the sequence-mixer stack reads the whole row, its output at the last position
//! (the compression token) is the code, and a decoder must reconstruct every token from that code alone.
//!
//! Target layout, `[batch, L]` like the inputs but indexed by *decoder* position: `targets[b, i]` is the
//! token at input position `i` for `i < L - 1`, and [`IGNORE`] at `i = L - 1` (the compression token, the
//! same in every example).
//!
//! The decoder of the MAD reference (`mad/model/auto_encoder.py`, `global_pool = 'last'`), for width `d`:
//! `x_i = h_{L-1} + p_i` for every decoder position `i in 0..L`, where `h_{L-1}` is the stack's output at the
//! compression token and `p_i` the fixed fairseq sin-cos embedding (`posemb_sincos_1d`: with `m = d/2` and
//! `w_k = 10000^(-k / (m - 1))`, `p_i = [sin(i w_0) .. sin(i w_{m-1}), cos(i w_0) .. cos(i w_{m-1})]`); then
//! `Norm -> Linear(d, d) -> GELU -> Norm -> Linear(d, d) -> GELU` (the 2-layer non-expanding MLP) and the
//! unembedding `Norm -> Linear(d, V)`, giving `logits[b, i]`; `Norm` is the model's norm (LayerNorm in the
//! reference's `MADModelConfig`). Loss: cross-entropy of `logits[b, i]` against `targets[b, i]`.
//!
//! Differences from the reference (`generate_compression_instance`):
//! - the reference returns `(inputs, inputs)`, so its targets include the compression token, which any model
//!   predicts for free; we ignore that position. Once a model emits that constant, a reference accuracy
//!   `a_ref` and ours relate as `a_ref = ((L - 1) * a + 1) / L` (per example);
//! - draws come from seeded sub-streams, and the test set is kept disjoint from the training set.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{at_least, check_sizes, pick, MadTask, Sampler, Split};
use crate::tasks::{TaskError, TaskHead, IGNORE};

/// Baseline `V = 16`: 15 content tokens and the compression token.
pub fn default_vocab_size() -> usize {
    16
}
/// Baseline `L = 32`: 31 tokens to compress into one position.
pub fn default_seq_len() -> usize {
    32
}

/// Settings of compression (`kind: mad_compression`); defaults are the MAD baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSpec {
    /// Vocabulary size `V`: content `[0, V - 1)`, compression token `V - 1`.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per row `L`: `L - 1` content tokens and the compression token.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Size `N` of the fixed training set.
    #[serde(default = "super::default_train_examples")]
    pub train_examples: usize,
    /// Size of the fixed test set.
    #[serde(default = "super::default_test_examples")]
    pub test_examples: usize,
}

impl Default for CompressionSpec {
    fn default() -> Self {
        CompressionSpec {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            train_examples: super::default_train_examples(),
            test_examples: super::default_test_examples(),
        }
    }
}

impl CompressionSpec {
    /// The YAML kind.
    pub const NAME: &'static str = "mad_compression";

    /// The decoder head this task needs: one output per position of the row.
    pub fn head(&self) -> TaskHead {
        TaskHead::Compression { positions: self.seq_len }
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        // V = 2 would leave a single content token: nothing to compress.
        at_least("vocab_size", self.vocab_size, 3, "at least 2 content tokens and the compression token")?;
        at_least("seq_len", self.seq_len, 2, "at least 1 token to compress and the compression token")?;
        check_sizes(self.train_examples, self.test_examples)
    }

    /// Validates, then fingerprints the training set and draws the test set.
    pub fn build(&self, seed: u64) -> Result<MadTask, TaskError> {
        self.validate()?;
        MadTask::new(Box::new(self.clone()), seed, self.train_examples, self.test_examples)
    }
}

impl Sampler for CompressionSpec {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn head(&self) -> TaskHead {
        CompressionSpec::head(self)
    }
    fn draw(&self, rng: &mut ChaCha8Rng, _split: Split, inputs: &mut [i64], targets: &mut [i64]) {
        let l = self.seq_len;
        for (x, y) in inputs[..l - 1].iter_mut().zip(&mut targets[..l - 1]) {
            *x = pick(rng, self.vocab_size - 1) as i64;
            *y = *x;
        }
        inputs[l - 1] = self.vocab_size as i64 - 1;
        targets[l - 1] = IGNORE;
    }
}
