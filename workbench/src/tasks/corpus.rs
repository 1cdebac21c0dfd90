//! Byte-level language modelling on a text file (the bundled corpus is `data/kjv.txt`; `make setup` fetches it).
//!
//! Tokens are the file's bytes, so the vocabulary is 256 and no tokenizer is involved. The file is
//! memory-mapped and never read whole into memory. With `n` bytes and `f = val_fraction`:
//!
//! - split: the training region is bytes `[0, floor(n * (1 - f)))`, the validation region the rest; no window
//!   crosses the boundary, so no byte is seen in both (the split is contiguous, not interleaved, so validation
//!   text is text the model has never seen, not a neighbour of a training window);
//! - training step `s`: `batch_size` windows of `seq_len + 1` bytes whose offsets are uniform over the training
//!   region, drawn from sub-stream `(seed, BytesTrain, s)` (see `tasks::sub_seed`);
//! - held-out set: `eval_sequences` non-overlapping windows evenly spaced across the validation region, the
//!   same for every seed;
//! - each window `w` gives `inputs = w[..seq_len]`, `targets = w[1..]` (next-byte prediction at every position).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::{below, invalid, stream, Batch, Stream, Task, TaskError};

/// The task kind as written in YAML.
pub(crate) const NAME: &str = "bytes";

/// One token per byte value.
pub(crate) const VOCAB_SIZE: usize = 256;

/// The YAML/JSON settings of byte-level language modelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesSpec {
    /// The text file, relative to the working directory (the repository root for `workbench` commands).
    #[serde(default = "default_path")]
    pub path: String,
    /// Tokens (bytes) per row.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Fraction of the file, taken from its end, held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Number of validation windows.
    #[serde(default = "default_eval_sequences")]
    pub eval_sequences: usize,
}

/// `data/kjv.txt`: the King James Bible (about 4.3 MB of public-domain English), fetched by `make setup`.
pub fn default_path() -> String {
    "data/kjv.txt".to_string()
}
/// 256 bytes: a few sentences, long enough for the model to use context, short enough for small-model sweeps.
pub fn default_seq_len() -> usize {
    256
}
/// 5% of the file held out: about 200 kB of the default corpus, far more than the evaluation windows need.
pub fn default_val_fraction() -> f64 {
    0.05
}
/// 64 validation windows (16k predicted bytes at the default `seq_len`): a stable loss estimate that costs
/// a few forward passes.
pub fn default_eval_sequences() -> usize {
    64
}

impl Default for BytesSpec {
    fn default() -> Self {
        BytesSpec {
            path: default_path(),
            seq_len: default_seq_len(),
            val_fraction: default_val_fraction(),
            eval_sequences: default_eval_sequences(),
        }
    }
}

impl BytesSpec {
    /// Checks every range; the error names the field and what is valid. (The file itself is checked by
    /// [`BytesTask::open`].)
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.path.is_empty() {
            return Err(invalid("path", "must name a text file, e.g. data/kjv.txt"));
        }
        if self.seq_len == 0 {
            return Err(invalid("seq_len", "must be at least 1"));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(invalid(
                "val_fraction",
                format!("must be strictly between 0 and 1; got {}", self.val_fraction),
            ));
        }
        if self.eval_sequences == 0 {
            return Err(invalid("eval_sequences", "must be at least 1"));
        }
        Ok(())
    }

    /// Size of the training region of an `n`-byte file, `floor(n * (1 - val_fraction))`.
    pub fn train_bytes(&self, n: u64) -> u64 {
        ((n as f64 * (1.0 - self.val_fraction)).floor() as u64).min(n)
    }
}

/// The byte-level generator over a memory-mapped file.
pub struct BytesTask {
    spec: BytesSpec,
    seed: u64,
    map: Mmap,
    /// Size of the training region `[0, train_bytes)`.
    train_bytes: usize,
    /// Start of each validation window, ascending.
    eval_offsets: Vec<usize>,
}

/// An I/O error on the corpus, its message extended with how to get the bundled corpus.
fn corpus_io_error(path: &Path, err: io::Error) -> TaskError {
    let source = io::Error::new(err.kind(), format!("{err} (`make setup` fetches the bundled corpus data/kjv.txt)"));
    TaskError::Io { path: path.to_path_buf(), source }
}

