//! MAD fuzzy recall (`mad_fuzzy_recall`; Poli et al. 2024, arXiv 2403.17844; `design/TASKS.md`): in-context
//! recall whose keys and values are motifs of 1 to 3 tokens, left-padded to the row length.
//!
//! Targets follow [`super::recall`]: the row is the stream's first `L = seq_len` tokens and the target at
//! position `i` concerns stream token `i + 1`; train: every next token (pads included); test: the value tokens
//! of keys that already appeared (multi-query) and the final query's value tokens (both modes).
//!
//! ## Definition
//! Keys and values are motifs: `s` distinct tokens, uniform over ordered `s`-tuples (the reference draws from
//! `itertools.permutations`). Key sizes are uniform in `1..=max_key_tokens` in training and always
//! `max_key_tokens` in the test set; value sizes are uniform in `1..=max_value_tokens`. Vocabulary, with
//! `C = V - 1` (`V - 2` in single-query mode): keys `[0, C/2)`, values `[C/2, C)`, pad `C`, and in
//! single-query mode the copy token `V - 1`. The stream has `L + 1` tokens: `pad* context [copy] k* v*`:
//! - the probe pair `(k*, v*)` is drawn first and fixes `k*`'s value;
//! - the context is built pair by pair (key motif; the key's value, or a new value motif if the key is new);
//!   the first pair that does not fit (keeping room for the probe pair while `k*` has not appeared) ends it;
//! - when the context reaches offset `probe_at` (uniform over the offsets where the probe pair fits) without
//!   `k*` having appeared, the probe pair is placed there; if the context ends first, it goes at the end. So
//!   `k*` always appears before the final query;
//! - the context is left-padded with the pad token (fewer than `max_key_tokens + max_value_tokens` pads).
//!
//! ## Differences from the reference (`generate_fuzzy_in_context_recall_instance`)
//! - The reference's context loop can stop before reaching its probe offset, leaving a final query whose key
//!   never appeared but whose value is still a test target; ours always places the probe pair in the context.
//! - The reference stops the context once fewer than `max_key_tokens + max_value_tokens + |k* v*|` tokens
//!   remain and so pads 2 to `max_key_tokens + max_value_tokens + 1` tokens; ours stops at the first pair that
//!   does not fit and pads 0 to `max_key_tokens + max_value_tokens - 1`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::recall::{default_multi_query, default_seq_len, default_vocab_size};
use super::{at_least, check_sizes, emit_shifted, pick, MadTask, Sampler, Split};
use crate::tasks::{invalid, splitmix64, TaskError, IGNORE};

/// Motifs of up to 3 tokens, fuzzy recall's baseline (`k_motif_size: 3`, `v_motif_size: 3`).
pub fn default_max_motif_tokens() -> usize {
    3
}

/// Longest motif a setting may ask for (motifs live in fixed-size arrays).
pub const MAX_MOTIF_TOKENS: usize = 8;

/// Settings of fuzzy recall (`kind: mad_fuzzy_recall`); defaults are the MAD baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FuzzyRecallSpec {
    /// Vocabulary size `V`: keys `[0, C/2)`, values `[C/2, C)`, pad `C`, with `C = V - 1` (`V - 2` and a copy
    /// token `V - 1` in single-query mode).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per row `L`.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Longest key motif; the test set uses only keys of this length.
    #[serde(default = "default_max_motif_tokens")]
    pub max_key_tokens: usize,
    /// Longest value motif.
    #[serde(default = "default_max_motif_tokens")]
    pub max_value_tokens: usize,
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

impl Default for FuzzyRecallSpec {
    fn default() -> Self {
        FuzzyRecallSpec {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            max_key_tokens: default_max_motif_tokens(),
            max_value_tokens: default_max_motif_tokens(),
            multi_query: default_multi_query(),
            train_examples: super::default_train_examples(),
            test_examples: super::default_test_examples(),
        }
    }
}

