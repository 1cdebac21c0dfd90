//! Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology", arXiv 2312.04927, `design/TASKS.md`).
//!
//! One example of length `L = seq_len` with vocabulary `V = vocab_size` and `kv = kv_pairs`:
//!
//! - keys: `kv` distinct tokens from `[1, V/2)`; values: `kv` distinct tokens from `[V/2, V)` (both drawn
//!   without replacement, in random order);
//! - context, positions `0 .. 2*kv`: `key_0, value_0, key_1, value_1, ...`;
//! - the remaining `L - 2*kv` positions hold `S = (L - 2*kv) / 2` query slots of two tokens each. Key `i` is
//!   queried exactly once, at position `2*kv + 2*g_i`, where the slots `g_0, g_1, ...` are drawn in that order
//!   without replacement (successive sampling) with `p(slot g) ∝ (g + 1)^(a - 1)`, `a = power_a`;
//! - every other position is filler: token 0, or a uniform token from `[0, V)` when `random_non_queries`;
//! - the target at a query position is that key's value; every other target is [`IGNORE`] (-100).
//!
//! Note on the gap distribution: with the default `a = 0.01` the weight `(g + 1)^(-0.99)` is largest for slot
//! 0, so queries land mostly *early* in the query region, i.e. close to the context. TASKS.md's parenthetical
//! "queries cluster late, far from their keys" disagrees with its own formula (and with Zoology's
//! `multiquery_ar`, which uses the same weights); we implement the formula.
//!
//! Differences from the reference code (`zoology/data/associative_recall.py`, `_mqar`):
//! - draws come from seeded sub-streams (see `tasks::sub_seed`), not numpy's global RNG (test set: `seed + 10`);
//! - slots are drawn by exponential keys (Efraimidis & Spirakis 2006), which has the same distribution as
//!   numpy's successive sampling but cannot overflow or underflow for any `a`;
//! - the test set is kept disjoint from the training set: a test draw whose inputs equal a training example's
//!   inputs is redrawn (the reference only prints a warning);
//! - training example `i` is a pure function of `(seed, i)`, drawn when a batch needs it rather than stored;
//! - `seq_len` need not be even: an odd `seq_len` leaves one filler token at the end.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{below, invalid, shuffle, splitmix64, stream, unit_open0, Batch, Stream, Task, TaskError, IGNORE};

/// The task kind as written in YAML.
pub(crate) const NAME: &str = "mqar";

/// Redraws allowed per test example before giving up on finding one that is not in the training set.
const MAX_TEST_REDRAWS: usize = 1000;

/// The YAML/JSON settings of MQAR; defaults are TASKS.md's (Zoology's `_mqar` defaults for V, L, kv, a).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqarSpec {
    /// Vocabulary size `V`: keys come from `[1, V/2)`, values from `[V/2, V)`.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per example `L`.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Key-value pairs per example, each queried once.
    #[serde(default = "default_kv_pairs")]
    pub kv_pairs: usize,
    /// Size `N` of the fixed training set.
    #[serde(default = "default_train_examples")]
    pub train_examples: usize,
    /// Size of the fixed test set.
    #[serde(default = "default_test_examples")]
    pub test_examples: usize,
    /// Exponent `a` of the query-slot distribution `p(g) ∝ (g + 1)^(a - 1)`.
    #[serde(default = "default_power_a")]
    pub power_a: f64,
    /// Fill non-query positions with uniform random tokens instead of 0 (default false, as TASKS.md; Zoology's
    /// `multiquery_ar` defaults to true).
    #[serde(default)]
    pub random_non_queries: bool,
}

