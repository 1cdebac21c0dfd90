//! Batches stream from a token file larger than the memory the reading process is allowed.
//!
//! The parent writes a 3 GiB uint16 token file (sparse: zeros, with a 1 KiB block of marker tokens every MiB) and runs the
//! child below in a fresh process of this test binary. The child caps its data segment at 512 MiB
//! (`RLIMIT_DATA`: heap and private writable mappings, not read-only file mappings), opens the file as a `tokens`
//! task (which scans every id, since there is no sidecar), draws training batches whose windows land all over the
//! file and reads the validation windows at its end, and checks that its anonymous resident memory (`RssAnon` in
//! /proc/self/status: heap, stacks, anonymous mappings) grew by less than 64 MiB. File-backed pages (`RssFile`) are
//! not counted: the kernel maps the file's pages in as they are read and may drop them at will; that is what
//! memory-mapping is for. A loader that read the corpus into memory would fail both checks (3 GiB of heap).

use std::path::{Path, PathBuf};
use std::process::Command;
use workbench::tasks::{Dtype, Task, TokensSpec, TokensTask};

const FILE_BYTES: u64 = 3 << 30;
const MARK_EVERY: u64 = 1 << 20;
const MARK: u16 = 7;
const CHILD_ENV: &str = "WORKBENCH_TOKEN_STREAM_FILE";

/// `RssAnon` of this process, in kB.
fn rss_anon_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn write_sparse(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(FILE_BYTES).unwrap();
    let mut at = 0;
    while at < FILE_BYTES {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&MARK.to_le_bytes().repeat(512)).unwrap();
        at += MARK_EVERY;
    }
}

#[test]
fn batches_stream_from_a_file_larger_than_allowed_memory() {
    let dir = std::env::temp_dir().join(format!("workbench-token-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.bin");
    write_sparse(&path);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_streams_batches", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("streamed:"), "the child did not run:\n{text}");
    let line = text.lines().find_map(|l| l.find("streamed:").map(|i| &l[i..])).unwrap();
    println!("{line}");
}

/// The child: run only by the test above, in its own process (ignored otherwise).
#[test]
#[ignore = "run by batches_stream_from_a_file_larger_than_allowed_memory in a child process"]
fn child_streams_batches() {
    let Some(path) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else { return };
    let limit = libc::rlimit { rlim_cur: 512 << 20, rlim_max: 512 << 20 };
    // SAFETY: setrlimit with a valid struct; it only lowers this process's own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) }, 0);
    let before = rss_anon_kb();
    let spec = TokensSpec {
        path: path.to_string_lossy().into_owned(),
        dtype: Dtype::Uint16,
        vocab_size: 8,
        seq_len: 1024,
        val_path: None,
        val_fraction: Some(0.01),
        eval_sequences: 64,
    };
    let task = TokensTask::open(&spec, 0).expect("open and scan the 3 GiB file");
    let n = FILE_BYTES / 2;
    let (mut marks, mut tokens) = (0usize, 0usize);
    for step in 0..400 {
        let b = task.train_batch(step, 32);
        tokens += b.inputs.len();
        marks += b.inputs.iter().filter(|&&t| t == i64::from(MARK)).count();
        assert!(b.inputs.iter().all(|&t| t == 0 || t == i64::from(MARK)));
    }
    let eval: usize = task.eval_set(16).iter().map(|b| b.inputs.len()).sum();
    let grew = rss_anon_kb().saturating_sub(before);
    println!("streamed: {tokens} training and {eval} validation tokens from {n} tokens, RssAnon +{grew} kB, {marks} marker tokens");
    assert!(grew < 64 << 10, "anonymous memory grew by {grew} kB reading a {} MiB file", FILE_BYTES >> 20);
    // 13.1M sampled tokens, one in 1024 a mark: about 12,800 expected if the windows are spread over the file.
    assert!((8_000..20_000).contains(&marks), "{marks} marker tokens: the windows do not sample the whole file");
}
