//! MAD selective copying (`mad_selective_copying`; Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`;
//! after the selective copying task of Jing et al. 2019 as used by Gu & Dao 2023).
//!
//! With `V = vocab_size`, `L = seq_len` and `n = num_tokens_to_copy`: content tokens `[0, V - 2)`, blank
//! `V - 2`, copy token `V - 1`. One example (no shift: the target at position `i` is what the model must emit
//! at position `i`):
//! - the content: `n` tokens drawn uniformly from `[0, V - 2)` with replacement;
//! - positions `0 .. L - n - 1`: the content in order with `L - 2n - 1` blanks inserted at random: each blank
//!   independently goes right before a uniformly chosen content token (as the reference's `np.insert` at indices
//!   drawn from `[0, n)`), so this region always ends with the last content token;
//! - position `L - n - 1`: the copy token;
//! - positions `L - n .. L`: blanks, whose targets are the content tokens in order. Every other target is
//!   [`IGNORE`].
//!
//! Difference from the reference (`generate_copying_instance(selective=True)`): the reference draws the blank
//! positions from numpy's unseeded global RNG (`np.random.randint`), so its datasets are not reproducible from
//! the seed; ours draw them from the example's seeded stream. The test set is kept disjoint from the training
//! set (see [`super`]).

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{at_least, check_sizes, pick, MadTask, Sampler, Split};
use crate::tasks::{TaskError, IGNORE};

/// Baseline `V = 16`: 14 content tokens, the blank and the copy token.
pub fn default_vocab_size() -> usize {
    16
}
/// Baseline `L = 256`.
pub fn default_seq_len() -> usize {
    256
}
/// Baseline: 16 tokens to copy.
pub fn default_num_tokens_to_copy() -> usize {
    16
}

/// Settings of selective copying (`kind: mad_selective_copying`); defaults are the MAD baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectiveCopyingSpec {
    /// Vocabulary size `V`: content `[0, V - 2)`, blank `V - 2`, copy token `V - 1`.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per row `L`; at least `2 * num_tokens_to_copy + 2`.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Content tokens `n` to reproduce after the copy token.
    #[serde(default = "default_num_tokens_to_copy")]
    pub num_tokens_to_copy: usize,
    /// Size `N` of the fixed training set.
    #[serde(default = "super::default_train_examples")]
    pub train_examples: usize,
    /// Size of the fixed test set.
    #[serde(default = "super::default_test_examples")]
    pub test_examples: usize,
}

impl Default for SelectiveCopyingSpec {
    fn default() -> Self {
        SelectiveCopyingSpec {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            num_tokens_to_copy: default_num_tokens_to_copy(),
            train_examples: super::default_train_examples(),
            test_examples: super::default_test_examples(),
        }
    }
}

impl SelectiveCopyingSpec {
    /// The YAML kind.
    pub const NAME: &'static str = "mad_selective_copying";

    /// Blanks mixed into the content region, `L - 2n - 1`.
    pub fn blanks(&self) -> usize {
        self.seq_len.saturating_sub(2 * self.num_tokens_to_copy + 1)
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least("vocab_size", self.vocab_size, 3, "at least 1 content token, the blank and the copy token")?;
        let n = self.num_tokens_to_copy;
        at_least("num_tokens_to_copy", n, 1, "there must be something to copy")?;
        let why = format!(
            "num_tokens_to_copy = {n} content tokens, at least 1 blank among them, the copy token, then {n} \
             answer positions: 2 * num_tokens_to_copy + 2"
        );
        at_least("seq_len", self.seq_len, n.saturating_mul(2).saturating_add(2), &why)?;
        check_sizes(self.train_examples, self.test_examples)
    }

    /// Validates, then fingerprints the training set and draws the test set.
    pub fn build(&self, seed: u64) -> Result<MadTask, TaskError> {
        self.validate()?;
        MadTask::new(Box::new(self.clone()), seed, self.train_examples, self.test_examples)
    }
}

impl Sampler for SelectiveCopyingSpec {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn draw(&self, rng: &mut ChaCha8Rng, _split: Split, inputs: &mut [i64], targets: &mut [i64]) {
        let (n, l) = (self.num_tokens_to_copy, self.seq_len);
        let (blank, copy) = (self.vocab_size as i64 - 2, self.vocab_size as i64 - 1);
        // targets[l - n..] doubles as the content until the layout is written.
        let content = &mut targets[l - n..];
        for t in content.iter_mut() {
            *t = pick(rng, self.vocab_size - 2) as i64;
        }
        // before[j]: blanks right before content token j.
        let mut before = vec![0usize; n];
        for _ in 0..self.blanks() {
            before[pick(rng, n)] += 1;
        }
        let mut p = 0;
        for (j, &b) in before.iter().enumerate() {
            inputs[p..p + b].fill(blank);
            inputs[p + b] = targets[l - n + j];
            p += b + 1;
        }
        debug_assert_eq!(p, l - n - 1);
        inputs[l - n - 1] = copy;
        inputs[l - n..].fill(blank);
        targets[..l - n].fill(IGNORE);
    }
}
