//! Flat binary token files: the format nanoGPT (`train.bin`, `val.bin`) and Megatron-style pipelines write, and
//! `workbench data prepare` writes.
//!
//! A token file is nothing but token ids, each an unsigned little-endian integer of one width (`uint16`: 2 bytes,
//! ids below 65,536; `uint32`: 4 bytes), back to back, with no header. Its length is therefore a multiple of the
//! width, and token `i` sits at bytes `[i * w, (i + 1) * w)`. Because nothing in the file says its width or its
//! vocabulary, the space names both (`dtype`, `vocab_size`) and the loader checks them:
//!
//! - the length must be a multiple of the width (a file of another width, or a truncated one, fails here);
//! - every id must be below `vocab_size`. A sidecar `FILE.json` ([`Sidecar`], written by `workbench data
//!   prepare`) records the largest id, the token count and the width, so a prepared file is checked in
//!   constant time; a file without one (a nanoGPT `train.bin`) is scanned once, streaming through the map.
//!
//! The file is memory-mapped: a window is read straight from the map, so the corpus never has to fit in memory
//! (the kernel pages it in and out as file-backed pages, which count as neither heap nor anonymous memory).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};
use serde::{Deserialize, Serialize};

use super::TaskError;

/// The width of one token id on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 2 bytes, little-endian: ids below 65,536 (nanoGPT's GPT-2 `train.bin`).
    Uint16,
    /// 4 bytes, little-endian: any vocabulary.
    Uint32,
}

impl Dtype {
    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            Dtype::Uint16 => 2,
            Dtype::Uint32 => 4,
        }
    }

    /// The largest vocabulary the width can hold.
    pub fn max_vocab(self) -> u64 {
        match self {
            Dtype::Uint16 => 1 << 16,
            Dtype::Uint32 => 1 << 32,
        }
    }

    /// The smallest width for a vocabulary of `vocab` ids.
    pub fn for_vocab(vocab: u64) -> Dtype {
        if vocab <= Dtype::Uint16.max_vocab() {
            Dtype::Uint16
        } else {
            Dtype::Uint32
        }
    }

    /// The YAML/CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Uint16 => "uint16",
            Dtype::Uint32 => "uint32",
        }
    }

    /// Appends the little-endian encoding of `id` (which must fit) to `out`.
    pub fn push(self, id: u32, out: &mut Vec<u8>) {
        match self {
            Dtype::Uint16 => out.extend_from_slice(&(id as u16).to_le_bytes()),
            Dtype::Uint32 => out.extend_from_slice(&id.to_le_bytes()),
        }
    }
}

/// Identifies the sidecar's format, so an unrelated `FILE.json` is not mistaken for one.
pub const SIDECAR_FORMAT: &str = "workbench-tokens/1";

/// What `workbench data prepare` records beside a token file, as `FILE.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Always [`SIDECAR_FORMAT`].
    pub format: String,
    /// The width of each id.
    pub dtype: Dtype,
    /// The tokenizer's vocabulary (256 for bytes): every id is below it.
    pub vocab_size: u64,
    /// Tokens in the file (its length divided by the width).
    pub tokens: u64,
    /// The largest id in the file (none for an empty file).
    pub max_token_id: Option<u64>,
    /// `bytes` (one token per byte, no tokenizer) or the tokenizer file it came from.
    pub tokenizer: String,
    /// SHA-256 of the tokenizer file's bytes (none in byte mode): tells two tokenizations of one text apart.
    pub tokenizer_sha256: Option<String>,
    /// The text files, in order, and their sizes in bytes.
    pub sources: Vec<Source>,
}

/// One input of a prepared token file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub path: String,
    pub bytes: u64,
}

/// `FILE.json` for token file `FILE`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// A [`TaskError::Data`] about `path`.
pub(crate) fn data_error(path: &Path, message: impl Into<String>) -> TaskError {
    TaskError::Data { path: path.to_path_buf(), message: message.into() }
}

/// A memory-mapped token file whose length and ids have been checked.
pub struct TokenFile {
    path: PathBuf,
    dtype: Dtype,
    /// None for an empty file (mapping zero bytes is an error on some systems).
    map: Option<Mmap>,
}