/// `V = 8192`, Zoology's default.
pub fn default_vocab_size() -> usize {
    8192
}
/// `L = 64`, Zoology's default.
pub fn default_seq_len() -> usize {
    64
}
/// `kv = 8`, Zoology's default.
pub fn default_kv_pairs() -> usize {
    8
}
/// `N = 1000` training examples, TASKS.md's default.
pub fn default_train_examples() -> usize {
    1000
}
/// 1000 test examples (8000 labelled positions at the default `kv`): enough to resolve the 0.99 stopping
/// threshold, and as cheap to generate as the training set. (Zoology's `multiquery_ar` uses 3,000.)
pub fn default_test_examples() -> usize {
    1000
}
/// `a = 0.01`, Zoology's default.
pub fn default_power_a() -> f64 {
    0.01
}

impl Default for MqarSpec {
    fn default() -> Self {
        MqarSpec {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            kv_pairs: default_kv_pairs(),
            train_examples: default_train_examples(),
            test_examples: default_test_examples(),
            power_a: default_power_a(),
            random_non_queries: false,
        }
    }
}

impl MqarSpec {
    /// Number of two-token query slots, `(L - 2*kv) / 2`.
    pub fn query_slots(&self) -> usize {
        self.seq_len.saturating_sub(2 * self.kv_pairs) / 2
    }

    /// Checks every range; the error names the field and what is valid.
    pub fn validate(&self) -> Result<(), TaskError> {
        let kv = self.kv_pairs;
        if kv == 0 {
            return Err(invalid("kv_pairs", "must be at least 1"));
        }
        if self.vocab_size % 2 != 0 || self.vocab_size < 2 * kv + 2 {
            return Err(invalid(
                "vocab_size",
                format!(
                    "must be even and at least 2 * kv_pairs + 2 = {} so that the key range [1, vocab_size/2) holds \
                     kv_pairs = {kv} distinct keys; got {}",
                    2 * kv + 2,
                    self.vocab_size
                ),
            ));
        }
        if self.seq_len < 4 * kv {
            return Err(invalid(
                "seq_len",
                format!(
                    "must be at least 4 * kv_pairs = {}: 2 * kv_pairs context tokens plus kv_pairs query slots of \
                     2 tokens (got seq_len = {}, kv_pairs = {kv}, which leaves {} query slots)",
                    4 * kv,
                    self.seq_len,
                    self.query_slots()
                ),
            ));
        }
        if self.train_examples == 0 {
            return Err(invalid("train_examples", "must be at least 1"));
        }
        if self.test_examples == 0 {
            return Err(invalid("test_examples", "must be at least 1"));
        }
        if !(self.power_a.is_finite() && self.power_a > 0.0) {
            return Err(invalid("power_a", format!("must be a finite number > 0; got {}", self.power_a)));
        }
        Ok(())
    }
}

/// Draws examples: the precomputed slot weights plus scratch space (one per generating call).
struct Drawer {
    vocab_size: usize,
    kv_pairs: usize,
    random_non_queries: bool,
    /// `ln p(slot g)` up to a constant: `(a - 1) * ln(g + 1)`.
    log_weights: Vec<f64>,
    /// Marks tokens already drawn within one example, indexed by `token - range start`.
    taken: Vec<bool>,
    keys: Vec<i64>,
    values: Vec<i64>,
    /// `(exponential key, slot)`, ascending after [`Drawer::slots`].
    slots: Vec<(f64, usize)>,
}

