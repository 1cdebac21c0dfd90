//! The MAD synthetic tasks (Mechanistic Architecture Design; Poli et al. 2024, arXiv 2403.17844), as
//! `design/TASKS.md` defines them. Reference code: `github.com/athms/mad-lab`, `mad/data/instances.py` (the
//! generators) and `configs/tasks/*.yml` (the baseline settings and their one-at-a-time changes).
//!
//! | YAML `kind`             | module           | baseline                    | labelled positions                 |
//! |-------------------------|------------------|-----------------------------|------------------------------------|
//! | `mad_in_context_recall` | [`recall`]       | V=16, L=128, multi-query    | train: every next token; test: the |
//! |                         |                  |                             | values of keys seen before         |
//! | `mad_fuzzy_recall`      | [`fuzzy`]        | as above, 1-3 token motifs  | as in-context recall               |
//! | `mad_noisy_recall`      | [`recall`]       | V=32 (16 noise), 20% noise  | as in-context recall, no noise     |
//! | `mad_selective_copying` | [`copying`]      | V=16, L=256, 16 to copy     | the last 16 positions              |
//! | `mad_compression`       | [`compression`]  | V=16, L=32                  | every token but the compression    |
//! |                         |                  |                             | token, [`TaskHead::Compression`]   |
//! | `mad_memorization`      | [`memorization`] | V=256, L=32, N=256          | every insert token                 |
//!
//! Every task has `vocab_size`, `seq_len`, `train_examples` (N, 12,800 unless stated) and `test_examples`
//! (1,280); [`settings`] lists the MAD protocol: the baseline and the one-at-a-time changes of each task, and
//! the training constants. Rows are always exactly `seq_len` tokens long, inputs and targets aligned as
//! [`Batch`] documents (`targets[i]` is scored against the model's output at position `i`).
//!
//! Conventions shared by all six (the per-task differences from the reference are in each module's docs):
//! - every draw comes from a seeded ChaCha8 sub-stream (`tasks::sub_seed`): training example `i` from
//!   `(seed, MadTrain, i)`, test example `j` from `(seed, MadTest, j)`, the order of epoch `e` from
//!   `(seed, MadOrder, e)`, memorization's global map from `(seed, MadMap, 0)`. A training example is drawn
//!   when a batch needs it, never stored;
//! - the test set is disjoint from the training set: a test draw whose inputs equal a training example's is
//!   drawn again from its stream (the reference only warns). Memorization is the exception: its test set
//!   probes the same key->value facts as training, by design;
//! - the training set is visited once per epoch, each epoch in its own shuffled order (as MQAR).

pub mod compression;
pub mod copying;
pub mod fuzzy;
pub mod memorization;
pub mod recall;
pub mod settings;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_layout;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use super::{below, invalid, shuffle, splitmix64, stream, Batch, Stream, Task, TaskError, TaskHead, IGNORE};

pub use compression::CompressionSpec;
pub use copying::SelectiveCopyingSpec;
pub use fuzzy::FuzzyRecallSpec;
pub use memorization::MemorizationSpec;
pub use recall::{InContextRecallSpec, NoisyRecallSpec};
pub use settings::{MadSetting, MadTaskKind};

/// 12,800 training examples, the MAD baseline `N` of every task but memorization.
pub fn default_train_examples() -> usize {
    12_800
}

/// 1,280 test examples, the MAD protocol's evaluation set size.
pub fn default_test_examples() -> usize {
    1_280
}

/// Redraws allowed per test example before giving up on finding one that is not in the training set.
const MAX_TEST_REDRAWS: usize = 1000;

/// Which set an example is drawn for: recall tasks label different positions in the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Test,
}