impl TokenFile {
    /// Maps `path`, checks that its length is a multiple of `dtype`'s width and that every id is below
    /// `vocab_size` (through the sidecar when there is one, else by a streaming scan), then advises the kernel
    /// that windows will be read at random (no read-ahead of pages nobody asked for).
    pub fn open(path: &Path, dtype: Dtype, vocab_size: u64) -> Result<TokenFile, TaskError> {
        let io_err = |source: io::Error| TaskError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let (n, w) = (meta.len(), dtype.width() as u64);
        if n % w != 0 {
            return Err(data_error(
                path,
                format!(
                    "its length, {n} bytes, is not a multiple of the token width ({w} bytes for dtype {}): a file of \
                     another dtype, or a truncated one ({} bytes past the last whole token)",
                    dtype.name(),
                    n % w
                ),
            ));
        }
        if vocab_size > dtype.max_vocab() {
            return Err(data_error(
                path,
                format!("vocab_size {vocab_size} does not fit dtype {} (at most {})", dtype.name(), dtype.max_vocab()),
            ));
        }
        let map = if n == 0 {
            None
        } else {
            // SAFETY: read-only; the workbench never writes an input token file (truncating it from outside while a
            // trial runs is unsupported, as for any mmap reader).
            Some(unsafe { Mmap::map(&file) }.map_err(io_err)?)
        };
        let token_file = TokenFile { path: path.to_path_buf(), dtype, map };
        if token_file.bytes().len() as u64 != n {
            return Err(io_err(io::Error::other("the file changed size while it was being opened")));
        }
        token_file.check_ids(vocab_size)?;
        if let Some(map) = &token_file.map {
            let _ = map.advise(Advice::Random);
        }
        Ok(token_file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped bytes.
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.bytes().len() / self.dtype.width()
    }

    /// True when the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> u32 {
        let w = self.dtype.width();
        let b = &self.bytes()[i * w..(i + 1) * w];
        match self.dtype {
            Dtype::Uint16 => u32::from(u16::from_le_bytes([b[0], b[1]])),
            Dtype::Uint32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Appends tokens `[start, start + len)` to `out` as `i64` (what the model's embedding takes).
    pub fn extend(&self, start: usize, len: usize, out: &mut Vec<i64>) {
        let w = self.dtype.width();
        let bytes = &self.bytes()[start * w..(start + len) * w];
        match self.dtype {
            Dtype::Uint16 => out.extend(bytes.chunks_exact(2).map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))),
            Dtype::Uint32 => {
                out.extend(bytes.chunks_exact(4).map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))))
            }
        }
    }

    /// The largest id and the first index where it occurs, by one pass over the map in 1 MiB blocks (each block a
    /// tight max-reduction the compiler vectorises; already-scanned pages can be dropped by the kernel).
    pub fn scan_max(&self) -> Option<(u32, usize)> {
        const BLOCK: usize = 1 << 20;
        let n = self.len();
        let mut best: Option<(u32, usize)> = None;
        let mut start = 0;
        while start < n {
            let len = BLOCK.min(n - start);
            let w = self.dtype.width();
            let bytes = &self.bytes()[start * w..(start + len) * w];
            let max = match self.dtype {
                Dtype::Uint16 => bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).max().map(u32::from),
                Dtype::Uint32 => bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).max(),
            };
            if let Some(m) = max {
                if best.is_none_or(|(b, _)| m > b) {
                    let at = (start..start + len).find(|&i| self.get(i) == m).expect("the maximum is in its block");
                    best = Some((m, at));
                }
            }
            start += len;
        }
        best
    }

    /// Every id below `vocab_size`: from the sidecar when one is there and agrees with the file, else by
    /// [`TokenFile::scan_max`].
    fn check_ids(&self, vocab_size: u64) -> Result<(), TaskError> {
        let path = &self.path;
        let side = sidecar_path(path);
        let max = match std::fs::read_to_string(&side) {
            Ok(text) => {
                let s: Sidecar = serde_json::from_str(&text)
                    .map_err(|e| data_error(&side, format!("is not a token-file sidecar: {e}")))?;
                if s.format != SIDECAR_FORMAT {
                    return Err(data_error(&side, format!("format `{}`, expected `{SIDECAR_FORMAT}`", s.format)));
                }
                if s.dtype != self.dtype {
                    return Err(data_error(
                        path,
                        format!(
                            "the space says dtype {} but its sidecar {} says {}",
                            self.dtype.name(),
                            side.display(),
                            s.dtype.name()
                        ),
                    ));
                }
                if s.tokens != self.len() as u64 {
                    return Err(data_error(
                        path,
                        format!(
                            "it holds {} tokens but its sidecar {} says {}: the file changed after it was prepared \
                             (prepare it again, or delete the sidecar to have it scanned)",
                            self.len(),
                            side.display(),
                            s.tokens
                        ),
                    ));
                }
                if s.vocab_size > vocab_size {
                    return Err(data_error(
                        path,
                        format!(
                            "it was prepared with a vocabulary of {} ({}) but the space says vocab_size {vocab_size}; \
                             set vocab_size: {}",
                            s.vocab_size, s.tokenizer, s.vocab_size
                        ),
                    ));
                }
                s.max_token_id.map(|m| (m, None))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.scan_max().map(|(m, at)| (u64::from(m), Some(at))),
            Err(e) => return Err(TaskError::Io { path: side, source: e }),
        };
        match max {
            Some((m, at)) if m >= vocab_size => {
                let at = at.map(|i| format!(" (first at token {i}, byte offset {})", i * self.dtype.width()));
                Err(data_error(
                    path,
                    format!(
                        "token id {m}{} is beyond the vocabulary: vocab_size is {vocab_size}, so ids must be below \
                         it (is the dtype or the vocab_size wrong?)",
                        at.unwrap_or_default()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}
