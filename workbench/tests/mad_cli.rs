//! `workbench mad` end to end on a miniature space: it trains the MAD trials, writes `mad.json` and a report whose
//! heatmap renders in headless Chromium; one directory holds a sweep (byte-level language modelling) and the MAD
//! run of the same candidates, so the report also plots MAD score against compute-optimal loss; `--resume`
//! reruns nothing; bad input exits with code 2 before anything trains.

mod common;
use common::*;
use reports::browser::{attr, console_errors, run_chromium, unique_tmp};
use reports::mad::MadResults;

/// Two candidates, a byte-level LM task for `sweep`, and a `mad:` section shrinking MAD to a few seconds.
fn space(corpus: &str) -> String {
    format!(
        "name: mad-mini
tasks:
  - kind: bytes
    path: {corpus}
    seq_len: 16
    eval_sequences: 8
budgets: [1.0e7]
candidates:
  - name: transformer
    layout: [attention, swiglu]
    depth: 2
    d_model: 8
    mixers: {{attention: {{heads: 2}}}}
  - name: conv
    layout: [base_conv, swiglu]
    depth: 2
    d_model: 8
train: {{batch_size: 8, eval_points: 1}}
mad:
  epochs: 1
  train_fraction: 0.01
  test_examples: 32
  eval_points: 1
  learning_rates: [1.0e-3]
  weight_decays: [0.0]
"
    )
}

#[test]
fn mad_writes_scores_and_a_report_with_the_heatmap_beside_a_sweep() {
    let dir = scratch("mad-e2e");
    let text: String = (0..3000).map(|i| format!("line {i}: the quick brown fox {}.\n", i * 7 % 13)).collect();
    std::fs::write(dir.join("corpus.txt"), text).unwrap();
    let path = write(&dir, "space.yaml", &space(dir.join("corpus.txt").to_str().unwrap()));
    let path = path.to_str().unwrap();
    let out = run(&["sweep", path, "--out", "out"], &dir);
    assert!(out.status.success(), "sweep: {}", stderr(&out));
    let out = run(&["mad", path, "--out", "out", "--baseline-only", "--jobs", "2"], &dir);
    assert!(out.status.success(), "mad: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("12 trials (12 to run)") && err.contains("not as published: baseline settings only"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("report: out/report.html") && stdout.contains("transformer d8 x2"), "{stdout}");

    let mad: MadResults = serde_json::from_slice(&std::fs::read(dir.join("out/mad.json")).unwrap()).unwrap();
    assert_eq!(mad.candidates.len(), 2);
    for c in &mad.candidates {
        assert_eq!(c.tasks.len(), 6, "{}", c.label);
        assert!(c.tasks.iter().all(|t| t.settings.len() == 1 && t.score.is_some()), "{c:?}");
        let mean = c.tasks.iter().map(|t| t.score.unwrap()).sum::<f64>() / 6.0;
        assert!((c.score.unwrap() - mean).abs() < 1e-12);
        assert!(c.tasks.iter().all(|t| (0.0..=1.0).contains(&t.score.unwrap())));
    }
    // The compression trial ran with the decoder head and reported per-class accuracy.
    let cell = &mad.candidates[0].tasks[4].settings[0].cells[0];
    let spec = std::fs::read_to_string(dir.join("out/trials").join(&cell.trial_id).join("spec.json")).unwrap();
    assert!(spec.contains("\"kind\": \"compression\""), "{spec}");
    assert!(cell.accuracy.is_some() && cell.example_accuracy.is_some());

    let page = dir.join("out/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for needle in [
        "<table class=\"sortable mad-heatmap\">",
        "<figure class=\"plot mad-vs-loss\">",
        "Task: bytes",
        "12,800 examples become 128",
    ] {
        assert!(html.contains(needle), "report lacks {needle:?}");
    }
    let seen = run_chromium(&page, &unique_tmp("mad-e2e-chromium"));
    assert_eq!(attr(&seen.dom, "data-selftest"), Some("pass"), "{}", seen.stderr);
    let heat = attr(&seen.dom, "data-selftest-heat").unwrap_or("").to_string();
    // 2 x (6 tasks + MAD) in the heatmap, 6 x 2 x (1 setting + task score) in the per-task tables, all painted.
    assert_eq!(heat, "38/38", "heatmap cells painted/all");
    assert!(console_errors(&seen.stderr).is_empty(), "{:?}", console_errors(&seen.stderr));

    // Again: refused without --resume; with it, nothing to run. `workbench report` rebuilds the same page.
    let out = run(&["mad", path, "--out", "out", "--baseline-only"], &dir);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--resume"));
    let out = run(&["mad", path, "--out", "out", "--baseline-only", "--resume"], &dir);
    assert!(out.status.success() && stderr(&out).contains("(0 to run)"), "{}", stderr(&out));
    std::fs::remove_file(&page).unwrap();
    assert!(run(&["report", "out"], &dir).status.success());
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html);
}