/// A key or value of 1 to [`MAX_MOTIF_TOKENS`] tokens (`tokens[len..]` are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Motif {
    len: usize,
    tokens: [i64; MAX_MOTIF_TOKENS],
}

impl Motif {
    /// `len` distinct tokens from `[lo, lo + n)`, uniform over ordered tuples (`len <= n`).
    fn draw(rng: &mut impl RngCore, lo: usize, n: usize, len: usize) -> Motif {
        let mut m = Motif { len: 0, tokens: [0; MAX_MOTIF_TOKENS] };
        while m.len < len {
            let t = (lo + pick(rng, n)) as i64;
            if !m.tokens[..m.len].contains(&t) {
                m.tokens[m.len] = t;
                m.len += 1;
            }
        }
        m
    }

    fn tokens(&self) -> &[i64] {
        &self.tokens[..self.len]
    }
}

/// One mixed word per motif (its tokens through SplitMix64), which [`PassThrough`] uses as the hash.
impl Hash for Motif {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.tokens().iter().fold(self.len as u64, |h, &t| splitmix64(h ^ t as u64)));
    }
}

/// The hasher of the per-sequence motif table: the word [`Motif::hash`] writes is already well mixed, so this
/// skips std's SipHash on the hot path of fuzzy recall's generation.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = splitmix64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// Settings of a fuzzy-recall stream.
#[derive(Debug, Clone)]
struct FuzzyRecall {
    vocab_size: usize,
    seq_len: usize,
    max_key: usize,
    max_value: usize,
    multi_query: bool,
}

impl FuzzyRecall {
    /// Content tokens `C` (keys and values); the pad token is `C`.
    fn content(&self) -> usize {
        self.vocab_size.saturating_sub(if self.multi_query { 1 } else { 2 })
    }

    /// Appends a pair to the stream: key tokens unlabelled, value tokens labelled when `labelled`.
    fn push(s: &mut Vec<i64>, labels: &mut Vec<i64>, k: &Motif, v: &Motif, labelled: bool) {
        s.extend_from_slice(k.tokens());
        s.extend_from_slice(v.tokens());
        labels.extend(std::iter::repeat_n(IGNORE, k.len));
        labels.extend(v.tokens().iter().map(|&t| if labelled { t } else { IGNORE }));
    }

    /// Draws one stream of `L + 1` tokens and its test labels.
    fn stream(&self, rng: &mut ChaCha8Rng, split: Split, s: &mut Vec<i64>, labels: &mut Vec<i64>) {
        let c = self.content();
        let (keys, value_lo, values) = (c / 2, c / 2, c - c / 2);
        let key_len =
            |rng: &mut ChaCha8Rng| if split == Split::Test { self.max_key } else { 1 + pick(rng, self.max_key) };
        let value_len = |rng: &mut ChaCha8Rng| 1 + pick(rng, self.max_value);
        let kl = key_len(rng);
        let k_probe = Motif::draw(rng, 0, keys, kl);
        let vl = value_len(rng);
        let v_probe = Motif::draw(rng, value_lo, values, vl);
        let probe = k_probe.len + v_probe.len;
        let budget = self.seq_len + 1 - probe - usize::from(!self.multi_query);
        let probe_at = pick(rng, budget - probe + 1);
        // key -> (its value, whether it has appeared in the context yet).
        let mut known: HashMap<Motif, (Motif, bool), BuildHasherDefault<PassThrough>> =
            HashMap::with_capacity_and_hasher(budget / 2, BuildHasherDefault::default());
        known.insert(k_probe, (v_probe, false));
        let mut probe_seen = false;
        let (mut body, mut body_labels) = (Vec::with_capacity(budget), Vec::with_capacity(budget));
        loop {
            if !probe_seen && body.len() >= probe_at {
                Self::push(&mut body, &mut body_labels, &k_probe, &v_probe, false);
                known.insert(k_probe, (v_probe, true));
                probe_seen = true;
                continue;
            }
            let kl = key_len(rng);
            let k = Motif::draw(rng, 0, keys, kl);
            let entry = known.get(&k).copied();
            let v = match entry {
                Some((v, _)) => v,
                None => {
                    let vl = value_len(rng);
                    Motif::draw(rng, value_lo, values, vl)
                }
            };
            let reserve = if probe_seen || k == k_probe { 0 } else { probe };
            if body.len() + k.len + v.len + reserve > budget {
                break;
            }
            known.insert(k, (v, true));
            probe_seen |= k == k_probe;
            let repeated = entry.is_some_and(|(_, seen)| seen);
            Self::push(&mut body, &mut body_labels, &k, &v, repeated && self.multi_query);
        }
        if !probe_seen {
            Self::push(&mut body, &mut body_labels, &k_probe, &v_probe, false);
        }
        let pads = budget - body.len();
        s.extend(std::iter::repeat_n(c as i64, pads));
        labels.extend(std::iter::repeat_n(IGNORE, pads));
        s.append(&mut body);
        labels.append(&mut body_labels);
        if !self.multi_query {
            s.push(self.vocab_size as i64 - 1);
            labels.push(IGNORE);
        }
        Self::push(s, labels, &k_probe, &v_probe, true);
    }
}

