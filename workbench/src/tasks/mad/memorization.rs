//! MAD memorization (`mad_memorization`; Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`).
//!
//! With `V = vocab_size`, `L = seq_len` and `C = V - 1`: keys `[0, C/2)`, values `[C/2, C)`, insert token
//! `V - 1`. One global key->value map, fixed for the task (it depends on the seed only): key `k` maps to the
//! `k`-th value of a uniformly shuffled list of the values, so distinct keys have distinct values (one value
//! is unused when `C` is odd). One example (no shift):
//! - positions `2p, 2p + 1` for `p in 0..L/2`: a key drawn uniformly with replacement, then the insert token;
//! - the target at each insert position is that key's value; every other target is [`IGNORE`].
//!
//! The facts live in the weights, not the context, so the test set is *meant* to overlap the training set: it
//! asks the same map, in fresh random sequences of keys (drawn from the test sub-stream), and no disjointness
//! check is made. With the default `N = 256` examples of 16 keys, each of the 127 baseline keys appears about
//! 32 times in training; at `V = 8192` about once, and some keys of the test set were never trained on.
//!
//! Differences from the reference (`generate_memorization_instance`, `generate_kv_map`): the map comes from the
//! task's sub-stream `(seed, MadMap, 0)` rather than `numpy.default_rng(seed)`, and `seq_len` must be even
//! (the reference silently returns `L - 1` tokens for odd `L`).

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{at_least, check_sizes, pick, MadTask, Sampler, Split};
use crate::tasks::{invalid, shuffle, stream, Stream, TaskError, IGNORE};

/// Baseline `V = 256`: 127 keys, 128 values, the insert token.
pub fn default_vocab_size() -> usize {
    256
}
/// Baseline `L = 32`: 16 keys per example.
pub fn default_seq_len() -> usize {
    32
}
/// Baseline `N = 256` training examples (4,096 key occurrences, about 32 per key at `V = 256`).
pub fn default_train_examples() -> usize {
    256
}

/// Settings of memorization (`kind: mad_memorization`); defaults are the MAD baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorizationSpec {
    /// Vocabulary size `V`: keys `[0, C/2)`, values `[C/2, C)` with `C = V - 1`, insert token `V - 1`.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per row `L` (even): `L/2` (key, insert) pairs.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Size `N` of the fixed training set.
    #[serde(default = "default_train_examples")]
    pub train_examples: usize,
    /// Size of the fixed test set (same facts, other sequences).
    #[serde(default = "super::default_test_examples")]
    pub test_examples: usize,
}

impl Default for MemorizationSpec {
    fn default() -> Self {
        MemorizationSpec {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            train_examples: default_train_examples(),
            test_examples: super::default_test_examples(),
        }
    }
}

impl MemorizationSpec {
    /// The YAML kind.
    pub const NAME: &'static str = "mad_memorization";

    /// Number of keys, `(V - 1) / 2`.
    pub fn keys(&self) -> usize {
        self.vocab_size.saturating_sub(1) / 2
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least("vocab_size", self.vocab_size, 3, "at least 1 key, 1 value and the insert token")?;
        if self.seq_len % 2 != 0 || self.seq_len < 2 {
            let message = format!("must be even and at least 2 ((key, insert) pairs); got {}", self.seq_len);
            return Err(invalid("seq_len", message));
        }
        check_sizes(self.train_examples, self.test_examples)
    }

    /// Validates, draws the global key->value map and the test set.
    pub fn build(&self, seed: u64) -> Result<MadTask, TaskError> {
        self.validate()?;
        let (keys, c) = (self.keys(), self.vocab_size - 1);
        let mut values: Vec<i64> = (keys as i64..c as i64).collect();
        shuffle(&mut stream(seed, Stream::MadMap, 0), &mut values);
        values.truncate(keys);
        let sampler = Memorization { spec: self.clone(), value_of: values };
        MadTask::new(Box::new(sampler), seed, self.train_examples, self.test_examples)
    }
}

/// The memorization generator: the settings and the global map.
struct Memorization {
    spec: MemorizationSpec,
    /// `value_of[k]`: the value of key `k`.
    value_of: Vec<i64>,
}

impl Sampler for Memorization {
    fn name(&self) -> &'static str {
        MemorizationSpec::NAME
    }
    fn vocab_size(&self) -> usize {
        self.spec.vocab_size
    }
    fn seq_len(&self) -> usize {
        self.spec.seq_len
    }
    fn test_overlaps_train(&self) -> bool {
        true
    }
    fn draw(&self, rng: &mut ChaCha8Rng, _split: Split, inputs: &mut [i64], targets: &mut [i64]) {
        let insert = self.spec.vocab_size as i64 - 1;
        for (x, y) in inputs.chunks_exact_mut(2).zip(targets.chunks_exact_mut(2)) {
            let k = pick(rng, self.value_of.len());
            x.copy_from_slice(&[k as i64, insert]);
            y.copy_from_slice(&[IGNORE, self.value_of[k]]);
        }
    }
}
