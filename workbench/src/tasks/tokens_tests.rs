//! Token files, the `tokens` task, `prepare` and the `text` task on small files written here.

use super::*;
use crate::tasks::prepare::{load_tokenizer, prepare, Prepare};
use crate::tasks::text::TextSpec;
use crate::tasks::token_file::{sidecar_path, Sidecar};
use std::path::PathBuf;

/// A fresh folder under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tasks-tokens-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ids` in `dtype`'s little-endian encoding.
fn encode(ids: impl IntoIterator<Item = u32>, dtype: Dtype) -> Vec<u8> {
    let mut out = Vec::new();
    ids.into_iter().for_each(|id| dtype.push(id, &mut out));
    out
}

/// Token `i` is `i % 1000` in the first 800 tokens and `1000 + i % 7` after: regions are told apart by value and
/// every token's successor is known.
fn spec(dir: &TempDir, dtype: Dtype) -> TokensSpec {
    let ids = (0..1000u32).map(|i| if i < 800 { i } else { 1000 + i % 7 });
    TokensSpec {
        path: dir.file("c.bin", &encode(ids, dtype)),
        dtype,
        vocab_size: 1007,
        seq_len: 16,
        val_path: None,
        val_fraction: Some(0.2),
        eval_sequences: 5,
    }
}

#[test]
fn windows_shift_split_and_dtypes() {
    for dtype in [Dtype::Uint16, Dtype::Uint32] {
        let dir = TempDir::new(dtype.name());
        let task = TokensTask::open(&spec(&dir, dtype), 3).unwrap();
        assert_eq!((task.name(), task.vocab_size(), task.seq_len(), task.train_tokens()), ("tokens", 1007, 16, 800));
        for step in 0..40 {
            let b = task.train_batch(step, 8);
            for i in 0..8 {
                let (x, y) = b.row(i);
                assert!(x.iter().zip(y).all(|(&a, &b)| b == a + 1), "{x:?} -> {y:?}");
                assert!(y.iter().all(|&t| t < 800), "a training window reached validation: {y:?}");
            }
        }
        let eval = task.eval_set(3);
        assert_eq!(eval.iter().map(|b| b.batch).collect::<Vec<_>>(), [3, 2]);
        assert!(eval.iter().all(|b| b.inputs.iter().chain(&b.targets).all(|&t| t >= 1000)));
        assert_eq!(task.eval_offsets, [800, 845, 891, 937, 983]);
    }
}

#[test]
fn same_seed_same_batches() {
    let dir = TempDir::new("seed");
    let s = spec(&dir, Dtype::Uint16);
    let (a, b, c) =
        (TokensTask::open(&s, 1).unwrap(), TokensTask::open(&s, 1).unwrap(), TokensTask::open(&s, 2).unwrap());
    for step in [0, 5, u64::MAX] {
        assert_eq!(a.train_batch(step, 4), b.train_batch(step, 4));
    }
    assert_ne!(a.train_offsets(0, 4), c.train_offsets(0, 4));
    assert_ne!(a.train_offsets(0, 4), a.train_offsets(1, 4));
    assert_eq!(a.eval_set(4), c.eval_set(4), "the held-out set does not depend on the seed");
    let offsets: Vec<usize> = (0..300).flat_map(|s| a.train_offsets(s, 8)).collect();
    assert!(offsets.iter().all(|&o| o + 17 <= 800));
    assert!(*offsets.iter().min().unwrap() < 20 && *offsets.iter().max().unwrap() > 760, "offsets span the region");
}

#[test]
fn separate_validation_file() {
    let dir = TempDir::new("valfile");
    let mut s = spec(&dir, Dtype::Uint32);
    s.val_fraction = None;
    s.val_path = Some(dir.file("v.bin", &encode(2000..2100, Dtype::Uint32)));
    s.vocab_size = 3000;
    let task = TokensTask::open(&s, 0).unwrap();
    assert_eq!(task.train_tokens(), 1000, "the whole training file trains");
    let eval = task.eval_set(8);
    assert!(eval[0].inputs.iter().all(|&t| (2000..2100).contains(&t)));
    s.val_fraction = Some(0.1);
    assert!(matches!(s.validate(), Err(TaskError::Invalid { field, .. }) if field == "val_fraction"));
}