impl Sampler for FuzzyRecall {
    fn name(&self) -> &'static str {
        FuzzyRecallSpec::NAME
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn draw(&self, rng: &mut ChaCha8Rng, split: Split, inputs: &mut [i64], targets: &mut [i64]) {
        let (mut s, mut labels) = (Vec::with_capacity(self.seq_len + 1), Vec::with_capacity(self.seq_len + 1));
        self.stream(rng, split, &mut s, &mut labels);
        debug_assert_eq!(s.len(), self.seq_len + 1);
        match split {
            Split::Train => emit_shifted(&s, |j| s[j], inputs, targets),
            Split::Test => emit_shifted(&s, |j| labels[j], inputs, targets),
        }
    }
}

impl FuzzyRecallSpec {
    /// The YAML kind.
    pub const NAME: &'static str = "mad_fuzzy_recall";

    fn sampler(&self) -> FuzzyRecall {
        FuzzyRecall {
            vocab_size: self.vocab_size,
            seq_len: self.seq_len,
            max_key: self.max_key_tokens,
            max_value: self.max_value_tokens,
            multi_query: self.multi_query,
        }
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        for (field, n) in [("max_key_tokens", self.max_key_tokens), ("max_value_tokens", self.max_value_tokens)] {
            if !(1..=MAX_MOTIF_TOKENS).contains(&n) {
                return Err(invalid(field, format!("must be in 1..={MAX_MOTIF_TOKENS}; got {n}")));
            }
        }
        let (k, v, special) = (self.max_key_tokens, self.max_value_tokens, 1 + usize::from(!self.multi_query));
        // C/2 >= k keys and C - C/2 >= v values.
        let content = (2 * k).max(2 * v - 1);
        let why = format!(
            "the key range holds max_key_tokens = {k} distinct tokens and the value range max_value_tokens = {v}, \
             plus {special} special token(s)"
        );
        at_least("vocab_size", self.vocab_size, content + special, &why)?;
        let why = format!(
            "the largest pair ({} tokens) must fit twice, in the context and as the final query{}",
            k + v,
            if self.multi_query { "" } else { ", after the copy token" }
        );
        at_least("seq_len", self.seq_len, 2 * (k + v) - usize::from(self.multi_query), &why)?;
        check_sizes(self.train_examples, self.test_examples)
    }

    /// Validates, then fingerprints the training set and draws the test set.
    pub fn build(&self, seed: u64) -> Result<MadTask, TaskError> {
        self.validate()?;
        MadTask::new(Box::new(self.sampler()), seed, self.train_examples, self.test_examples)
    }
}
