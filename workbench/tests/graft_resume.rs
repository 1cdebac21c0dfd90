//! A grafted trial killed with SIGKILL after its first graft resumes from its checkpoint (the stack after
//! the graft, its length, counters and graft records), not from step 0, and ends as an uninterrupted run
//! does: same steps, FLOPs and curve points, the same graft records, the same final loss.
//!
//! The plan exercises what the checkpoint must carry: a graft that changes the shape (grow_depth), one
//! that changes the sequence length (extend_context) and one that draws fresh parameters (a self-graft
//! with a fresh layer), the last two after the kill.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const GRAFTS: &str = "      - {at: 0.25, op: grow_depth, to: {layout: [attention, swiglu], depth: 4}}
      - {at: 0.5, op: extend_context, factor: 2}
      - {at: 0.75, op: transfer, rules: {0: {fresh: true}}}";

fn trial_dir(out: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(out.join("trials")).ok()?.next().map(|e| e.unwrap().path())
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn result(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(trial_dir(out).unwrap().join("result.json")).unwrap()).unwrap()
}

fn close(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "{what}: {a} uninterrupted vs {b} resumed");
}

#[test]
fn grafted_trial_killed_after_a_graft_resumes_from_its_checkpoint() {
    let dir = scratch("graft-resume");
    let c = corpus(&dir, 40_000);
    let space = write(&dir, "space.yaml", &bytes_space(&c, "6.0e9", GRAFTS, 40));
    let space = space.to_str().unwrap();

    let out = run(&["sweep", space, "--out", "ref"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = result(&dir.join("ref"));
    assert_eq!(reference["grafts"].as_array().unwrap().len(), 3, "{reference}");

    let mut child = Command::new(bin())
        .args(["sweep", space, "--out", "run"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the checkpoint written after the first graft is in place (it is written after graft0.json).
    let start = Instant::now();
    let trial = loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the trial never reached its first graft");
        assert!(child.try_wait().unwrap().is_none(), "the sweep finished before it could be killed");
        if let Some(t) = trial_dir(&dir.join("run")) {
            let (g0, ck) = (mtime(&t.join("graft0.json")), mtime(&t.join("checkpoint.safetensors")));
            if g0.is_some_and(|g| ck.is_some_and(|c| c > g)) {
                break t;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the trial process dies with its parent (PDEATHSIG)
    assert!(!trial.join("result.json").exists());
    assert!(
        !trial.join("graft1.json").exists(),
        "the trial reached its second graft before the kill; raise the budget"
    );

    let out = run(&["sweep", space, "--out", "run", "--resume"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(trial.join("stderr.log")).unwrap();
    let line = log.lines().find(|l| l.contains("resuming from checkpoint at step")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("(1 of 3 grafts done, seq_len 16)"), "{line}");
    let step: u64 = line.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(step > 0, "{line}");

    let resumed = result(&dir.join("run"));
    assert_eq!(resumed["status"], "completed");
    for key in ["steps", "flops_spent", "tokens_seen", "seq_len", "layers"] {
        assert_eq!(reference[key], resumed[key], "{key}");
    }
    let steps = |r: &serde_json::Value| -> Vec<u64> {
        r["curve"].as_array().unwrap().iter().map(|p| p["step"].as_u64().unwrap()).collect()
    };
    assert_eq!(steps(&reference), steps(&resumed), "curve points (none lost, none repeated)");
    for (a, b) in reference["grafts"].as_array().unwrap().iter().zip(resumed["grafts"].as_array().unwrap()) {
        for key in ["op", "at_flops", "stage_flops", "params", "seq_len_before", "seq_len_after"] {
            assert_eq!(a[key], b[key], "graft {key}");
        }
        close(&a["loss_before"], &b["loss_before"], "loss_before");
        close(&a["loss_after"], &b["loss_after"], "loss_after");
    }
    close(&reference["final_eval_loss"], &resumed["final_eval_loss"], "final eval loss");
}