#[test]
fn bad_files_are_refused_naming_the_file() {
    let dir = TempDir::new("bad");
    let mut s = spec(&dir, Dtype::Uint16);
    // Odd length for uint16.
    let mut bytes = std::fs::read(&s.path).unwrap();
    bytes.push(7);
    s.path = dir.file("odd.bin", &bytes);
    let msg = TokensTask::open(&s, 0).err().unwrap().to_string();
    assert!(msg.contains("odd.bin") && msg.contains("not a multiple of the token width"), "{msg}");
    // An id beyond the vocabulary, found by the scan.
    s.path = dir.file("big.bin", &encode([1, 2, 3, 5000, 4].into_iter().cycle().take(500), Dtype::Uint16));
    let msg = TokensTask::open(&s, 0).err().unwrap().to_string();
    assert!(msg.contains("big.bin") && msg.contains("token id 5000") && msg.contains("first at token 3"), "{msg}");
    // Read as uint32, a uint16 file of even token count has other ids: caught by the same scan.
    let s32 = TokensSpec { dtype: Dtype::Uint32, ..spec(&dir, Dtype::Uint16) };
    let msg = TokensTask::open(&s32, 0).err().unwrap().to_string();
    assert!(msg.contains("beyond the vocabulary"), "{msg}");
    // Too small for the windows.
    let msg = TokensTask::open(&TokensSpec { seq_len: 900, ..spec(&dir, Dtype::Uint16) }, 0).err().unwrap();
    assert!(msg.to_string().contains("1000 tokens"), "{msg}");
    let missing = TokensSpec { path: "/nonexistent/t.bin".into(), ..spec(&dir, Dtype::Uint16) };
    assert!(TokensTask::open(&missing, 0).err().unwrap().to_string().contains("/nonexistent/t.bin"));
}

#[test]
fn the_sidecar_is_trusted_only_when_it_agrees() {
    let dir = TempDir::new("sidecar");
    let text = dir.file("t.txt", b"hello world\nhello again\n");
    let out = dir.0.join("t.bin");
    let side = prepare(&Prepare { inputs: &[text.into()], tokenizer: None, out: &out, dtype: None }, |_| {}).unwrap();
    assert_eq!(
        (side.tokens, side.vocab_size, side.max_token_id, side.dtype),
        (24, 256, Some(u64::from(b'w')), Dtype::Uint16)
    );
    let s = TokensSpec {
        path: out.to_string_lossy().into(),
        dtype: Dtype::Uint16,
        vocab_size: 256,
        seq_len: 4,
        val_path: None,
        val_fraction: Some(0.5),
        eval_sequences: 2,
    };
    TokensTask::open(&s, 0).unwrap();
    let msg = TokensTask::open(&TokensSpec { vocab_size: 200, ..s.clone() }, 0).err().unwrap().to_string();
    assert!(msg.contains("set vocab_size: 256"), "{msg}");
    let mut wrong: Sidecar = serde_json::from_str(&std::fs::read_to_string(sidecar_path(&out)).unwrap()).unwrap();
    wrong.tokens = 99;
    std::fs::write(sidecar_path(&out), serde_json::to_string(&wrong).unwrap()).unwrap();
    let msg = TokensTask::open(&s, 0).err().unwrap().to_string();
    assert!(msg.contains("holds 24 tokens but its sidecar") && msg.contains("t.bin"), "{msg}");
    std::fs::write(sidecar_path(&out), "{\"not\": \"a sidecar\"}").unwrap();
    let msg = TokensTask::open(&s, 0).err().unwrap().to_string();
    assert!(msg.contains("t.bin.json") && msg.contains("is not a token-file sidecar"), "{msg}");
}

