//! Every search strategy through the real binary with real training: a sweep killed with SIGKILL and
//! resumed makes the same decisions as an uninterrupted one (so the seed alone fixes them), reruns
//! nothing that had finished, continues promoted trials from their checkpoints, and ends with the same
//! numbers. And every mistake in the `search:` and `executor:` sections is refused with exit code 2.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const TASK: &str = "tasks:
  - {kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2, train_examples: 256, test_examples: 32}
train: {batch_size: 8, eval_points: 3}
budgets: [6e8]
";

fn grid(name: &str, search: &str) -> String {
    format!(
        "name: {name}\n{TASK}candidates:
  - {{name: transformer, layout: [attention, swiglu], depth: [2, 4], d_model: [16, 32], mixers: {{attention: {{heads: 2}}}}}}
  - {{name: mlp, layout: [mlp], depth: 1, d_model: [16, 32], allow_no_mixing: true}}
search: {search}\n"
    )
}

fn genome(name: &str, search: &str) -> String {
    format!(
        "name: {name}\n{TASK}search: {{{search}, genome: {{mixers: [attention, mlp, swiglu], d_model: [16, 32], depth: [1, 2, 3],
  base: {{attention: {{heads: 2}}}}, params: {{attention: {{window: [2, 4, null]}}}}}}}}\n"
    )
}

fn log(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("search.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn launches(dir: &Path) -> Vec<(String, u64)> {
    log(dir)
        .iter()
        .filter(|v| v["event"] == "launch")
        .map(|v| (v["id"].as_str().unwrap().to_string(), v["rung"].as_u64().unwrap()))
        .collect()
}

/// Per trial: its fate and the held-out loss at each rung it ran.
fn fates(dir: &Path) -> BTreeMap<String, (String, Vec<f64>)> {
    let s: Value = serde_json::from_slice(&std::fs::read(dir.join("search.json")).unwrap()).unwrap();
    s["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let losses = t["rungs"].as_array().unwrap().iter().map(|r| r["eval_loss"].as_f64().unwrap()).collect();
            (t["id"].as_str().unwrap().to_string(), (t["fate"].as_str().unwrap().to_string(), losses))
        })
        .collect()
}

/// Every outcome file (rung records and results) with its modification time.
fn outcome_files(dir: &Path) -> BTreeMap<String, SystemTime> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("trials")).unwrap() {
        let t = e.unwrap().path();
        let mut files = vec![t.join("result.json")];
        if let Ok(rungs) = std::fs::read_dir(t.join("rungs")) {
            files.extend(rungs.map(|r| r.unwrap().path()));
        }
        for f in files.into_iter().filter(|f| f.exists() && f.extension().is_some_and(|x| x == "json")) {
            out.insert(f.display().to_string(), std::fs::metadata(&f).unwrap().modified().unwrap());
        }
    }
    out
}

