//! MAD in-context recall and noisy recall (Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`); fuzzy
//! recall, the third recall task, is in [`super::fuzzy`] and shares this module's conventions.
//!
//! Each example is a token stream of key-value pairs ending in a final query pair. The row fed to the model is
//! the stream's first `L = seq_len` tokens; the target at position `i` concerns stream token `i + 1`:
//! - train: every next token (noisy recall: except noise tokens);
//! - test: only the value tokens of keys that already appeared in an earlier pair (in multi-query mode), and
//!   the final query's value (in both modes); every other target is [`IGNORE`].
//!
//! ## In-context recall (`mad_in_context_recall`) and noisy recall (`mad_noisy_recall`)
//! Vocabulary, with `Z = noise_vocab_size` (0 for in-context recall) and `C = V - Z` content tokens
//! (`V - Z - 1` in single-query mode): keys `[0, C/2)`, values `[C/2, C)`, noise `[C, C + Z)`, and in
//! single-query mode the copy token `V - 1`. The stream:
//! - `L/2 - 1` pair slots. Each slot (but one, chosen uniformly, which keeps at least one real pair) becomes
//!   2 noise tokens (uniform, with replacement) with probability `frac_noise`; otherwise it is a key, uniform
//!   over the keys with replacement, then that key's value, drawn uniformly from the values when the key first
//!   appears (the map is fixed within a sequence and drawn anew for each one; two keys may share a value);
//! - single-query mode only: the copy token;
//! - the final query: a key drawn uniformly from the distinct keys that appeared, then its value.
//!
//! So a multi-query stream has `L` tokens (`L/2` pairs) and its last position has nothing to predict
//! (target [`IGNORE`]); a single-query stream has `L + 1`.
//!
//! ## Differences from the reference (`mad/data/instances.py`)
//! - Rows are `seq_len` long in both modes. The reference returns `L - 1` tokens for multi-query in-context and
//!   noisy recall (it drops the stream's last token, the final value, from the inputs); ours keeps it as input
//!   with an ignored target, so every labelled prediction is the same.
//! - Noisy recall: the slot kept free of noise is drawn among the `L/2 - 1` context slots (the reference draws
//!   it among `L/2`, so with probability `2/L` nothing is kept and an all-noise context crashes on an empty
//!   choice). Noise targets are ignored in training too, as TASKS.md says (the reference trains on predicting
//!   the uniform noise tokens, an irreducible `ln Z` of loss on those positions).

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{at_least, chance, check_sizes, emit_shifted, pick, MadTask, Sampler, Split};
use crate::tasks::{invalid, TaskError, IGNORE};

/// Baseline `V = 16` of in-context and fuzzy recall.
pub fn default_vocab_size() -> usize {
    16
}
/// Baseline `V = 32` of noisy recall: 16 content tokens (as in-context recall) plus 16 noise tokens.
pub fn default_noisy_vocab_size() -> usize {
    32
}
/// Baseline `L = 128` of all three recall tasks.
pub fn default_seq_len() -> usize {
    128
}
/// Multi-query (every repeated key is probed), the MAD baseline (`MADConfig.multi_query = True`).
pub fn default_multi_query() -> bool {
    true
}
/// 16 noise tokens, noisy recall's baseline (`noise_vocab_size: 16`).
pub fn default_noise_vocab_size() -> usize {
    16
}
/// 20% of pair slots are noise, noisy recall's baseline.
pub fn default_frac_noise() -> f64 {
    0.2
}
/// Settings of in-context recall (`kind: mad_in_context_recall`); defaults are the MAD baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InContextRecallSpec {
    /// Vocabulary size `V`: keys `[0, V/2)`, values `[V/2, V)` (single-query: of `V - 1`, plus a copy token).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per row `L` (even): `L/2` key-value pairs.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Probe every repeated key (true), or only a final query after a copy token (false).
    #[serde(default = "default_multi_query")]
    pub multi_query: bool,
    /// Size `N` of the fixed training set.
    #[serde(default = "super::default_train_examples")]
    pub train_examples: usize,
    /// Size of the fixed test set.
    #[serde(default = "super::default_test_examples")]
    pub test_examples: usize,
}

/// Settings of noisy recall (`kind: mad_noisy_recall`); defaults are the MAD baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoisyRecallSpec {
    /// Vocabulary size `V`, noise tokens included: content `C = V - noise_vocab_size` (`- 1` single-query).
    #[serde(default = "default_noisy_vocab_size")]
    pub vocab_size: usize,
    /// Noise tokens `Z`, the ids `[C, C + Z)`.
    #[serde(default = "default_noise_vocab_size")]
    pub noise_vocab_size: usize,
    /// Probability that a pair slot is 2 noise tokens instead, in `[0, 1)`.
    #[serde(default = "default_frac_noise")]
    pub frac_noise: f64,
    /// Tokens per row `L` (even): `L/2` pair slots.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Probe every repeated key (true), or only a final query after a copy token (false).
    #[serde(default = "default_multi_query")]
    pub multi_query: bool,
    /// Size `N` of the fixed training set.
    #[serde(default = "super::default_train_examples")]
    pub train_examples: usize,
    /// Size of the fixed test set.
    #[serde(default = "super::default_test_examples")]
    pub test_examples: usize,
}

impl Default for InContextRecallSpec {
    fn default() -> Self {
        InContextRecallSpec {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            multi_query: default_multi_query(),
            train_examples: super::default_train_examples(),
            test_examples: super::default_test_examples(),
        }
    }
}