impl BytesTask {
    /// Validates `spec`, memory-maps the file and checks that both regions are large enough.
    pub fn open(spec: BytesSpec, seed: u64) -> Result<Self, TaskError> {
        spec.validate()?;
        let path = PathBuf::from(&spec.path);
        let file = File::open(&path).map_err(|e| corpus_io_error(&path, e))?;
        let meta = file.metadata().map_err(|e| corpus_io_error(&path, e))?;
        if !meta.is_file() {
            return Err(corpus_io_error(&path, io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let n = meta.len();
        let window = spec.seq_len as u64 + 1;
        let train = spec.train_bytes(n);
        let too_small = |region, region_bytes, needed, why: String| TaskError::CorpusTooSmall {
            path: path.clone(),
            file_bytes: n,
            region,
            region_bytes,
            needed,
            why,
            unit: "bytes",
        };
        if train < window {
            let why = format!("one window of seq_len + 1 = {window} bytes");
            return Err(too_small("train", train, window, why));
        }
        let needed = spec.eval_sequences as u64 * window;
        if n - train < needed {
            let why = format!(
                "eval_sequences = {} non-overlapping windows of seq_len + 1 = {window} bytes",
                spec.eval_sequences
            );
            return Err(too_small("validation", n - train, needed, why));
        }
        // SAFETY: the map is read-only and private to this task; the corpus is an input file that the workbench
        // never writes. (Truncating it from outside while a trial runs is unsupported, as for any mmap reader.)
        let map = unsafe { Mmap::map(&file) }.map_err(|e| corpus_io_error(&path, e))?;
        if map.len() as u64 != n {
            let msg = format!("file changed size while opening ({n} -> {} bytes)", map.len());
            return Err(corpus_io_error(&path, io::Error::other(msg)));
        }
        let (train_bytes, window) = (train as usize, window as usize);
        let (k, span) = (spec.eval_sequences, map.len() - train_bytes - window);
        // Evenly spaced starts `train_bytes + i * span / (k - 1)`; consecutive starts differ by at least
        // floor(span / (k - 1)) >= window because the region holds k windows, so the windows never overlap.
        let eval_offsets = (0..k)
            .map(|i| train_bytes + if k == 1 { 0 } else { (i as u128 * span as u128 / (k as u128 - 1)) as usize })
            .collect();
        Ok(BytesTask { spec, seed, map, train_bytes, eval_offsets })
    }

    /// The validated settings.
    pub fn spec(&self) -> &BytesSpec {
        &self.spec
    }

    /// Training window starts for `step`: uniform over `[0, train_bytes - seq_len - 1]`, so every window lies in
    /// the training region.
    fn train_offsets(&self, step: u64, batch_size: usize) -> Vec<usize> {
        let mut rng = stream(self.seed, Stream::BytesTrain, step);
        let choices = (self.train_bytes - self.spec.seq_len) as u64;
        (0..batch_size).map(|_| below(&mut rng, choices) as usize).collect()
    }

    /// A batch of the windows starting at `offsets`.
    fn windows(&self, offsets: &[usize]) -> Batch {
        let l = self.spec.seq_len;
        let mut inputs = Vec::with_capacity(offsets.len() * l);
        let mut targets = Vec::with_capacity(offsets.len() * l);
        for &start in offsets {
            let window = &self.map[start..start + l + 1];
            inputs.extend(window[..l].iter().map(|&b| i64::from(b)));
            targets.extend(window[1..].iter().map(|&b| i64::from(b)));
        }
        Batch { inputs, targets, batch: offsets.len(), seq_len: l }
    }
}

impl Task for BytesTask {
    fn name(&self) -> &'static str {
        NAME
    }

    fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    fn seq_len(&self) -> usize {
        self.spec.seq_len
    }

    fn train_batch(&self, step: u64, batch_size: usize) -> Batch {
        self.windows(&self.train_offsets(step, batch_size))
    }

    fn eval_set(&self, batch_size: usize) -> Vec<Batch> {
        assert!(batch_size > 0, "eval_set: batch_size must be at least 1");
        self.eval_offsets.chunks(batch_size).map(|offsets| self.windows(offsets)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file under the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!("tasks-corpus-{}-{name}.txt", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// 800 bytes of cycling letters, then 200 of cycling digits: with val_fraction 0.2 the regions are told apart
    /// by byte class, and every byte's successor is known.
    fn corpus(name: &str) -> (TempFile, BytesSpec) {
        let bytes: Vec<u8> =
            (0..1000).map(|i| if i < 800 { b'a' + (i % 26) as u8 } else { b'0' + (i % 10) as u8 }).collect();
        let file = TempFile::new(name, &bytes);
        let spec = BytesSpec {
            path: file.0.to_string_lossy().into_owned(),
            seq_len: 16,
            val_fraction: 0.2,
            eval_sequences: 5,
        };
        (file, spec)
    }

    fn successor(b: i64) -> i64 {
        let b = b as u8;
        i64::from(if b.is_ascii_lowercase() { b'a' + (b - b'a' + 1) % 26 } else { b'0' + (b - b'0' + 1) % 10 })
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let (_file, spec) = corpus("shift");
        let task = BytesTask::open(spec, 1).unwrap();
        for batch in [task.train_batch(0, 8), task.train_batch(3, 5)].iter().chain(&task.eval_set(2)) {
            assert_eq!((batch.inputs.len(), batch.targets.len()), (batch.batch * 16, batch.batch * 16));
            for i in 0..batch.batch {
                let (x, y) = batch.row(i);
                assert_eq!(x[1..], y[..15]);
                assert!(x.iter().zip(y).all(|(&a, &b)| b == successor(a)), "{x:?} -> {y:?}");
            }
        }
    }

    #[test]
    fn split_is_disjoint() {
        let (_file, spec) = corpus("split");
        let task = BytesTask::open(spec, 7).unwrap();
        assert_eq!(task.train_bytes, 800);
        let offsets: Vec<usize> = (0..200).flat_map(|s| task.train_offsets(s, 8)).collect();
        assert!(offsets.iter().all(|&o| o + 17 <= 800));
        assert!(*offsets.iter().min().unwrap() < 20 && *offsets.iter().max().unwrap() > 760, "offsets span the region");
        for step in 0..50 {
            let batch = task.train_batch(step, 8);
            assert!(batch.inputs.iter().chain(&batch.targets).all(|&b| (b as u8).is_ascii_lowercase()));
        }
        let eval = task.eval_set(3);
        assert_eq!(eval.iter().map(|b| b.batch).collect::<Vec<_>>(), [3, 2]);
        assert!(eval.iter().all(|b| b.inputs.iter().chain(&b.targets).all(|&b| (b as u8).is_ascii_digit())));
        assert_eq!(task.eval_offsets.first(), Some(&800));
        assert_eq!(task.eval_offsets.last(), Some(&(1000 - 17)));
        assert!(task.eval_offsets.windows(2).all(|w| w[1] - w[0] >= 17), "{:?}", task.eval_offsets);
    }

    #[test]
    fn deterministic_per_seed_and_step() {
        let (_file, spec) = corpus("determinism");
        let (a, b, c) = (
            BytesTask::open(spec.clone(), 1).unwrap(),
            BytesTask::open(spec.clone(), 1).unwrap(),
            BytesTask::open(spec, 2).unwrap(),
        );
        for step in [0, 1, 99, u64::MAX] {
            assert_eq!(a.train_batch(step, 4), b.train_batch(step, 4));
        }
        assert_ne!(a.train_offsets(0, 4), a.train_offsets(1, 4));
        assert_ne!(a.train_offsets(0, 4), c.train_offsets(0, 4));
        let golden = BytesTask::open(a.spec.clone(), 0).unwrap().train_offsets(0, 4);
        assert_eq!(golden, [178, 780, 644, 103], "golden values for seed 0");
        assert_eq!(a.train_offsets(5, 3), a.train_offsets(5, 6)[..3], "a row does not depend on the batch size");
        assert_eq!(a.eval_set(4), c.eval_set(4), "the held-out set does not depend on the seed");
        assert_eq!((a.name(), a.vocab_size(), a.seq_len()), ("bytes", 256, 16));
    }

    #[test]
    fn exact_fit_and_one_window() {
        // 5 windows of 17 bytes = 85 validation bytes exactly.
        let file = TempFile::new("exact", &[b'x'; 170]);
        let spec = BytesSpec {
            path: file.0.to_string_lossy().into_owned(),
            seq_len: 16,
            val_fraction: 0.5,
            eval_sequences: 5,
        };
        let task = BytesTask::open(spec.clone(), 0).unwrap();
        assert_eq!(task.eval_offsets, [85, 102, 119, 136, 153]);
        let task = BytesTask::open(BytesSpec { eval_sequences: 1, ..spec }, 0).unwrap();
        assert_eq!(task.eval_offsets, [85]);
    }

    #[test]
    fn errors_name_the_file_and_sizes() {
        let spec = BytesSpec { path: "/nonexistent/kjv.txt".into(), ..BytesSpec::default() };
        let err = BytesTask::open(spec, 0).err().unwrap();
        assert!(matches!(&err, TaskError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/kjv.txt") && msg.contains("make setup"), "{msg}");

        let (_file, spec) = corpus("small");
        let err = BytesTask::open(BytesSpec { seq_len: 800, ..spec.clone() }, 0).err().unwrap();
        assert!(
            matches!(err, TaskError::CorpusTooSmall { region: "train", region_bytes: 800, needed: 801, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&spec.path) && err.to_string().contains("1000 bytes"), "{err}");
        let err = BytesTask::open(BytesSpec { eval_sequences: 12, ..spec.clone() }, 0).err().unwrap();
        assert!(
            matches!(err, TaskError::CorpusTooSmall { region: "validation", region_bytes: 200, needed: 204, .. }),
            "{err}"
        );

        let empty = TempFile::new("empty", b"");
        let err = BytesTask::open(BytesSpec { path: empty.0.to_string_lossy().into_owned(), ..spec.clone() }, 0)
            .err()
            .unwrap();
        assert!(matches!(err, TaskError::CorpusTooSmall { file_bytes: 0, .. }), "{err}");
        let dir = std::env::temp_dir().to_string_lossy().into_owned();
        assert!(matches!(BytesTask::open(BytesSpec { path: dir, ..spec.clone() }, 0), Err(TaskError::Io { .. })));

        for (bad, field) in [
            (BytesSpec { path: String::new(), ..spec.clone() }, "path"),
            (BytesSpec { seq_len: 0, ..spec.clone() }, "seq_len"),
            (BytesSpec { val_fraction: 1.0, ..spec.clone() }, "val_fraction"),
            (BytesSpec { val_fraction: f64::NAN, ..spec.clone() }, "val_fraction"),
            (BytesSpec { eval_sequences: 0, ..spec.clone() }, "eval_sequences"),
        ] {
            assert!(matches!(bad.validate(), Err(TaskError::Invalid { field: f, .. }) if f == field), "{bad:?}");
        }
    }
}
