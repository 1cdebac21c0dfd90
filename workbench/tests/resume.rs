//! A sweep killed with SIGKILL mid-trial and resumed reruns no finished trial, continues the
//! interrupted one from its last checkpoint, and ends with the same numbers as an uninterrupted sweep.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn results(dir: &std::path::Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("trials")) else { return out };
    for e in entries {
        let p = e.unwrap().path().join("result.json");
        if let Ok(bytes) = std::fs::read(&p) {
            out.push((
                p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned(),
                bytes,
                std::fs::metadata(&p).unwrap().modified().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn curve_lines(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("trials"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("curve.jsonl")).ok())
        .map(|s| s.lines().count())
        .sum()
}

#[test]
fn sigkill_mid_trial_then_resume_reruns_nothing_finished() {
    let dir = scratch("resume");
    // Two budgets: the small trials finish quickly; the large ones are still running when we kill.
    let space = write(&dir, "space.yaml", &tiny_space("resume", "[1.5e7, 6e8]", 40));
    let space = space.to_str().unwrap();

    // The reference: the same sweep, uninterrupted.
    let out = run(&["sweep", space, "--out", "ref"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = results(&dir.join("ref"));
    assert_eq!(reference.len(), 4);

    let mut child = Command::new(bin())
        .args(["sweep", space, "--out", "run"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least one trial has finished and another has written a checkpoint but no result.
    let run_dir = dir.join("run");
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the sweep never reached a mid-trial state");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep finished before it could be killed; make the large budget larger"
        );
        let finished = results(&run_dir).len();
        let in_flight = std::fs::read_dir(run_dir.join("trials")).map_or(0, |d| {
            d.filter(|e| {
                let p = e.as_ref().unwrap().path();
                p.join("checkpoint.safetensors").exists() && !p.join("result.json").exists()
            })
            .count()
        });
        if finished >= 1 && in_flight >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the trial process dies with its parent (PDEATHSIG)
    let before = results(&run_dir);
    let curve_before = curve_lines(&run_dir);
    assert!(!before.is_empty() && before.len() < 4);

    let out = run(&["sweep", space, "--out", "run", "--resume"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = results(&run_dir);
    assert_eq!(after.len(), 4);
    // Finished trials were not rerun: same bytes, same modification time.
    for (id, bytes, mtime) in &before {
        let (_, b2, m2) = after.iter().find(|(i, _, _)| i == id).unwrap();
        assert_eq!(bytes, b2, "{id} was rerun");
        assert_eq!(mtime, m2, "{id} was rewritten");
    }
    assert!(curve_lines(&run_dir) >= curve_before);
    // The interrupted trial continued from its checkpoint (it says so), and every trial ends exactly as
    // in the uninterrupted sweep.
    let logs: String = std::fs::read_dir(run_dir.join("trials"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("stderr.log")).ok())
        .collect();
    assert!(logs.contains("resuming from checkpoint at step"), "no trial resumed from a checkpoint:\n{logs}");
    for (id, bytes, _) in &reference {
        let (_, b2, _) = after.iter().find(|(i, _, _)| i == id).expect("same trial ids");
        let a: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        let b: serde_json::Value = serde_json::from_slice(b2).unwrap();
        assert_eq!(a["status"], b["status"]);
        assert_eq!(a["steps"], b["steps"]);
        let (la, lb) = (a["final_eval_loss"].as_f64().unwrap(), b["final_eval_loss"].as_f64().unwrap());
        assert!((la - lb).abs() <= 1e-5 * la.abs(), "{id}: final loss {la} uninterrupted vs {lb} resumed");
    }
}
