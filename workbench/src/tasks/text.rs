//! Language modelling on raw text files through a HuggingFace `tokenizer.json`.
//!
//! ```yaml
//! - kind: text
//!   paths: [corpus/a.txt, corpus/b.txt]
//!   tokenizer: corpus/tokenizer.json
//!   vocab_size: 32000        # at least the tokenizer's vocabulary (checked before training)
//!   seq_len: 256
//! ```
//!
//! Text is never tokenized in the training loop. Before the first trial, `workbench sweep` converts the files
//! (streaming, see [`prepare`](super::prepare)) into a token file in the sweep directory,
//! `DIR/data/text-KEY.bin` with its sidecar, where KEY hashes the tokenizer's bytes and each input's path, size
//! and modification time: a changed tokenizer or text gets a new file, an unchanged one is reused. Trials then
//! read it exactly as the `tokens` task reads a token file: the last `val_fraction` of the token stream is held
//! out, training windows are drawn per step from the rest. (`workbench plan` only checks that the tokenizer
//! parses and the files are there.) A trial that finds no cache (run by hand) builds it the same way.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::prepare::{load_tokenizer, prepare, sha256_hex, LoadedTokenizer, Prepare};
use super::token_file::{data_error, sidecar_path, Dtype, TokenFile};
use super::tokens::{default_eval_sequences, default_seq_len, default_val_fraction, TokensTask};
use super::{invalid, TaskError};

/// The task kind as written in YAML.
pub(crate) const NAME: &str = "text";

/// The YAML/JSON settings of language modelling on text files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Text files (UTF-8), concatenated in this order.
    pub paths: Vec<String>,
    /// A HuggingFace `tokenizer.json`.
    pub tokenizer: String,
    /// Number of token ids the model embeds: at least the tokenizer's vocabulary (with added tokens).
    pub vocab_size: usize,
    /// Tokens per row.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Fraction of the token stream, taken from its end, held out.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Number of validation windows.
    #[serde(default = "default_eval_sequences")]
    pub eval_sequences: usize,
}

impl TextSpec {
    /// Checks every range without touching the files.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.paths.is_empty() || self.paths.iter().any(String::is_empty) {
            return Err(invalid("paths", "must list at least one text file"));
        }
        if self.tokenizer.is_empty() {
            return Err(invalid("tokenizer", "must name a tokenizer.json"));
        }
        if self.vocab_size < 2 || self.vocab_size as u64 > Dtype::Uint32.max_vocab() {
            return Err(invalid("vocab_size", format!("must be between 2 and 2^32; got {}", self.vocab_size)));
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

    /// The cheap check before training: the tokenizer parses, its vocabulary fits `vocab_size`, every text file
    /// is there. Returns the loaded tokenizer.
    pub fn check(&self) -> Result<LoadedTokenizer, TaskError> {
        self.validate()?;
        let tok = load_tokenizer(Path::new(&self.tokenizer))?;
        if tok.vocab_size > self.vocab_size as u64 {
            return Err(data_error(
                Path::new(&self.tokenizer),
                format!(
                    "the tokenizer's vocabulary is {} but the task's vocab_size is {}; set vocab_size: {} (or more)",
                    tok.vocab_size, self.vocab_size, tok.vocab_size
                ),
            ));
        }
        for p in &self.paths {
            let meta = std::fs::metadata(p).map_err(|source| TaskError::Io { path: p.into(), source })?;
            if !meta.is_file() {
                return Err(data_error(Path::new(p), "is not a regular file"));
            }
        }
        Ok(tok)
    }

    /// The width of the cached token file.
    fn dtype(&self) -> Dtype {
        Dtype::for_vocab(self.vocab_size as u64)
    }

    /// `DIR/text-KEY.bin`: KEY hashes the tokenizer's bytes, each input's path, size and modification time, and
    /// the width.
    fn cache_path(&self, tok: &LoadedTokenizer, dir: &Path) -> Result<PathBuf, TaskError> {
        let mut key = format!("{}\n{}\n", tok.sha256, self.dtype().name());
        for p in &self.paths {
            let meta = std::fs::metadata(p).map_err(|source| TaskError::Io { path: p.into(), source })?;
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
            key.push_str(&format!("{p}\n{}\n{}.{:09}\n", meta.len(), mtime.as_secs(), mtime.subsec_nanos()));
        }
        Ok(dir.join(format!("text-{}.bin", &sha256_hex(key.as_bytes())[..16])))
    }

    /// The tokenized cache in `dir`, built first if it is not there; `progress` is told the text bytes read.
    pub fn ensure_cache(&self, dir: &Path, progress: impl FnMut(u64)) -> Result<(PathBuf, bool), TaskError> {
        let tok = self.check()?;
        let out = self.cache_path(&tok, dir)?;
        if out.is_file() && sidecar_path(&out).is_file() {
            return Ok((out, false));
        }
        let inputs: Vec<PathBuf> = self.paths.iter().map(PathBuf::from).collect();
        prepare(&Prepare { inputs: &inputs, tokenizer: Some(&tok), out: &out, dtype: Some(self.dtype()) }, progress)?;
        Ok((out, true))
    }

    /// The task over the cache in `dir` (built first if needed).
    pub fn open(&self, seed: u64, dir: &Path) -> Result<TokensTask, TaskError> {
        let (path, _) = self.ensure_cache(dir, |_| {})?;
        let file = TokenFile::open(&path, self.dtype(), self.vocab_size as u64)?;
        TokensTask::from_files(
            NAME,
            file,
            None,
            self.val_fraction,
            self.seq_len,
            self.vocab_size,
            self.eval_sequences,
            seed,
        )
    }
}
