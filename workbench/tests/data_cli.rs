//! `workbench data prepare` and sweeps on the data a researcher brings: a token file (with and without a sidecar,
//! with a separate validation file) and text through a tokenizer.json, end to end through the real binary.

mod common;
use common::*;
use std::path::Path;

/// A WordLevel tokenizer.json written by hand (no network: nothing is downloaded).
const WORDS: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel", "unk_token": "[UNK]",
            "vocab": {"[UNK]": 0, "in": 1, "the": 2, "beginning": 3, "god": 4, "created": 5, "heaven": 6,
                      "and": 7, "earth": 8, ".": 9}}
}"#;

/// Some text in the tokenizer's words, `n` lines.
fn genesis(n: usize) -> String {
    "in the beginning god created the heaven and the earth .\n".repeat(n)
}

/// A space with one LM task (`task`, YAML flow map) and one tiny transformer.
fn lm_space(name: &str, task: &str) -> String {
    format!(
        "name: {name}
tasks:
  - {task}
budgets: [4.0e7]
candidates:
  - name: transformer
    layout: [attention, swiglu]
    depth: 2
    d_model: 16
    mixers: {{attention: {{heads: 2}}}}
train: {{batch_size: 4, eval_points: 2}}
"
    )
}

/// Runs a sweep of `space` in `dir` and returns its one result.
fn sweep_one(dir: &Path, space: &str) -> serde_json::Value {
    let path = write(dir, "space.yaml", space);
    let out = run(&["sweep", path.to_str().unwrap(), "--out", "out", "--jobs", "1"], dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials: Vec<_> = std::fs::read_dir(dir.join("out/trials")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(trials.len(), 1);
    serde_json::from_str(&std::fs::read_to_string(trials[0].join("result.json")).unwrap()).unwrap()
}

#[test]
fn prepare_bytes_then_train_on_the_token_file() {
    let dir = scratch("data-bytes");
    write(&dir, "a.txt", &genesis(300));
    let out = run(&["data", "prepare", "--input", "a.txt", "--out", "corpus/a.bin"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("corpus/a.bin: 16800 tokens (uint16, vocabulary 256"), "{text}");
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("corpus/a.bin.json")).unwrap()).unwrap();
    assert_eq!((side["tokens"].as_u64(), side["dtype"].as_str()), (Some(16800), Some("uint16")));
    assert_eq!(std::fs::metadata(dir.join("corpus/a.bin")).unwrap().len(), 2 * 16800);
    let r = sweep_one(
        &dir,
        &lm_space(
            "tok",
            "{kind: tokens, path: corpus/a.bin, dtype: uint16, vocab_size: 256, seq_len: 16, eval_sequences: 4}",
        ),
    );
    assert_eq!((r["task"].as_str(), r["status"].as_str()), (Some("tokens"), Some("completed")), "{r}");
    assert!(r["final_eval_loss"].as_f64().unwrap().is_finite(), "{r}");
}

#[test]
fn text_with_a_tokenizer_is_tokenized_once_before_training() {
    let dir = scratch("data-text");
    write(&dir, "tokenizer.json", WORDS);
    write(&dir, "a.txt", &genesis(200));
    write(&dir, "b.txt", &genesis(100));
    // `data prepare` with the tokenizer: 11 words a line.
    let out =
        run(&["data", "prepare", "--tokenizer", "tokenizer.json", "--input", "a.txt", "b.txt", "--out", "w.bin"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("w.bin: 3300 tokens (uint16, vocabulary 10, largest id 9)"));
    // The same text as a `text` task: the sweep tokenizes it into DIR/data first.
    let task = "{kind: text, paths: [a.txt, b.txt], tokenizer: tokenizer.json, vocab_size: 10, seq_len: 16, eval_sequences: 4}";
    let r = sweep_one(&dir, &lm_space("text", task));
    assert_eq!((r["task"].as_str(), r["status"].as_str()), (Some("text"), Some("completed")), "{r}");
    let cached: Vec<_> = std::fs::read_dir(dir.join("out/data")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(cached.len(), 2, "the token file and its sidecar: {cached:?}");
    let bin = cached.iter().find(|n| n.to_string_lossy().ends_with(".bin")).unwrap();
    assert_eq!(std::fs::read(dir.join("out/data").join(bin)).unwrap(), std::fs::read(dir.join("w.bin")).unwrap());
    // A run of the same space reuses the cache: no "tokenized" line.
    let out = run(&["sweep", "space.yaml", "--out", "out", "--resume"], &dir);
    assert!(out.status.success() && !stderr(&out).contains("tokenized"), "{}", stderr(&out));
}

#[test]
fn a_nanogpt_style_pair_without_sidecar_trains() {
    let dir = scratch("data-nanogpt");
    // uint32 ids up to 69,999 (beyond uint16), a training and a validation file, no sidecar: scanned at load.
    let ids = |n: u32, k: u32| -> Vec<u8> { (0..n).flat_map(|i| ((i * k) % 70_000).to_le_bytes()).collect() };
    std::fs::write(dir.join("train.bin"), ids(5000, 7)).unwrap();
    std::fs::write(dir.join("val.bin"), ids(500, 11)).unwrap();
    let task = "{kind: tokens, path: train.bin, val_path: val.bin, dtype: uint32, vocab_size: 70000, seq_len: 8, eval_sequences: 8}";
    let space = lm_space("nano", task).replace("budgets: [4.0e7]", "budgets: [1.0e9]");
    let r = sweep_one(&dir, &space);
    assert_eq!(r["status"].as_str(), Some("completed"), "{r}");
}