/// A WordLevel tokenizer.json written by hand: whitespace pre-tokenizer, six words and `[UNK]`.
const WORDS: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel", "unk_token": "[UNK]",
            "vocab": {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5, ".": 6}}
}"#;

#[test]
fn prepare_with_a_tokenizer_matches_whole_file_encoding() {
    let dir = TempDir::new("tok");
    let tok_path = dir.file("tokenizer.json", WORDS.as_bytes());
    let tok = load_tokenizer(std::path::Path::new(&tok_path)).unwrap();
    assert_eq!(tok.vocab_size, 7);
    // Long enough for several blocks, with a word the vocabulary lacks.
    let line = "the cat sat on the mat . the dog sat .\n";
    let text: String = line.repeat(2 * crate::tasks::prepare::CHUNK / line.len() + 10);
    let a = dir.file("a.txt", text.as_bytes());
    let b = dir.file("b.txt", b"cat cat mat");
    let out = dir.0.join("words.bin");
    let inputs = [PathBuf::from(&a), PathBuf::from(&b)];
    let side = prepare(&Prepare { inputs: &inputs, tokenizer: Some(&tok), out: &out, dtype: None }, |_| {}).unwrap();
    let whole: Vec<u32> = tok.tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    let expect: Vec<u32> = whole.into_iter().chain([2, 2, 5]).collect();
    let file = TokenFile::open(&out, Dtype::Uint16, 7).unwrap();
    assert_eq!(file.len(), expect.len());
    assert!((0..file.len()).all(|i| file.get(i) == expect[i]), "the blocks tokenize as the whole file does");
    assert_eq!((side.tokens as usize, side.vocab_size, side.max_token_id), (expect.len(), 7, Some(6)));
    assert_eq!(side.tokenizer_sha256.as_deref(), Some(crate::tasks::prepare::sha256_hex(WORDS.as_bytes()).as_str()));
    assert_eq!(side.sources.len(), 2);

    let bad = dir.file("bad.json", b"{\"model\": {\"type\": \"Nope\"}}");
    let msg = load_tokenizer(std::path::Path::new(&bad)).err().unwrap().to_string();
    assert!(msg.contains("bad.json") && msg.contains("does not parse"), "{msg}");
    let latin1 = dir.file("latin1.txt", b"the cat \xe9\n");
    let inputs = [PathBuf::from(&latin1)];
    let err =
        prepare(&Prepare { inputs: &inputs, tokenizer: Some(&tok), out: &out, dtype: None }, |_| {}).err().unwrap();
    assert!(err.to_string().contains("latin1.txt") && err.to_string().contains("offset 8"), "{err}");
}

#[test]
fn text_task_tokenizes_once_into_its_cache() {
    let dir = TempDir::new("text");
    let tok = dir.file("tokenizer.json", WORDS.as_bytes());
    let a = dir.file("a.txt", "the cat sat on the mat .\n".repeat(200).as_bytes());
    let spec =
        TextSpec { paths: vec![a], tokenizer: tok, vocab_size: 8, seq_len: 8, val_fraction: 0.1, eval_sequences: 4 };
    let cache = dir.0.join("cache");
    let (path, built) = spec.ensure_cache(&cache, |_| {}).unwrap();
    assert!(built && path.starts_with(&cache));
    let (again, built) = spec.ensure_cache(&cache, |_| {}).unwrap();
    assert_eq!((again, built), (path, false), "an unchanged text is not tokenized again");
    let task = spec.open(0, &cache).unwrap();
    assert_eq!((task.name(), task.vocab_size()), ("text", 8));
    let b = task.train_batch(0, 2);
    assert!(b.inputs.iter().all(|&t| (1..=6).contains(&t)));
    let msg = TextSpec { vocab_size: 5, ..spec.clone() }.check().err().unwrap().to_string();
    assert!(msg.contains("tokenizer.json") && msg.contains("set vocab_size: 7"), "{msg}");
}