#[test]
fn a_mad_run_alone_gets_its_report() {
    let dir = scratch("mad-alone");
    let text = "name: alone\ncandidates:\n  - {name: conv, layout: [base_conv, swiglu], depth: 2, d_model: 8}\n\
                mad: {tasks: [mad_compression], epochs: 1, train_fraction: 0.01, test_examples: 16, eval_points: 1, \
                learning_rates: [1.0e-3], weight_decays: [0.0, 0.1]}\n";
    let path = write(&dir, "space.yaml", text);
    let out = run(&["mad", path.to_str().unwrap(), "--out", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    assert!(html.contains("holds a MAD run and no sweep trials") && html.contains("mad-heatmap"));
    assert!(html.contains("No language-modelling trials") && html.contains("weight_decays: [0.0, 0.1]"));
    assert!(run(&["report", "out"], &dir).status.success());
}

/// `workbench mad` on `text` (with `args`) exits 2 with every fragment, and trains nothing.
fn refused(name: &str, text: &str, args: &[&str], expect: &[&str]) {
    let dir = scratch(name);
    let path = write(&dir, "space.yaml", text);
    let mut all = vec!["mad", path.to_str().unwrap(), "--out", "out"];
    all.extend_from_slice(args);
    let out = run(&all, &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{err}");
    for e in expect {
        assert!(err.contains(e), "message lacks `{e}`:\n{err}");
    }
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
    assert!(!dir.join("out").exists(), "created the output before refusing");
}

#[test]
fn bad_mad_input_exits_2_before_training() {
    let base = space("corpus.txt");
    refused(
        "mad-unknown-candidate",
        &base.replace("  epochs: 1\n", "  epochs: 1\n  candidates: [transfomer]\n"),
        &[],
        &["space.yaml:21:", "mad.candidates", "unknown candidate `transfomer`", "did you mean `transformer`"],
    );
    refused(
        "mad-unknown-mixer",
        &base.replace("layout: [base_conv", "layout: [base_cnv"),
        &[],
        &["space.yaml:", "unknown mixer `base_cnv`", "did you mean `base_conv`"],
    );
    refused("mad-fraction", &base, &["--train-fraction", "0"], &["mad.train_fraction", "(0, 1]"]);
    refused("mad-epochs", &base.replace("epochs: 1", "epochs: 0"), &[], &["space.yaml:20:", "mad.epochs"]);
    refused(
        "mad-task",
        &base.replace("  epochs: 1\n", "  tasks: [mad_recall]\n"),
        &[],
        &["unknown MAD task `mad_recall`"],
    );
    let odd = base.replace(
        "[base_conv, swiglu]\n    depth: 2\n    d_model: 8",
        "[base_conv, swiglu]\n    depth: 2\n    d_model: 5",
    );
    refused("mad-odd-width", &odd, &[], &["space.yaml:17:", "candidate `conv` on mad_compression", "even d_model"]);
}