impl Drawer {
    fn new(spec: &MqarSpec) -> Self {
        let a = spec.power_a;
        Drawer {
            vocab_size: spec.vocab_size,
            kv_pairs: spec.kv_pairs,
            random_non_queries: spec.random_non_queries,
            log_weights: (1..=spec.query_slots()).map(|g| (a - 1.0) * (g as f64).ln()).collect(),
            taken: vec![false; spec.vocab_size / 2],
            keys: Vec::new(),
            values: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// `k` distinct tokens from `[lo, hi)` in random order, into `out` (rejection on the `taken` bitmap).
    fn distinct(rng: &mut impl RngCore, taken: &mut [bool], lo: usize, hi: usize, k: usize, out: &mut Vec<i64>) {
        out.clear();
        while out.len() < k {
            let t = below(rng, (hi - lo) as u64) as usize;
            if !taken[t] {
                taken[t] = true;
                out.push((lo + t) as i64);
            }
        }
        for &t in out.iter() {
            taken[t as usize - lo] = false;
        }
    }

    /// Query slots for keys `0, 1, ...`, in that order: successive sampling without replacement with weights
    /// `w_g = exp(log_weights[g])`, realised as the `k` smallest exponential keys `ln(E_g) - ln(w_g)`,
    /// `E_g ~ Exp(1)` (Efraimidis & Spirakis 2006).
    fn slots(&mut self, rng: &mut impl RngCore) {
        let keyed = self.log_weights.iter().enumerate().map(|(g, lw)| ((-unit_open0(rng).ln()).ln() - lw, g));
        self.slots.clear();
        self.slots.extend(keyed);
        self.slots.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.slots.truncate(self.kv_pairs);
    }

    /// Draws one example into `inputs` / `targets` (each `seq_len` long).
    fn draw(&mut self, rng: &mut impl RngCore, inputs: &mut [i64], targets: &mut [i64]) {
        let (v, kv) = (self.vocab_size, self.kv_pairs);
        Self::distinct(rng, &mut self.taken, 1, v / 2, kv, &mut self.keys);
        Self::distinct(rng, &mut self.taken, v / 2, v, kv, &mut self.values);
        self.slots(rng);
        for (i, (&key, &value)) in self.keys.iter().zip(&self.values).enumerate() {
            inputs[2 * i] = key;
            inputs[2 * i + 1] = value;
        }
        for filler in &mut inputs[2 * kv..] {
            *filler = if self.random_non_queries { below(rng, v as u64) as i64 } else { 0 };
        }
        targets.fill(IGNORE);
        for (i, &(_, slot)) in self.slots.iter().enumerate() {
            inputs[2 * kv + 2 * slot] = self.keys[i];
            targets[2 * kv + 2 * slot] = self.values[i];
        }
    }
}

/// A fingerprint of one row of tokens.
fn row_hash(row: &[i64]) -> u64 {
    row.iter().fold(0, |h, &t| splitmix64(h ^ t as u64))
}

/// The MQAR generator: a fixed training set visited epoch by epoch in shuffled order, and a disjoint test set.
///
/// Training example `i` is drawn from sub-stream `(seed, MqarTrain, i)` whenever it is needed (so a large `N`
/// costs 16 bytes per example, not `16 * seq_len`); the test set is drawn once and kept.
pub struct MqarTask {
    spec: MqarSpec,
    seed: u64,
    /// `(row_hash(inputs), i)` for every training example `i`, sorted.
    train_hashes: Vec<(u64, usize)>,
    /// Test inputs and targets, `[test_examples, seq_len]` row-major.
    test_inputs: Vec<i64>,
    test_targets: Vec<i64>,
}

impl MqarTask {
    /// Validates `spec` and draws the test set: test example `j` comes from sub-stream `(seed, MqarTest, j)`,
    /// drawing again from that stream while its inputs equal a training example's.
    pub fn new(spec: MqarSpec, seed: u64) -> Result<Self, TaskError> {
        spec.validate()?;
        let (l, n_test) = (spec.seq_len, spec.test_examples);
        let mut drawer = Drawer::new(&spec);
        let mut task =
            MqarTask { spec, seed, train_hashes: Vec::new(), test_inputs: Vec::new(), test_targets: Vec::new() };
        let (mut x, mut y) = (vec![0; l], vec![0; l]);
        for i in 0..task.spec.train_examples {
            task.draw_train(&mut drawer, i, &mut x, &mut y);
            task.train_hashes.push((row_hash(&x), i));
        }
        task.train_hashes.sort_unstable();
        let (mut inputs, mut targets) = (vec![0; n_test * l], vec![0; n_test * l]);
        for (j, (x, y)) in inputs.chunks_mut(l).zip(targets.chunks_mut(l)).enumerate() {
            let mut rng = stream(seed, Stream::MqarTest, j as u64);
            drawer.draw(&mut rng, x, y);
            let mut redraws = 0;
            while task.in_train(&mut drawer, x) {
                redraws += 1;
                if redraws > MAX_TEST_REDRAWS {
                    let message = format!(
                        "cannot draw test example {j} outside the training set in {MAX_TEST_REDRAWS} tries: this setting \
                         has too few distinct examples for train_examples = {}; raise vocab_size or seq_len, or lower \
                         train_examples",
                        task.spec.train_examples
                    );
                    return Err(invalid("test_examples", message));
                }
                drawer.draw(&mut rng, x, y);
            }
        }
        (task.test_inputs, task.test_targets) = (inputs, targets);
        Ok(task)
    }

    /// The validated settings.
    pub fn spec(&self) -> &MqarSpec {
        &self.spec
    }

    /// Draws training example `i` into `inputs` / `targets`.
    fn draw_train(&self, drawer: &mut Drawer, i: usize, inputs: &mut [i64], targets: &mut [i64]) {
        drawer.draw(&mut stream(self.seed, Stream::MqarTrain, i as u64), inputs, targets);
    }

    /// Whether `row` equals the inputs of a training example: fingerprint lookup, confirmed by redrawing.
    fn in_train(&self, drawer: &mut Drawer, row: &[i64]) -> bool {
        let h = row_hash(row);
        let start = self.train_hashes.partition_point(|&(g, _)| g < h);
        let (mut x, mut y) = (vec![0; row.len()], vec![0; row.len()]);
        self.train_hashes[start..].iter().take_while(|&&(g, _)| g == h).any(|&(_, i)| {
            self.draw_train(drawer, i, &mut x, &mut y);
            x == row
        })
    }

    /// The visiting order of the training set in `epoch`: a permutation from sub-stream `(seed, MqarOrder, epoch)`.
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.spec.train_examples).collect();
        shuffle(&mut stream(self.seed, Stream::MqarOrder, epoch), &mut order);
        order
    }
}