/// One MAD task's example generator: a pure function of its settings and the random stream it is handed.
pub(crate) trait Sampler: Send + Sync {
    /// The YAML kind.
    fn name(&self) -> &'static str;
    fn vocab_size(&self) -> usize;
    fn seq_len(&self) -> usize;
    /// The head the model needs (all but compression predict at every position).
    fn head(&self) -> TaskHead {
        TaskHead::Next
    }
    /// Whether the test set probes the training set's facts by design (memorization): no disjointness check.
    fn test_overlaps_train(&self) -> bool {
        false
    }
    /// Draws one example into `inputs` / `targets` (each `seq_len` long; every element is overwritten).
    fn draw(&self, rng: &mut ChaCha8Rng, split: Split, inputs: &mut [i64], targets: &mut [i64]);
}

/// A uniform index in `[0, n)`, `n >= 1`.
pub(crate) fn pick(rng: &mut impl RngCore, n: usize) -> usize {
    below(rng, n as u64) as usize
}

/// True with probability `p` (a uniform float in `[0, 1)` with 53 random bits, compared with `< p`).
pub(crate) fn chance(rng: &mut impl RngCore, p: f64) -> bool {
    ((rng.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
}

/// Writes the row of a token stream `s` (`seq_len` or `seq_len + 1` long) for next-token prediction:
/// `inputs = s[..seq_len]`, and `targets[i] = label(i + 1)` where stream token `i + 1` exists, [`IGNORE`] past
/// the end of the stream.
pub(crate) fn emit_shifted(s: &[i64], label: impl Fn(usize) -> i64, inputs: &mut [i64], targets: &mut [i64]) {
    inputs.copy_from_slice(&s[..inputs.len()]);
    for (i, t) in targets.iter_mut().enumerate() {
        *t = if i + 1 < s.len() { label(i + 1) } else { IGNORE };
    }
}

/// Checks `value >= min`; the error names `field` and says why.
pub(crate) fn at_least(field: &str, value: usize, min: usize, why: &str) -> Result<(), TaskError> {
    if value < min {
        return Err(invalid(field, format!("must be at least {min} ({why}); got {value}")));
    }
    Ok(())
}

/// Checks the two set sizes every MAD task has.
pub(crate) fn check_sizes(train_examples: usize, test_examples: usize) -> Result<(), TaskError> {
    at_least("train_examples", train_examples, 1, "the training set cannot be empty")?;
    at_least("test_examples", test_examples, 1, "the test set cannot be empty")
}

/// A fingerprint of one row of tokens.
fn row_hash(row: &[i64]) -> u64 {
    row.iter().fold(0x4D41_4400, |h, &t| splitmix64(h ^ t as u64))
}

/// A MAD task: a fixed training set of `train_examples` drawn lazily by index and visited epoch by epoch in
/// shuffled order, plus a fixed test set drawn once (disjoint from training unless the task says otherwise).
pub struct MadTask {
    sampler: Box<dyn Sampler>,
    seed: u64,
    train_examples: usize,
    /// `(row_hash(inputs), i)` for every training example `i`, sorted; empty when the test set overlaps by design.
    train_hashes: Vec<(u64, usize)>,
    /// Test inputs and targets, `[test_examples, seq_len]` row-major.
    test_inputs: Vec<i64>,
    test_targets: Vec<i64>,
}

impl MadTask {
    /// Fingerprints the training set (unless the test set overlaps it by design) and draws the test set: test
    /// example `j` comes from sub-stream `(seed, MadTest, j)`, drawing again while its inputs equal a training
    /// example's.
    pub(crate) fn new(
        sampler: Box<dyn Sampler>,
        seed: u64,
        train_examples: usize,
        test_examples: usize,
    ) -> Result<Self, TaskError> {
        let l = sampler.seq_len();
        let mut task = MadTask {
            sampler,
            seed,
            train_examples,
            train_hashes: Vec::new(),
            test_inputs: vec![0; test_examples * l],
            test_targets: vec![0; test_examples * l],
        };
        let check = !task.sampler.test_overlaps_train();
        if check {
            let (mut x, mut y) = (vec![0; l], vec![0; l]);
            task.train_hashes = (0..train_examples)
                .map(|i| {
                    task.draw_train(i, &mut x, &mut y);
                    (row_hash(&x), i)
                })
                .collect();
            task.train_hashes.sort_unstable();
        }
        let (mut inputs, mut targets) = (std::mem::take(&mut task.test_inputs), std::mem::take(&mut task.test_targets));
        for (j, (x, y)) in inputs.chunks_mut(l).zip(targets.chunks_mut(l)).enumerate() {
            let mut rng = stream(seed, Stream::MadTest, j as u64);
            task.sampler.draw(&mut rng, Split::Test, x, y);
            let mut redraws = 0;
            while check && task.in_train(x) {
                redraws += 1;
                if redraws > MAX_TEST_REDRAWS {
                    let message = format!(
                        "cannot draw test example {j} outside the training set in {MAX_TEST_REDRAWS} tries: this \
                         setting has too few distinct examples for train_examples = {train_examples}; raise \
                         vocab_size or seq_len, or lower train_examples"
                    );
                    return Err(invalid("test_examples", message));
                }
                task.sampler.draw(&mut rng, Split::Test, x, y);
            }
        }
        (task.test_inputs, task.test_targets) = (inputs, targets);
        Ok(task)
    }

    /// Size of the training set.
    pub fn train_examples(&self) -> usize {
        self.train_examples
    }

    /// Draws training example `i` (a pure function of `(seed, i)`) into `inputs` / `targets`.
    pub fn draw_train(&self, i: usize, inputs: &mut [i64], targets: &mut [i64]) {
        self.sampler.draw(&mut stream(self.seed, Stream::MadTrain, i as u64), Split::Train, inputs, targets);
    }

    /// Whether `row` equals the inputs of a training example: fingerprint lookup, confirmed by redrawing.
    fn in_train(&self, row: &[i64]) -> bool {
        let h = row_hash(row);
        let start = self.train_hashes.partition_point(|&(g, _)| g < h);
        let (mut x, mut y) = (vec![0; row.len()], vec![0; row.len()]);
        self.train_hashes[start..].iter().take_while(|&&(g, _)| g == h).any(|&(_, i)| {
            self.draw_train(i, &mut x, &mut y);
            x == row
        })
    }

    /// The visiting order of the training set in `epoch`: a permutation from sub-stream `(seed, MadOrder, epoch)`.
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train_examples).collect();
        shuffle(&mut stream(self.seed, Stream::MadOrder, epoch), &mut order);
        order
    }
}

