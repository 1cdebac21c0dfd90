//! Helpers for the CLI tests: a scratch folder, a tiny space, running the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_workbench"))
}

/// A fresh, empty folder under the system temp dir, unique per test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("workbench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A space small enough to train in seconds: MQAR with a 16-token vocabulary.
pub fn tiny_space(name: &str, budgets: &str, eval_points: usize) -> String {
    format!(
        "name: {name}
tasks:
  - kind: mqar
    vocab_size: 16
    seq_len: 16
    kv_pairs: 2
    train_examples: 256
    test_examples: 32
budgets: {budgets}
candidates:
  - name: transformer
    layout: [attention, swiglu]
    depth: 2
    d_model: 16
    mixers: {{attention: {{heads: 2}}}}
  - name: mlp
    layout: [mlp]
    depth: 1
    d_model: 16
    allow_no_mixing: true
train: {{batch_size: 8, eval_points: {eval_points}}}
"
    )
}

pub fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(bin()).args(args).current_dir(cwd).output().expect("running workbench")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A byte corpus of `n` bytes: words drawn by a fixed linear congruential generator (enough structure to
/// learn, deterministic, no file needed from the repository).
pub fn corpus(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let words = ["the ", "of ", "and ", "graft ", "context ", "length ", "rope ", "scale ", "token ", "model "];
    let (mut x, mut text) = (12345u64, String::new());
    while text.len() < n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        text.push_str(words[(x >> 33) as usize % words.len()]);
    }
    write(dir, "corpus.txt", &text)
}

/// A space of one grafted candidate (attention + SwiGLU, d 16, depth 2) on byte-level LM at seq_len 16.
pub fn bytes_space(corpus: &std::path::Path, budget: &str, grafts: &str, eval_points: usize) -> String {
    format!(
        "name: ctx
tasks:
  - kind: bytes
    path: {}
    seq_len: 16
    eval_sequences: 16
budgets: [{budget}]
candidates:
  - name: ctx
    layout: [attention, swiglu]
    depth: 2
    d_model: 16
    mixers: {{attention: {{heads: 2}}}}
    grafts:
{grafts}
train: {{batch_size: 4, eval_points: {eval_points}}}
",
        corpus.display()
    )
}
