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