impl Default for NoisyRecallSpec {
    fn default() -> Self {
        NoisyRecallSpec {
            vocab_size: default_noisy_vocab_size(),
            noise_vocab_size: default_noise_vocab_size(),
            frac_noise: default_frac_noise(),
            seq_len: default_seq_len(),
            multi_query: default_multi_query(),
            train_examples: super::default_train_examples(),
            test_examples: super::default_test_examples(),
        }
    }
}

/// Settings of a pair-recall stream (in-context and noisy recall).
#[derive(Debug, Clone)]
struct PairRecall {
    name: &'static str,
    vocab_size: usize,
    seq_len: usize,
    multi_query: bool,
    noise_vocab_size: usize,
    frac_noise: f64,
}

impl PairRecall {
    /// Content tokens `C` (keys and values).
    fn content(&self) -> usize {
        (self.vocab_size - self.noise_vocab_size).saturating_sub(usize::from(!self.multi_query))
    }

    fn validate(&self, train_examples: usize, test_examples: usize) -> Result<(), TaskError> {
        if self.seq_len % 2 != 0 || self.seq_len < 4 {
            let message = format!(
                "must be even (pairs of 2 tokens) and at least 4 (one pair before the final query pair); got {}",
                self.seq_len
            );
            return Err(invalid("seq_len", message));
        }
        let special = usize::from(!self.multi_query);
        let min = self.noise_vocab_size.saturating_add(2 + special);
        let why = format!(
            "1 key and 1 value, plus noise_vocab_size = {} noise tokens{}",
            self.noise_vocab_size,
            if special == 1 { " and the copy token of single-query mode" } else { "" }
        );
        at_least("vocab_size", self.vocab_size, min, &why)?;
        check_sizes(train_examples, test_examples)
    }

    /// Draws one stream of `L` (multi-query) or `L + 1` tokens and its test labels.
    fn stream(&self, rng: &mut ChaCha8Rng, s: &mut Vec<i64>, labels: &mut Vec<i64>) {
        let c = self.content();
        let (keys, value_lo, values) = (c / 2, c / 2, c - c / 2);
        let slots = self.seq_len / 2 - 1;
        let (mut map, mut seen) = (vec![-1i64; keys], Vec::with_capacity(keys));
        let keep = if self.frac_noise > 0.0 { pick(rng, slots) } else { usize::MAX };
        for slot in 0..slots {
            if slot != keep && self.frac_noise > 0.0 && chance(rng, self.frac_noise) {
                for _ in 0..2 {
                    s.push((c + pick(rng, self.noise_vocab_size)) as i64);
                    labels.push(IGNORE);
                }
                continue;
            }
            let k = pick(rng, keys);
            let repeated = map[k] >= 0;
            if !repeated {
                map[k] = (value_lo + pick(rng, values)) as i64;
                seen.push(k);
            }
            s.extend([k as i64, map[k]]);
            labels.extend([IGNORE, if repeated && self.multi_query { map[k] } else { IGNORE }]);
        }
        if !self.multi_query {
            s.push(self.vocab_size as i64 - 1);
            labels.push(IGNORE);
        }
        let k = seen[pick(rng, seen.len())];
        s.extend([k as i64, map[k]]);
        labels.extend([IGNORE, map[k]]);
    }
}

impl Sampler for PairRecall {
    fn name(&self) -> &'static str {
        self.name
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn draw(&self, rng: &mut ChaCha8Rng, split: Split, inputs: &mut [i64], targets: &mut [i64]) {
        let (mut s, mut labels) = (Vec::with_capacity(self.seq_len + 1), Vec::with_capacity(self.seq_len + 1));
        self.stream(rng, &mut s, &mut labels);
        let noise = self.content() as i64..(self.content() + self.noise_vocab_size) as i64;
        match split {
            Split::Train => emit_shifted(&s, |j| if noise.contains(&s[j]) { IGNORE } else { s[j] }, inputs, targets),
            Split::Test => emit_shifted(&s, |j| labels[j], inputs, targets),
        }
    }
}

impl InContextRecallSpec {
    /// The YAML kind.
    pub const NAME: &'static str = "mad_in_context_recall";

    fn sampler(&self) -> PairRecall {
        PairRecall {
            name: Self::NAME,
            vocab_size: self.vocab_size,
            seq_len: self.seq_len,
            multi_query: self.multi_query,
            noise_vocab_size: 0,
            frac_noise: 0.0,
        }
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        self.sampler().validate(self.train_examples, self.test_examples)
    }

    /// Validates, then fingerprints the training set and draws the test set.
    pub fn build(&self, seed: u64) -> Result<MadTask, TaskError> {
        self.validate()?;
        MadTask::new(Box::new(self.sampler()), seed, self.train_examples, self.test_examples)
    }
}

impl NoisyRecallSpec {
    /// The YAML kind.
    pub const NAME: &'static str = "mad_noisy_recall";

    fn sampler(&self) -> PairRecall {
        PairRecall {
            name: Self::NAME,
            vocab_size: self.vocab_size,
            seq_len: self.seq_len,
            multi_query: self.multi_query,
            noise_vocab_size: self.noise_vocab_size,
            frac_noise: self.frac_noise,
        }
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least("noise_vocab_size", self.noise_vocab_size, 1, "noisy recall draws its noise from them")?;
        if !(self.frac_noise >= 0.0 && self.frac_noise < 1.0) {
            let message =
                format!("must be in [0, 1) (the share of pair slots that are noise); got {}", self.frac_noise);
            return Err(invalid("frac_noise", message));
        }
        self.sampler().validate(self.train_examples, self.test_examples)
    }

    /// Validates, then fingerprints the training set and draws the test set.
    pub fn build(&self, seed: u64) -> Result<MadTask, TaskError> {
        self.validate()?;
        MadTask::new(Box::new(self.sampler()), seed, self.train_examples, self.test_examples)
    }
}