impl Task for MqarTask {
    fn name(&self) -> &'static str {
        NAME
    }

    fn vocab_size(&self) -> usize {
        self.spec.vocab_size
    }

    fn seq_len(&self) -> usize {
        self.spec.seq_len
    }

    /// Rows `step * batch_size ..` of the endless sequence that visits the training set once per epoch, each
    /// epoch in its own shuffled order: global row `r` is training example `order(r / N)[r % N]`.
    fn train_batch(&self, step: u64, batch_size: usize) -> Batch {
        let (l, n) = (self.spec.seq_len, self.spec.train_examples as u64);
        let first = step.checked_mul(batch_size as u64).expect("step * batch_size overflows u64");
        let mut batch =
            Batch { inputs: vec![0; batch_size * l], targets: vec![0; batch_size * l], batch: batch_size, seq_len: l };
        let mut drawer = Drawer::new(&self.spec);
        let (mut epoch, mut order) = (None, Vec::new());
        for (r, (x, y)) in (first..).zip(batch.inputs.chunks_mut(l).zip(batch.targets.chunks_mut(l))) {
            if epoch != Some(r / n) {
                (epoch, order) = (Some(r / n), self.epoch_order(r / n));
            }
            self.draw_train(&mut drawer, order[(r % n) as usize], x, y);
        }
        batch
    }

    fn eval_set(&self, batch_size: usize) -> Vec<Batch> {
        assert!(batch_size > 0, "eval_set: batch_size must be at least 1");
        let (l, chunk) = (self.spec.seq_len, batch_size * self.spec.seq_len);
        let rows = self.test_inputs.chunks(chunk).zip(self.test_targets.chunks(chunk));
        rows.map(|(x, y)| Batch { inputs: x.to_vec(), targets: y.to_vec(), batch: x.len() / l, seq_len: l }).collect()
    }
}

#[cfg(test)]
#[path = "mqar_tests.rs"]
mod tests;
