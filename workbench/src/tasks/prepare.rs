//! Text -> token file, streaming: what `workbench data prepare` and the `text` task's cache run.
//!
//! Each input is read in blocks of about [`CHUNK`] bytes that end at a line break (or, in a line longer than
//! [`MAX_CHUNK`], at the last whitespace), each block is tokenized on its own and its ids are appended to the
//! output, so memory stays at a few blocks whatever the corpus size. Tokenizing per block gives the same ids as
//! tokenizing the whole file for the usual pre-tokenizers, which split at whitespace anyway; one that merges
//! across line breaks may differ at block boundaries. Files are concatenated in the order given, with nothing
//! between them. Without a tokenizer each byte is one token (vocabulary 256, as the `bytes` task).
//!
//! The output is written to a temporary name and renamed, then its sidecar `OUT.json` is written (see
//! [`token_file`](super::token_file)): a token file that exists is complete.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::token_file::{data_error, sidecar_path, Dtype, Sidecar, Source, SIDECAR_FORMAT};
use super::TaskError;

/// Target block size for tokenization.
pub const CHUNK: usize = 1 << 20;
/// A block with no line break is cut at its last whitespace once it reaches this size.
pub const MAX_CHUNK: usize = 16 << 20;

/// A tokenizer.json loaded and hashed.
pub struct LoadedTokenizer {
    pub path: PathBuf,
    pub tokenizer: Tokenizer,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Its vocabulary including added tokens.
    pub vocab_size: u64,
}

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and parses a HuggingFace `tokenizer.json`; a file that does not parse is a [`TaskError::Data`] naming it.
pub fn load_tokenizer(path: &Path) -> Result<LoadedTokenizer, TaskError> {
    let bytes = std::fs::read(path).map_err(|source| TaskError::Io { path: path.to_path_buf(), source })?;
    let tokenizer = Tokenizer::from_bytes(&bytes)
        .map_err(|e| data_error(path, format!("does not parse as a HuggingFace tokenizer.json: {e}")))?;
    let vocab_size = tokenizer.get_vocab_size(true) as u64;
    if vocab_size == 0 {
        return Err(data_error(path, "the tokenizer has an empty vocabulary"));
    }
    Ok(LoadedTokenizer { path: path.to_path_buf(), tokenizer, sha256: sha256_hex(&bytes), vocab_size })
}

/// What to convert.
pub struct Prepare<'a> {
    /// Text files, concatenated in this order.
    pub inputs: &'a [PathBuf],
    /// None: one token per byte.
    pub tokenizer: Option<&'a LoadedTokenizer>,
    /// The token file to write (its sidecar goes to `OUT.json`).
    pub out: &'a Path,
    /// None: the smallest width that holds the vocabulary.
    pub dtype: Option<Dtype>,
}