impl Task for MadTask {
    fn name(&self) -> &'static str {
        self.sampler.name()
    }

    fn vocab_size(&self) -> usize {
        self.sampler.vocab_size()
    }

    fn seq_len(&self) -> usize {
        self.sampler.seq_len()
    }

    fn head(&self) -> TaskHead {
        self.sampler.head()
    }

    /// Rows `step * batch_size ..` of the endless sequence that visits the training set once per epoch, each
    /// epoch in its own shuffled order: global row `r` is training example `order(r / N)[r % N]`.
    fn train_batch(&self, step: u64, batch_size: usize) -> Batch {
        let (l, n) = (self.seq_len(), self.train_examples as u64);
        let first = step.checked_mul(batch_size as u64).expect("step * batch_size overflows u64");
        let mut batch =
            Batch { inputs: vec![0; batch_size * l], targets: vec![0; batch_size * l], batch: batch_size, seq_len: l };
        let (mut epoch, mut order) = (None, Vec::new());
        for (r, (x, y)) in (first..).zip(batch.inputs.chunks_mut(l).zip(batch.targets.chunks_mut(l))) {
            if epoch != Some(r / n) {
                (epoch, order) = (Some(r / n), self.epoch_order(r / n));
            }
            self.draw_train(order[(r % n) as usize], x, y);
        }
        batch
    }

    fn eval_set(&self, batch_size: usize) -> Vec<Batch> {
        assert!(batch_size > 0, "eval_set: batch_size must be at least 1");
        let (l, chunk) = (self.seq_len(), batch_size * self.seq_len());
        let rows = self.test_inputs.chunks(chunk).zip(self.test_targets.chunks(chunk));
        rows.map(|(x, y)| Batch { inputs: x.to_vec(), targets: y.to_vec(), batch: x.len() / l, seq_len: l }).collect()
    }
}