fn killed_then_resumed(name: &str, text: &str, promotes: bool) {
    let dir = scratch(&format!("search-{name}"));
    let space = write(&dir, "space.yaml", text);
    let space = space.to_str().unwrap();

    let out = run(&["sweep", space, "--out", "ref", "--jobs", "2"], &dir);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    let (reference, ref_fates) = (launches(&dir.join("ref")), fates(&dir.join("ref")));
    let outcomes = log(&dir.join("ref")).iter().filter(|v| v["event"] == "outcome").count();
    assert!(outcomes >= 4, "{name}: only {outcomes} jobs; the test needs a longer search");

    let mut child = Command::new(bin())
        .args(["sweep", space, "--out", "run", "--jobs", "2"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = dir.join("run");
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "{name}: the sweep never got going");
        assert!(child.try_wait().unwrap().is_none(), "{name}: the sweep finished before it could be killed");
        if log(&run_dir).iter().filter(|v| v["event"] == "outcome").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the trial processes die with their parent
    let before = outcome_files(&run_dir);
    assert!(!before.is_empty());

    let out = run(&["sweep", space, "--out", "run", "--resume", "--jobs", "2"], &dir);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    assert_eq!(launches(&run_dir), reference, "{name}: the resumed sweep decided differently");
    let after = outcome_files(&run_dir);
    for (f, t) in &before {
        assert_eq!(after.get(f), Some(t), "{name}: {f} was rewritten by the resumed sweep");
    }
    let got = fates(&run_dir);
    assert_eq!(got.keys().collect::<Vec<_>>(), ref_fates.keys().collect::<Vec<_>>());
    for (id, (fate, losses)) in &ref_fates {
        let (f2, l2) = &got[id];
        assert_eq!(fate, f2, "{name}: {id}");
        assert_eq!(losses.len(), l2.len(), "{name}: {id}");
        for (a, b) in losses.iter().zip(l2) {
            assert!((a - b).abs() <= 1e-5 * a.abs(), "{name}: {id}: loss {a} uninterrupted vs {b} resumed");
        }
    }
    report_shows_the_search(name, &run_dir);
    if promotes {
        let logs: String = std::fs::read_dir(run_dir.join("trials"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("stderr.log")).ok())
            .collect();
        assert!(
            logs.contains("resuming from checkpoint at step"),
            "{name}: no promoted trial continued from its checkpoint"
        );
        assert!(got.values().any(|(f, _)| f == "stopped") && got.values().any(|(f, _)| f == "completed"), "{name}");
    }
}

/// The sweep's report has the search section with the counts of `search.json`: every trial (stopped ones
/// have no result.json), fates, generations and the Pareto front; and it passes its self-test in Chromium
/// with no console errors.
fn report_shows_the_search(name: &str, dir: &Path) {
    let s: Value = serde_json::from_slice(&std::fs::read(dir.join("search.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let trials = s["trials"].as_array().unwrap();
    let count = |fate: &str| trials.iter().filter(|t| t["fate"] == fate).count();
    let front = s["pareto_front"].as_array().map_or(0, |f| f.len());
    let counts = format!(
        "data-trials=\"{}\" data-stopped=\"{}\" data-completed=\"{}\" data-generations=\"{}\" data-front=\"{front}\"",
        trials.len(),
        count("stopped"),
        count("completed"),
        s["generations"].as_array().unwrap().len()
    );
    assert!(html.contains(&counts), "{name}: the report lacks {counts}");
    for t in trials {
        let id = t["id"].as_str().unwrap();
        assert!(html.contains(&format!("data-id=\"{id}\"")), "{name}: trial {id} missing from the search table");
    }
    assert_eq!(html.matches("<tr class=\"fate-stopped\"").count(), count("stopped"), "{name}");
    if front > 0 {
        assert!(html.contains("class=\"search-pareto\""), "{name}: no Pareto scatter");
        assert!(html.contains("class=\"front\""), "{name}: no front point marked");
    }
    let work = reports::browser::unique_tmp(&format!("search-report-{name}"));
    let run = reports::browser::run_chromium(&dir.join("report.html"), &work);
    assert_eq!(reports::browser::attr(&run.dom, "data-selftest"), Some("pass"), "{name}: {}", run.stderr);
    let errors = reports::browser::console_errors(&run.stderr);
    assert!(errors.is_empty(), "{name}: console errors:\n{}", errors.join("\n"));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn random_search_resumes_after_sigkill() {
    killed_then_resumed("random", &grid("random", "{strategy: random, n: 4, seed: 3}"), false);
}

#[test]
fn successive_halving_resumes_after_sigkill() {
    killed_then_resumed("sha", &grid("sha", "{strategy: successive_halving, min_flops: 6e7, eta: 3, seed: 1}"), true);
}

#[test]
fn asha_resumes_after_sigkill() {
    killed_then_resumed("asha", &grid("asha", "{strategy: asha, min_flops: 6e7, eta: 3, seed: 1}"), true);
}

#[test]
fn evolution_resumes_after_sigkill() {
    let text = genome("evo", "strategy: evolution, population: 3, generations: 3, seed: 5, objectives: [loss, params]");
    killed_then_resumed("evolution", &text, false);
}

/// `plan` and `sweep` refuse `text` with exit code 2 and every fragment in the message.
fn refused(name: &str, text: &str, args: &[&str], expect: &[&str]) {
    let dir = scratch(&format!("search-bad-{name}"));
    let space = write(&dir, "space.yaml", text);
    let mut all = vec!["sweep", space.to_str().unwrap(), "--out", "out"];
    all.extend_from_slice(args);
    let out = run(&all, &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{name}: expected exit 2, got {:?}\n{err}", out.status);
    for e in expect {
        assert!(err.contains(e), "{name}: message lacks `{e}`:\n{err}");
    }
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

#[test]
fn bad_search_and_executor_settings_are_refused_with_their_line() {
    let g = |s: &str| grid("bad", s);
    refused("strategy", &g("{strategy: hyperband}"), &[], &["space.yaml:", "unknown variant `hyperband`", "asha"]);
    refused(
        "field",
        &g("{strategy: asha, min_flops: 1e8, etaa: 3}"),
        &[],
        &["space.yaml:9: search: unknown field `etaa`"],
    );
    refused(
        "eta",
        &g("{strategy: asha, min_flops: 1e8, eta: 1}"),
        &[],
        &["space.yaml:9: search:", "`eta` must be at least 2"],
    );
    refused("min", &g("{strategy: asha, min_flops: 10, eta: 3}"), &[], &["`min_flops`", "use at least"]);
    refused("n", &g("{strategy: random}"), &[], &["space.yaml:9: search: missing field `n`"]);
    let evo = |p: &str| genome("bad", &format!("strategy: evolution, population: 2{p}"));
    refused("param", &evo(", genome2: 1"), &[], &["unknown field `genome2`"]);
    refused("objective", &evo(", objectives: [params]"), &[], &["`objectives` must include `loss`"]);
    let bad_param = genome("bad", "strategy: evolution").replace("window: [2, 4, null]", "windw: [2]");
    refused("genome-param", &bad_param, &[], &["`attention` has no parameter `windw`", "window"]);
    let with_candidates = format!("{}candidates: [{{name: x, layout: [attention], d_model: 16}}]\n", evo(""));
    refused("candidates", &with_candidates, &[], &["`candidates` is unused"]);
    let exec = g("{strategy: grid}\nexecutor: {kind: kubernetes}");
    refused("executor", &exec, &[], &["unknown variant `kubernetes`", "slurm"]);
    let exec = g("{strategy: grid}\nexecutor: {kind: slurm, partiton: gpu}");
    refused("executor-field", &exec, &[], &["space.yaml:10: executor: unknown field `partiton`"]);
    refused("flags", &g("{strategy: grid}"), &["--partition", "gpu"], &["need --executor slurm"]);
    refused("cli-executor", &g("{strategy: grid}"), &["--executor", "pbs"], &["invalid value 'pbs'"]);
}

#[test]
fn slurm_dry_run_prints_the_batch_script_and_submits_nothing() {
    let dir = scratch("search-dry-run");
    let space = write(&dir, "space.yaml", &grid("dry", "{strategy: asha, min_flops: 6e7, eta: 3}"));
    let args = [
        "sweep",
        space.to_str().unwrap(),
        "--out",
        "out",
        "--executor",
        "slurm",
        "--dry-run",
        "--partition",
        "gpu",
        "--account",
        "lab",
        "--time",
        "1:00:00",
        "--gpus-per-task",
        "1",
        "--throttle",
        "3",
        "--sbatch",
        "--qos=short",
    ];
    // No Slurm needed: an empty PATH proves nothing is run.
    let out = Command::new(bin()).args(args).current_dir(&dir).env("PATH", "").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for line in [
        "#!/bin/bash",
        "#SBATCH --array=0-5%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=1:00:00",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --qos=short",
        "trial --sweep",
        "--device cuda",
        "--until-flops",
    ] {
        assert!(script.contains(line), "the script lacks `{line}`:\n{script}");
    }
    assert!(!dir.join("out").exists(), "a dry run wrote the sweep directory");
    // Without --dry-run and without sbatch in PATH: a clear error, exit 2.
    let args = ["sweep", space.to_str().unwrap(), "--out", "out", "--executor", "slurm"];
    let out = Command::new(bin()).args(args).current_dir(&dir).env("PATH", "").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`sbatch` is not in PATH"), "{}", stderr(&out));
}

#[test]
fn evolution_children_inherit_their_parents_trained_weights() {
    let text = genome("inherit", "strategy: evolution, population: 3, generations: 2, seed: 5, inherit_weights: true");
    let dir = scratch("search-inherit");
    let space = write(&dir, "space.yaml", &text);
    let out = run(&["sweep", space.to_str().unwrap(), "--out", "run", "--jobs", "2"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut inherited = 0;
    for e in std::fs::read_dir(dir.join("run/trials")).unwrap() {
        let t = e.unwrap().path();
        let r: Value = serde_json::from_slice(&std::fs::read(t.join("result.json")).unwrap()).unwrap();
        let Some(inh) = r.get("inherited") else { continue };
        inherited += 1;
        let parent = inh["parent"].as_str().unwrap();
        assert!(dir.join("run/trials").join(parent).join("checkpoint.safetensors").exists());
        let params = inh["params"].as_array().unwrap();
        let copied = params.iter().filter(|p| p["action"] == "copied").count() as u64;
        assert_eq!(inh["copied"].as_u64(), Some(copied));
        assert!(params.iter().any(|p| p["path"] == "embed.weight" && p["action"] == "copied"), "{inh}");
        let log = std::fs::read_to_string(t.join("stderr.log")).unwrap();
        assert!(log.contains(&format!("inherited from trial {parent}")), "{log}");
    }
    assert!(inherited > 0, "no child inherited weights");
}