/// Converts, calling `progress(bytes_read)` after each block; returns the sidecar it wrote.
pub fn prepare(job: &Prepare, mut progress: impl FnMut(u64)) -> Result<Sidecar, TaskError> {
    let vocab = job.tokenizer.map_or(256, |t| t.vocab_size);
    let dtype = job.dtype.unwrap_or_else(|| Dtype::for_vocab(vocab));
    if vocab > dtype.max_vocab() {
        return Err(data_error(
            job.out,
            format!(
                "dtype {} holds ids below {}, but the tokenizer's vocabulary is {vocab}; use --dtype uint32 or auto",
                dtype.name(),
                dtype.max_vocab()
            ),
        ));
    }
    if job.inputs.is_empty() {
        return Err(data_error(job.out, "no input text files"));
    }
    let mut sources = Vec::new();
    for p in job.inputs {
        let meta = std::fs::metadata(p).map_err(|source| TaskError::Io { path: p.clone(), source })?;
        if !meta.is_file() {
            return Err(data_error(p, "is not a regular file"));
        }
        sources.push(Source { path: p.display().to_string(), bytes: meta.len() });
    }
    if let Some(dir) = job.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TaskError::Io { path: dir.to_path_buf(), source })?;
    }
    let tmp = PathBuf::from(format!("{}.tmp-{}", job.out.display(), std::process::id()));
    let out_err = |source| TaskError::Io { path: tmp.clone(), source };
    let mut writer = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(out_err)?);
    let (mut tokens, mut max_id, mut done) = (0u64, None::<u64>, 0u64);
    let mut encoded = Vec::with_capacity(CHUNK * dtype.width());
    let result = (|| {
        for input in job.inputs {
            let mut reader = Blocks::open(input)?;
            while let Some((block, offset)) = reader.next_block()? {
                encoded.clear();
                let ids = match job.tokenizer {
                    None => block.iter().map(|&b| u32::from(b)).collect::<Vec<_>>(),
                    Some(t) => {
                        let text = std::str::from_utf8(block).map_err(|e| {
                            let at = offset + e.valid_up_to() as u64;
                            data_error(input, format!("is not UTF-8 text: invalid byte at offset {at}"))
                        })?;
                        let enc = t.tokenizer.encode_fast(text, false).map_err(|e| {
                            data_error(input, format!("tokenizing the block at byte offset {offset} failed: {e}"))
                        })?;
                        enc.get_ids().to_vec()
                    }
                };
                for id in ids {
                    if u64::from(id) >= dtype.max_vocab() {
                        return Err(data_error(input, format!("token id {id} does not fit dtype {}", dtype.name())));
                    }
                    dtype.push(id, &mut encoded);
                    max_id = Some(max_id.map_or(u64::from(id), |m| m.max(u64::from(id))));
                    tokens += 1;
                }
                writer.write_all(&encoded).map_err(out_err)?;
                done += block.len() as u64;
                progress(done);
            }
        }
        writer.flush().map_err(out_err)?;
        writer.get_ref().sync_all().map_err(out_err)
    })();
    drop(writer);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let sidecar = Sidecar {
        format: SIDECAR_FORMAT.to_string(),
        dtype,
        vocab_size: max_id.map_or(vocab, |m| vocab.max(m + 1)),
        tokens,
        max_token_id: max_id,
        tokenizer: job.tokenizer.map_or("bytes".to_string(), |t| t.path.display().to_string()),
        tokenizer_sha256: job.tokenizer.map(|t| t.sha256.clone()),
        sources,
    };
    let side = sidecar_path(job.out);
    let text = serde_json::to_string_pretty(&sidecar).expect("a sidecar serialises");
    let side_tmp = PathBuf::from(format!("{}.tmp-{}", side.display(), std::process::id()));
    std::fs::write(&side_tmp, text + "\n").map_err(|source| TaskError::Io { path: side_tmp.clone(), source })?;
    std::fs::rename(&side_tmp, &side).map_err(|source| TaskError::Io { path: side.clone(), source })?;
    std::fs::rename(&tmp, job.out).map_err(|source| TaskError::Io { path: job.out.to_path_buf(), source })?;
    Ok(sidecar)
}

/// A text file read in blocks that end at a line break.
struct Blocks {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// Bytes carried over from the previous block (after its cut).
    carry: Vec<u8>,
    /// File offset of the start of the next block.
    offset: u64,
}

impl Blocks {
    fn open(path: &Path) -> Result<Blocks, TaskError> {
        let file = File::open(path).map_err(|source| TaskError::Io { path: path.to_path_buf(), source })?;
        Ok(Blocks {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            buf: Vec::with_capacity(CHUNK + 4096),
            carry: Vec::new(),
            offset: 0,
        })
    }

    /// The next block and its file offset; None at the end.
    fn next_block(&mut self) -> Result<Option<(&[u8], u64)>, TaskError> {
        let io_err = |source: io::Error| TaskError::Io { path: self.path.clone(), source };
        self.buf.clear();
        self.buf.append(&mut self.carry);
        let start = self.offset;
        while self.buf.len() < CHUNK {
            // `take` bounds one read: a file without line breaks is still read a block at a time.
            let limit = (MAX_CHUNK - self.buf.len()) as u64;
            let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            if self.buf.len() >= MAX_CHUNK && !self.buf.ends_with(b"\n") {
                // One very long line: cut after its last whitespace or, failing that, at the last UTF-8 character
                // boundary, and carry the rest into the next block.
                let cut = match self.buf.iter().rposition(|b| b.is_ascii_whitespace()) {
                    Some(i) => i + 1,
                    None => (1..=self.buf.len())
                        .rev()
                        .find(|&i| (self.buf[i - 1] & 0xC0) != 0x80)
                        .map_or(0, |i| i - 1)
                        .max(1),
                };
                self.carry = self.buf.split_off(cut);
                break;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.offset += self.buf.len() as u64;
        Ok(Some((&self.buf, start)))
    }
}
